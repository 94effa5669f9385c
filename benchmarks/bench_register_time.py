"""Registration time for ~600x600-pixel maps on the default 160x224x224 CT (2 cores).

Run: .venv/bin/python benchmarks/bench_register_time.py
"""
import time

import numpy as np

from mineral3d.phantom import PhantomConfig, generate
from mineral3d.register import ct_indicator, register_section

g = generate(PhantomConfig(seed=2, pixel_ratio=0.224, max_tilt_deg=10.0))
t = time.perf_counter()
ind = ct_indicator(g.ct)
prep = time.perf_counter() - t
for sec in g.sections:
    t = time.perf_counter()
    r = register_section(g.ct, sec.map, scale=sec.pixel_size_um / g.config.voxel_size_um, indicator=ind)
    h, w = sec.map.shape
    c = ([0, 0, h - 1, h - 1], [0, w - 1, 0, w - 1])
    err = np.linalg.norm(r.transform.apply(*c) - sec.truth.apply(*c), axis=1).max()
    ang = np.rad2deg(np.arccos(min(1, abs(float(np.dot(r.transform.normal, sec.truth.normal))))))
    print(f"{sec.name} map {h}x{w}: {time.perf_counter() - t:.1f} s (+ {prep:.1f} s CT preparation once), "
          f"corner err {err:.2f} vox, normal {ang:.2f} deg, score {r.score:.3f}")

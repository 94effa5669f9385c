"""Which truth: per-particle grades of the voxel truth vs the physical (sub-voxel) truth.

Run: .venv/bin/python benchmarks/physical_grades.py OUT/<sample> --fraction fine --seed 42 --voxel-um 3 \\
         [--variant varied] [--shape 160 224 224]

``truth/phases.tif`` labels each voxel with the phase that holds most of it, so a LiAlO2
crystal thinner than half a voxel is gehlenite there: the voxel truth's grades are lower
than the material's. The generator knows the material: this replays its rasterisation of
every particle (same seed, same functions; no CT, no sections) and counts the supersamples
of each phase inside each particle, the particle's physical grade. For the particles inside
the volume of a finished ``bench_liberation.py`` sample (``OUT/<sample>/sample``, ``/run``),
it writes ``OUT/<sample>/physical.json``: voxel-truth minus physical grade, the run's
calibrated and argmax grades against both truths (material-weighted bias, sd; particles
matched as in ``bench_liberation.grade_errors``), and 3D L(0.8/0.9/0.95) of each over the
matched particles.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
import zarr
from bench_liberation import match_particles

from mineral3d.measure import liberation as lib
from mineral3d.phantom.generate import MATERIAL, PhantomConfig, _particle_box, rasterize_particle, varied
from mineral3d.phantom.microstructure import LIALO2, primitives_in_box
from mineral3d.phantom.particles import place_particles

THRESHOLDS = (0.8, 0.9, 0.95)


def physical_grades(config: PhantomConfig) -> np.ndarray:
    """(n_particles + 1,) LiAlO2 share of each particle's material supersamples (index = truth label)."""
    if config.variant == "varied":
        config = varied(config)
    rng_place = np.random.default_rng(np.random.SeedSequence(config.seed).spawn(3)[0])
    shape = tuple(int(v) for v in config.shape)
    v, s = config.voxel_size_um, config.supersample
    parts = place_particles(rng_place, shape, v, config.sieve_um, packing=config.packing,
                            touching=config.touching, nonconvex=config.nonconvex)
    grade = np.zeros(len(parts) + 1)
    for i, part in enumerate(parts):
        lo, hi = _particle_box(part, v, shape)
        prims = primitives_in_box(config.slag, config.seed, lo * v - v + part.bulk_offset,
                                  hi * v + part.bulk_offset)
        mask, phase = rasterize_particle(part, prims, v, lo, hi, s)
        material = np.count_nonzero(mask & np.isin(phase, MATERIAL))
        grade[i + 1] = np.count_nonzero(mask & (phase == LIALO2)) / max(material, 1)
    return grade


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("root", type=Path, help="OUT/<sample> of bench_liberation.py (with sample/ and run/)")
    ap.add_argument("--fraction", default="fine")
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--voxel-um", type=float, default=None)
    ap.add_argument("--shape", type=int, nargs=3, default=None)
    ap.add_argument("--variant", default="default")
    args = ap.parse_args()
    kw = {"shape": tuple(args.shape)} if args.shape else {}
    config = PhantomConfig(fraction=args.fraction, seed=args.seed, voxel_um=args.voxel_um, variant=args.variant, **kw)
    phys = physical_grades(config)
    tl = tifffile.imread(args.root / "sample" / "truth" / "particles.tif")
    tp = tifffile.imread(args.root / "sample" / "truth" / "phases.tif")
    n = np.bincount(tl.ravel(), weights=((tp > 0) & (tp < 255)).ravel(), minlength=phys.size)
    t = np.bincount(tl.ravel(), weights=(tp == LIALO2).ravel(), minlength=phys.size)
    voxel = t / np.maximum(n, 1)
    pl = zarr.open_array(store=str(args.root / "run" / "segmentation.zarr" / "particles"), mode="r")[...]
    pt = pd.read_csv(args.root / "run" / "particles.csv")
    pairs = match_particles(pl, tl)
    m = pt[~pt["touches_border"]].merge(pairs, left_on="particle", right_on="p")
    w = m["material_um3"].to_numpy(float)
    g = {"voxel truth": voxel[m["t"]], "physical truth": phys[m["t"]], "calibrated": m["grade"].to_numpy(float),
         "argmax": m["vol_LiAlO2"].to_numpy(float)}

    def lib_of(x):
        return {f"{t:g}": float((w * x * (x >= t - lib.GRADE_EPS)).sum() / (w * x).sum()) for t in THRESHOLDS}

    def err(a, b):
        e = g[a] - g[b]
        mu = np.average(e, weights=w)
        return {"bias": float(mu), "sd": float(np.sqrt(np.average((e - mu) ** 2, weights=w)))}

    res = {"matched": int(len(m)), "L": {k: lib_of(x) for k, x in g.items()},
           "grade_error": {f"{a} - {b}": err(a, b) for a, b in (("voxel truth", "physical truth"),
                                                                 ("calibrated", "voxel truth"),
                                                                 ("argmax", "voxel truth"),
                                                                 ("calibrated", "physical truth"),
                                                                 ("argmax", "physical truth"))}}
    tmp = args.root / "physical.json.tmp"
    tmp.write_text(json.dumps(res, indent=2))
    tmp.replace(args.root / "physical.json")
    print(f"**{args.root.name}** ({res['matched']} particles matched)\n")
    print("| grades | L(0.8) | L(0.9) | L(0.95) |\n|---|---|---|---|")
    for k, v in res["L"].items():
        print(f"| {k} | {v['0.8']:.3f} | {v['0.9']:.3f} | {v['0.95']:.3f} |")
    print("\n" + "; ".join(f"{k}: bias {v['bias']:+.3f}, sd {v['sd']:.3f}" for k, v in res["grade_error"].items()))


if __name__ == "__main__":
    main()

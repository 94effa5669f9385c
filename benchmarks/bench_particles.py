"""Particle separation: mineral3d vs scikit-image watershed on the distance transform.

Run: .venv/bin/python benchmarks/bench_particles.py [--seeds 21 22] [--fractions fine coarse]

For generated samples of seeds not used while developing, both methods separate the same
foreground: the CT above its Otsu threshold (``intensity.GreyLevels``), where the blur
fills the 1-2 voxel gaps between touching particles (the truth foreground would be
trivial: its gaps are exact, so connected components alone separate every particle).
Connected components alone are listed as the floor.

- mineral3d: ``instances.particle_labels`` with ``InstanceConfig.for_sample`` (markers and
  fragment size from the voxel size and the sieve fraction; neck merging);
- reference: the textbook pipeline, ``edt`` distance, ``skimage.feature.peak_local_max``
  with ``min_distance`` = the same marker radius, labelled per connected component,
  ``skimage.segmentation.watershed``;
- PoreSpy's own ``porespy.filters.snow_partitioning`` (Gaussian-smoothed distance, maximum
  filter peaks of radius ``r_max`` = the same marker radius, saddle-point trimming,
  watershed) when PoreSpy is installed (``pip install porespy``: the benchmark
  environment, not a dependency).

``--packed`` generates samples denser in particles, more of them touching and more
non-convex (packing 0.45, touching 0.6, non-convex 0.5 instead of 0.3, 0.25, 0.3), where
connected components alone fail.

Scores against truth/particles.tif (``validate.instance_scores``): F1 of matches at
IoU > 0.5, mean IoU of matches, split and merged particles per true particle; particles
smaller than the fragment size are left out on both sides. Times are wall-clock, same run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cc3d
import edt
import numpy as np
from skimage.feature import peak_local_max
from skimage.segmentation import watershed

from mineral3d.intensity import GreyLevels
from mineral3d.io import open_sample
from mineral3d.phantom import PhantomConfig, generate_sample
from mineral3d.separation import InstanceConfig, particle_labels
from mineral3d.validate import instance_scores


def reference(fg: np.ndarray, radius: int) -> np.ndarray:
    dist = edt.edt(fg, black_border=False)
    comp = cc3d.connected_components(fg, connectivity=6)
    peaks = peak_local_max(dist, min_distance=radius, labels=comp, exclude_border=False)
    markers = np.zeros(fg.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return watershed(-dist, markers, mask=fg)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[21, 22])
    ap.add_argument("--fractions", nargs="+", default=["fine", "coarse"])
    ap.add_argument("--out", type=Path, default=Path("bench-out/particles"))
    ap.add_argument("--packed", action="store_true", help="denser, more touching, more non-convex particles")
    args = ap.parse_args()
    try:
        import porespy
    except ImportError:
        porespy = None
    extra = dict(packing=0.45, touching=0.6, nonconvex=0.5) if args.packed else {}
    rows = []
    for fraction in args.fractions:
        for seed in args.seeds:
            d = args.out / f"{fraction}{seed}{'-packed' if args.packed else ''}"
            if not (d / "sample.toml").exists():
                generate_sample(d, PhantomConfig(fraction=fraction, seed=seed, **extra), overwrite=True)
            s = open_sample(d)
            ct = s.ct()
            fg = ct > GreyLevels.from_volume(ct).threshold
            truth = s.truth_particles()
            cfg = InstanceConfig.for_sample(voxel_size_um=s.voxel_size_um, sieve_um=s.config.sieve_um)
            radius = max(1, int(round(cfg.marker_radius)))
            methods = [("connected components only", lambda: cc3d.connected_components(fg, connectivity=6)),
                       ("mineral3d", lambda: particle_labels(fg, cfg)),
                       ("skimage watershed", lambda: reference(fg, radius))]
            if porespy is not None:
                methods.append(("PoreSpy snow_partitioning",
                                lambda: porespy.filters.snow_partitioning(fg, r_max=radius).regions))
            for name, fn in methods:
                t = time.perf_counter()
                lab = fn()
                dt = time.perf_counter() - t
                sc = instance_scores(lab, truth, min_voxels=cfg.min_voxels)
                rows.append({"sample": f"{fraction} {seed}{' packed' if args.packed else ''}", "method": name,
                             "seconds": dt, **sc})
                print(json.dumps(rows[-1]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"bench_particles{'-packed' if args.packed else ''}.json").write_text(json.dumps(rows, indent=2))
    print("\n| sample | method | true particles | F1 (IoU>0.5) | mean IoU matched | split | merged | time s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['sample']} | {r['method']} | {r['true']} | {r['f1']:.3f} | {r['mean_iou_matched']:.3f} | "
              f"{100 * r['split_fraction']:.1f}% | {100 * r['merge_fraction']:.1f}% | {r['seconds']:.2f} |")


if __name__ == "__main__":
    main()

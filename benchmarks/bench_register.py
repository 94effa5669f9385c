"""Registration accuracy and time per section on generated samples.

Run: .venv/bin/python benchmarks/bench_register.py [--seeds 0 1] [--fractions fine coarse]

For every section of every sample (default shape 160 x 224 x 224, sections tilted up to
10 degrees) and for three variants of its map (as generated; 20% of pixels set
unclassified at random; only the central quarter of the map), reports the largest
distance between estimated and true CT positions of the map's four corners (voxels), the
angle between the normals (degrees), the score and the time. Also registers maps of
another sample and noise, which must be rejected.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from mineral3d.phantom import PhantomConfig, generate
from mineral3d.plane import similarity_2d
from mineral3d.register import RegistrationError, ct_indicator, register_section


def corner_error(est, truth, shape):
    h, w = shape
    r, c = [0, 0, h - 1, h - 1], [0, w - 1, 0, w - 1]
    return float(np.linalg.norm(est.apply(r, c) - truth.apply(r, c), axis=1).max())


def normal_error(est, truth):
    return float(np.rad2deg(np.arccos(min(1.0, abs(float(np.dot(est.normal, truth.normal)))))))


def variants(ids, truth, rng, ct_shape):
    yield "as generated", ids, truth
    un = ids.copy()
    un[rng.random(ids.shape) < 0.2] = 255
    yield "20% unclassified", un, truth
    # a square covering a quarter of the CT cross-section (the full maps cover 36%)
    side = int(np.sqrt(0.25 * ct_shape[1] * ct_shape[2]) / truth.scale)
    h, w = ids.shape
    r0, c0 = (h - side) // 2, (w - side) // 2
    yield "quarter of CT", ids[r0:r0 + side, c0:c0 + side], truth.compose(similarity_2d(shift_rc=(r0, c0)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--fractions", nargs="+", default=["fine", "coarse"])
    ap.add_argument("--shape", nargs=3, type=int, default=[160, 224, 224])
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    samples = {}
    for fraction in args.fractions:
        for seed in args.seeds:
            g = generate(PhantomConfig(fraction=fraction, seed=seed, shape=tuple(args.shape), max_tilt_deg=10.0))
            samples[(fraction, seed)] = g
            ind = ct_indicator(g.ct)
            for sec in g.sections:
                for name, ids, truth in variants(sec.map, sec.truth, rng, g.ct.shape):
                    t = time.perf_counter()
                    try:
                        r = register_section(g.ct, ids, scale=sec.pixel_size_um / g.config.voxel_size_um,
                                             indicator=ind)
                        ce, ne, score, ok = corner_error(r.transform, truth, ids.shape), \
                            normal_error(r.transform, truth), r.score, "accepted"
                    except RegistrationError as exc:
                        ce, ne, score, ok = np.nan, np.nan, np.nan, f"rejected ({exc})"
                    rows.append((fraction, seed, sec.name, f"{truth.tilt_deg:.1f}", name, ids.shape, ce, ne, score,
                                 time.perf_counter() - t, ok))
                    print(*rows[-1], flush=True)
    print("\n| fraction | seed | section | true tilt ° | map | map px | corner err (vox) | normal err (°) | "
          "score | s | result |\n|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} | {r[5][0]}x{r[5][1]} | {r[6]:.2f} | {r[7]:.2f} | "
              f"{r[8]:.3f} | {r[9]:.1f} | {r[10].split(' (')[0]} |")
    ok = [r for r in rows if r[10] == "accepted"]
    good = [r for r in ok if r[6] <= 1.0 and r[7] <= 0.5]
    bad = [r for r in ok if not (r[6] <= 1.0 and r[7] <= 0.5)]
    print(f"\n{len(good)}/{len(rows)} within 1 voxel and 0.5 deg; {len(rows) - len(ok)} rejected; "
          f"{len(bad)} accepted but wrong; median time {np.median([r[9] for r in rows]):.1f} s")
    # rejections: a map of another sample, and noise
    keys = list(samples)
    if len(keys) >= 2:
        a, b = samples[keys[0]], samples[keys[1]]
        ind = ct_indicator(a.ct)
        for sec in b.sections:
            try:
                r = register_section(a.ct, sec.map, scale=0.5, indicator=ind)
                print(f"other-sample {sec.name}: ACCEPTED (score {r.score:.3f}) <- wrong")
            except RegistrationError as exc:
                print(f"other-sample {sec.name}: rejected ({exc})")
        noise = rng.choice([0, 1, 2], a.sections[0].map.shape, p=[0.7, 0.1, 0.2]).astype(np.uint8)
        try:
            register_section(a.ct, noise, scale=0.5, indicator=ind)
            print("noise: ACCEPTED <- wrong")
        except RegistrationError as exc:
            print(f"noise: rejected ({exc})")


if __name__ == "__main__":
    main()

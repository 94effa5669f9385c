"""Grade calibration variants on finished runs: does a per-grade-range line beat the one line?

Run: .venv/bin/python benchmarks/calibration_variants.py OUT/<sample> [OUT/<sample> ...]

For each finished ``bench_liberation.py`` sample (``OUT/<sample>/run`` with
``grades/section_pairs.csv`` and ``particles.csv``, ``OUT/<sample>/bench.json`` with the
truth's 3D L(t)), the run's particles inside the volume get their grades from:

- ``argmax``: the segmented fraction;
- ``line``: the run's calibration (:func:`mineral3d.measure.grades.fit_grade_calibration`,
  refitted here on the train pairs: the same numbers);
- ``two segments``: the classical calibration with the predicted grade a piecewise-linear
  function of the true grade, knots at 0, 0.5 and 1 (weighted least squares, weights =
  section material area), inverted piecewise; applied by the same rule as the line (a
  knot's 95% bootstrap interval excludes the identity there), identity otherwise;

and the 3D L(0.8/0.9/0.95) of each is printed against the truth. Nothing is retrained.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from mineral3d.measure import liberation as lib
from mineral3d.measure.grades import fit_grade_calibration

KNOTS = np.array([0.0, 0.5, 1.0])


def hats(t: np.ndarray) -> np.ndarray:
    """(n, 3) piecewise-linear basis at KNOTS."""
    t = np.clip(np.asarray(t, float), 0, 1)
    return np.stack([np.clip(1 - 2 * t, 0, 1), 1 - np.abs(2 * t - 1), np.clip(2 * t - 1, 0, 1)], axis=1)


def fit_segments(tg, pg, w):
    sw = np.sqrt(w)
    a, *_ = np.linalg.lstsq(hats(tg) * sw[:, None], pg * sw, rcond=None)
    return a


def two_segments(train: pd.DataFrame, *, n_boot=500, seed=0):
    tg, pg = train["grade"].to_numpy(float), train["pred_grade"].to_numpy(float)
    w = train["material_um2"].to_numpy(float)
    a = fit_segments(tg, pg, w)
    rng = np.random.default_rng(seed)
    boots = np.array([fit_segments(tg[i], pg[i], w[i]) for i in (rng.integers(0, len(tg), len(tg))
                                                                  for _ in range(n_boot))])
    lo, hi = np.percentile(boots, [2.5, 97.5], axis=0)
    applied = bool(np.any((lo > KNOTS) | (hi < KNOTS))) and np.all(np.diff(a) > 0)
    return a, applied, (lo, hi)


def apply_segments(a, applied, g):
    if not applied:
        return g
    x = np.interp(g, a, KNOTS)  # the inverse, extended linearly beyond the end knots
    x = np.where(g < a[0], (g - a[0]) / (a[1] - a[0]) * 0.5, x)
    x = np.where(g > a[2], 1 + (g - a[2]) / (a[2] - a[1]) * 0.5, x)
    return np.clip(x, 0, 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("roots", type=Path, nargs="+")
    args = ap.parse_args()
    ts = ("0.8", "0.9", "0.95")
    print("| sample | grades | L(0.8) | L(0.9) | L(0.95) | max error |")
    print("|---|---|---|---|---|---|")
    for root in args.roots:
        bench = json.loads((root / "bench.json").read_text())
        truth = bench["truth"]["3d"]
        pairs = pd.read_csv(root / "run" / "grades" / "section_pairs.csv")
        train = pairs[pairs["role"] == "train"]
        table = pd.read_csv(root / "run" / "particles.csv")
        inside = table[~table["touches_border"]]
        amount = inside["material_um3"].to_numpy(float)
        g = inside["vol_LiAlO2"].to_numpy(float)
        line = fit_grade_calibration({n: f for n, f in train.groupby("section_name")})
        a, applied, (lo, hi) = two_segments(train)
        variants = {"argmax": g, f"line ({'applied' if line.applied else 'not applied'})": line.apply(g),
                    f"two segments ({'applied' if applied else 'not applied'}: "
                    f"{', '.join(f'{k:g}->{v:.3f} [{x:.3f}, {y:.3f}]' for k, v, x, y in zip(KNOTS, a, lo, hi))})":
                    apply_segments(a, applied, g)}
        print(f"| {root.name} | truth | " + " | ".join(f"{truth[t]:.3f}" for t in ts) + " | |")
        for name, grade in variants.items():
            pop = lib.Population(amount, amount * grade, np.zeros(len(amount)), np.ones(len(amount)),
                                 np.arange(len(amount)))
            lv = lib.cumulative_liberation(pop)
            err = max(abs(v - truth[t]) for v, t in zip(lv, ts))
            print(f"| {root.name} | {name} | " + " | ".join(f"{v:.3f}" for v in lv) + f" | {err:.3f} |")


if __name__ == "__main__":
    main()

"""Grade calibration variants on finished runs: does another form beat the one line?

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
- ``ends pinned``: a bias that vanishes at both pure ends,
  ``pred = true + true (1 - true) (c0 + c1 true)`` (weighted least squares on
  ``pred - true``; a phase loses share where it is the minority, in proportion to its
  interface with the other), inverted numerically where monotone; applied when the 95%
  bootstrap interval of the bias slope at either end (``c0``, ``c0 + c1``) excludes 0;
- ``line, segmented 0 and 1 kept``: the line, but a grade segmented exactly 0 or 1 (a
  censored reading where the line's ends lie outside [0, 1]) left as it is;

and the 3D L(0.8/0.9/0.95) and the virtual-section 2D L(0.8) and L(0.95) (the run's segmentation cut
at the run's plane spacing, ``mineral3d.measure.sections2d.virtual_sections``) of each are
printed against the truth (``bench.json``). Nothing is retrained.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import zarr

from mineral3d.io import open_sample
from mineral3d.measure import liberation as lib
from mineral3d.measure.grades import fit_grade_calibration
from mineral3d.measure.sections2d import virtual_sections

KNOTS = np.array([0.0, 0.5, 1.0])


def hats(t: np.ndarray) -> np.ndarray:
    """(n, 3) piecewise-linear basis at KNOTS."""
    t = np.clip(np.asarray(t, float), 0, 1)
    return np.stack([np.clip(1 - 2 * t, 0, 1), 1 - np.abs(2 * t - 1), np.clip(2 * t - 1, 0, 1)], axis=1)


def wls(basis: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted least-squares coefficients of ``y`` on the columns of ``basis``."""
    sw = np.sqrt(w)
    c, *_ = np.linalg.lstsq(basis * sw[:, None], y * sw, rcond=None)
    return c


def fit_segments(tg, pg, w):
    return wls(hats(tg), pg, w)


def fit_and_bootstrap(train: pd.DataFrame, fit, *, n_boot=500, seed=0):
    """``fit(true, pred, weight)`` on the train pairs and on ``n_boot`` resamples of them."""
    tg, pg = train["grade"].to_numpy(float), train["pred_grade"].to_numpy(float)
    w = train["material_um2"].to_numpy(float)
    rng = np.random.default_rng(seed)
    boots = np.array([fit(tg[i], pg[i], w[i]) for i in (rng.integers(0, len(tg), len(tg)) for _ in range(n_boot))])
    return fit(tg, pg, w), boots


def two_segments(train: pd.DataFrame, *, n_boot=500, seed=0):
    a, boots = fit_and_bootstrap(train, fit_segments, n_boot=n_boot, seed=seed)
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


GRID = np.linspace(0.0, 1.0, 2001)


def pinned_basis(t: np.ndarray) -> np.ndarray:
    """(n, 2) basis of a bias vanishing at grades 0 and 1: t(1-t), t²(1-t)."""
    t = np.asarray(t, float)
    return np.stack([t * (1 - t), t * t * (1 - t)], axis=1)


def fit_pinned(tg, pg, w):
    return wls(pinned_basis(tg), pg - tg, w)


def ends_pinned(train: pd.DataFrame, *, n_boot=500, seed=0):
    c, boots = fit_and_bootstrap(train, fit_pinned, n_boot=n_boot, seed=seed)
    ends = np.stack([boots[:, 0], boots[:, 0] + boots[:, 1]], axis=1)
    lo, hi = np.percentile(ends, [2.5, 97.5], axis=0)
    forward = GRID + pinned_basis(GRID) @ c
    monotone = bool(np.all(np.diff(forward) > 0))
    applied = bool(np.any((lo > 0) | (hi < 0))) and monotone
    return c, applied, monotone, forward


def fit_gated(train: pd.DataFrame, line) -> tuple[float, float, str]:
    """The line refitted with the end whose bias is not significant pinned to the identity."""
    tg, pg = train["grade"].to_numpy(float), train["pred_grade"].to_numpy(float)
    w = train["material_um2"].to_numpy(float)
    (b_lo, b_hi), (p_lo, p_hi) = line.cv["barren_ci95"], line.cv["pure_ci95"]
    barren, pure = b_lo > 0 or b_hi < 0, p_lo > 1 or p_hi < 1
    if barren and pure:
        return line.intercept, line.slope, "both ends"
    if not (barren or pure):
        return 0.0, 1.0, "neither end: identity"
    if barren:  # pure end pinned: pred - 1 = slope (true - 1)
        slope = float(wls((tg - 1)[:, None], pg - 1, w)[0])
        return 1 - slope, slope, "barren end only, pure end pinned at 1"
    slope = float(wls(tg[:, None], pg, w)[0])  # barren end pinned: pred = slope true
    return 0.0, slope, "pure end only, barren end pinned at 0"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("roots", type=Path, nargs="+")
    args = ap.parse_args()
    ts = ("0.8", "0.9", "0.95")
    print("| sample | grades | L(0.8) | L(0.9) | L(0.95) | max 3D error | 2D L(0.8) | 2D error | 2D L(0.95) | error |")
    print("|---|---|---|---|---|---|---|---|---|---|")
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
        c, pinned_applied, monotone, forward = ends_pinned(train)
        s = open_sample(root / "sample")
        step = json.loads((root / "run" / "summary.json").read_text())["sections_2d_virtual"]["planes_every_voxels"]
        seg = root / "run" / "segmentation.zarr"
        sections = virtual_sections(zarr.open_array(store=str(seg / "particles"), mode="r")[...],
                                    zarr.open_array(store=str(seg / "phases"), mode="r")[...], step=step,
                                    voxel_size_um=s.voxel_size_um, target_id=s.phase_table.target_id)
        variants = {"argmax": lambda x: x, f"line ({'applied' if line.applied else 'not applied'})": line.apply,
                    f"two segments ({'applied' if applied else 'not applied'}: "
                    f"{', '.join(f'{k:g}->{v:.3f} [{x:.3f}, {y:.3f}]' for k, v, x, y in zip(KNOTS, a, lo, hi))})":
                    lambda x: apply_segments(a, applied, x),
                    f"ends pinned ({'applied' if pinned_applied else 'not applied'}"
                    f"{'' if monotone else ', not monotone'}: end slopes {c[0]:+.3f}, {c[0] + c[1]:+.3f})":
                    lambda x: np.interp(x, forward, GRID) if pinned_applied else x}
        if line.applied:
            variants["line, segmented 0 and 1 kept (a censored reading)"] = (
                lambda x: np.where((x <= 0) | (x >= 1), x, line.apply(x)))
            gi, gs, why = fit_gated(train, line)
            variants[f"line, one end pinned ({why}: {gi:+.3f} + {gs:.3f} x true)"] = (
                lambda x, gi=gi, gs=gs: np.clip((x - gi) / gs, 0, 1))
        truth2, truth95 = bench["truth"]["2d"]["0.8"], bench["truth"]["2d"]["0.95"]
        print(f"| {root.name} | truth | " + " | ".join(f"{truth[t]:.3f}" for t in ts)
              + f" | | {truth2:.3f} | | {truth95:.3f} | |")
        for name, fn in variants.items():
            grade = fn(g)
            pop = lib.Population(amount, amount * grade, np.zeros(len(amount)), np.ones(len(amount)),
                                 np.arange(len(amount)))
            lv = lib.cumulative_liberation(pop)
            err = max(abs(v - truth[t]) for v, t in zip(lv, ts))
            p2 = lib.Population(sections.amount, sections.amount * fn(sections.grade), sections.exposure,
                                sections.size_um, sections.group)
            l2, l95 = lib.cumulative_liberation(p2)[[0, 2]]
            print(f"| {root.name} | {name} | " + " | ".join(f"{v:.3f}" for v in lv)
                  + f" | {err:.3f} | {l2:.3f} | {abs(l2 - truth2):.3f} | {l95:.3f} | {abs(l95 - truth95):.3f} |")


if __name__ == "__main__":
    main()

"""Plug-in L(t) against the mean and median of the interval's draws, on finished runs.

Run: .venv/bin/python benchmarks/liberation_estimators.py OUT/<sample> [OUT/<sample> ...]

For each finished ``bench_liberation.py`` sample (``OUT/<sample>/run`` with
``particles.parquet``, ``grades/calibration.json`` and ``summary.json``;
``OUT/<sample>/bench.json`` with the truth's 3D L(t)), the particles inside the volume are
drawn as the run's ``liberation_3d_ci95`` draws them
(:func:`mineral3d.measure.liberation.liberation_draws`: a calibration line per draw from
``line_cov``, then each particle's ``grade_sd``; 1000 draws, seed 0: the run's own draws),
and three estimates of the 3D L(0.8/0.9/0.95) are printed with their largest error against
the truth: L of the calibrated grades (what the run reports), the mean of L over the draws
and its median. Nothing is retrained.
"""

from __future__ import annotations

import argparse
import json
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from mineral3d.measure import liberation as lib
from mineral3d.measure.grades import GradeCalibration
from mineral3d.pipeline.measure import population_3d

THRESHOLDS = np.array([0.8, 0.9, 0.95])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("roots", type=Path, nargs="+")
    ap.add_argument("--draws", type=int, default=1000)
    args = ap.parse_args()
    print("| sample | truth L(0.8/0.9/0.95) | plug-in (max error) | mean of draws | median of draws |")
    print("|---|---|---|---|---|")
    for root in args.roots:
        run = root / "run"
        table = pd.read_parquet(run / "particles.parquet")
        cal = GradeCalibration.from_dict(json.loads((run / "grades" / "calibration.json").read_text())["calibration"])
        target = json.loads((run / "summary.json").read_text())["target_phase"]
        truth = json.loads((root / "bench.json").read_text())["truth"]["3d"]
        truth = np.array([truth[f"{t:g}"] for t in THRESHOLDS])
        pop = population_3d(table, target)
        segmented = population_3d(table, target, calibrated=False)
        sd = table.loc[~table["touches_border"], "grade_sd"].to_numpy(float)
        d = lib.liberation_draws(pop, sd, thresholds=THRESHOLDS, n_draws=args.draws, seed=0,
                                 centres=partial(cal.draw_grades, segmented.grade))

        def cell(v):
            return f"{' / '.join(f'{x:.3f}' for x in v)} ({np.abs(v - truth).max():.3f})"

        plug = lib.cumulative_liberation(pop, THRESHOLDS)
        print(f"| {root.name} | {' / '.join(f'{x:.3f}' for x in truth)} | {cell(plug)} "
              f"| {cell(d.mean(0))} | {cell(np.median(d, 0))} |")


if __name__ == "__main__":
    main()

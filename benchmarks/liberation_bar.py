"""What the liberation bar asks of per-particle grades: how often would a run meet it by chance?

Run: .venv/bin/python benchmarks/liberation_bar.py SAMPLE RUN [SAMPLE RUN ...] [--scales 0.25 0.5 0.75 1]

For each finished run on a generated sample: its particles inside the volume matched to the
truth (``bench_liberation.matched_particles``), the per-particle grade errors against the
truth with their material-weighted mean (the bias) removed, and then, for each scale ``k``,
1000 draws of the truth grades plus ``k`` x those errors shuffled between particles (as
``bench_liberation.grade_errors`` does for ``k`` = 1). Reported: the share of draws in which
3D L(0.8), L(0.9) and L(0.95) all lie within 0.03 of the truth's: how often a segmentation
with no bias and that scatter (k = 1: this run's; 0.5: half of it) meets the bar on this
sample. A sample whose target sits in a few large particles near a threshold is met by
chance or not at all, however good the segmentation; that is a property of the sample's
particles, which the draws make visible.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_liberation import BAR, liberation_of_grades, matched_particles  # noqa: E402


def within_bar(truth: np.ndarray, error: np.ndarray, weight: np.ndarray, *, scales, n_draws: int = 1000,
               seed: int = 0) -> list[float]:
    """Share of draws (truth + k x shuffled ``error``) whose L(0.8 / 0.9 / 0.95) all lie within ``BAR``."""
    l_truth = liberation_of_grades(truth, weight)
    rng = np.random.default_rng(seed)
    out = []
    for k in scales:
        worst = np.array([np.abs(liberation_of_grades(np.clip(truth + k * rng.permutation(error), 0, 1), weight)
                                 - l_truth).max() for _ in range(n_draws)])
        out.append(float(np.mean(worst <= BAR + 1e-12)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pairs", nargs="+", type=Path, metavar="SAMPLE RUN")
    ap.add_argument("--scales", nargs="+", type=float, default=[0.25, 0.5, 0.75, 1.0])
    args = ap.parse_args()
    if len(args.pairs) % 2:
        ap.error("give SAMPLE RUN pairs")
    print("| run | particles | grade error sd | " + " | ".join(f"x{k:g}" for k in args.scales) + " |")
    print("|---|---|---|" + "---|" * len(args.scales))
    for sample_dir, run_dir in zip(args.pairs[::2], args.pairs[1::2]):
        m = matched_particles(sample_dir, run_dir)
        w, truth = m["material_um3"].to_numpy(float), m["truth"].to_numpy(float)
        e = m["grade"].to_numpy(float) - truth
        e = e - np.average(e, weights=w)
        sd = float(np.sqrt(np.average(e ** 2, weights=w)))
        shares = within_bar(truth, e, w, scales=args.scales)
        print(f"| {run_dir} | {len(m)} | {sd:.3f} | " + " | ".join(f"{p:.2f}" for p in shares) + " |", flush=True)


if __name__ == "__main__":
    main()

"""Time and peak memory of `mineral3d phantom` (the default fine sample), stage by stage.

Run: .venv/bin/python benchmarks/bench_phantom.py [--shape Z Y X] [--repeat N]
Prints a markdown table for docs/benchmarks.md. The whole command runs in a child
process so that its peak resident memory (ru_maxrss) is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

CHILD = r"""
import json, sys, time
from mineral3d.phantom import PhantomConfig, generate_sample
shape = tuple(int(v) for v in sys.argv[2:5])
stages, t0, last = {}, time.perf_counter(), [time.perf_counter()]
def progress(stage, done, total):
    if done == total:
        now = time.perf_counter(); stages[stage] = stages.get(stage, 0) + now - last[0]; last[0] = now
g = generate_sample(sys.argv[1], PhantomConfig(fraction="fine", seed=0, shape=shape), progress=progress)
stages["writing files"] = time.perf_counter() - last[0]
print(json.dumps({"total_s": time.perf_counter() - t0, "stages": stages, "particles": len(g.particles)}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", nargs=3, type=int, default=[160, 224, 224])
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    rows = []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            r = subprocess.run([sys.executable, "-c", CHILD, os.path.join(tmp, "s"), *map(str, args.shape)],
                               capture_output=True, text=True, check=True)
            wall = time.perf_counter() - t
            size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(tmp) for f in fs)
        res = json.loads(r.stdout.strip().splitlines()[-1])
        res["wall_s"] = wall
        res["size_mb"] = size / 1e6
        rows.append(res)
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    best = min(rows, key=lambda r: r["wall_s"])
    print(f"shape {tuple(args.shape)}, {os.cpu_count()} cores, {best['particles']} particles")
    print("| stage | seconds |\n|---|---|")
    for k, v in best["stages"].items():
        print(f"| {k} | {v:.1f} |")
    print(f"| **whole command (process start to exit)** | **{best['wall_s']:.1f}** |")
    print(f"\npeak resident memory: {peak_mb:.0f} MB; files written: {best['size_mb']:.0f} MB")


if __name__ == "__main__":
    main()

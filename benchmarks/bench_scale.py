"""Scale: `mineral3d apply` on a CT larger than memory should allow, peak memory and throughput.

Run: .venv/bin/python benchmarks/bench_scale.py WORK [--model MODEL] [--size 1024] [--mid 256 512 512]

1. A fine sample is generated (seed 61, 160 x 224 x 224, 2 µm voxels) unless WORK/sample
   exists; a phase model is trained on its truth (planes every 16 slices, 200 iterations:
   throughput and memory do not depend on how good it is, the particles it finds make the
   later steps do representative work) unless ``--model`` is given.
2. The CT is tiled by mirroring to ``size``³ voxels (uint16, written page by page as one
   uncompressed TIFF: 2 GiB at 1024³) and a ``mid`` volume for the throughput runs.
3. ``/usr/bin/time -v mineral3d apply MODEL big.tif --voxel-um 2 --out ...`` (the default
   single-machine scheduler): peak resident memory and the time of every step (TIFF ->
   Zarr conversion included).
4. On the mid volume: ``apply`` with the default scheduler (one process, torch threads on
   every core), ``--workers 1`` and ``--workers 2`` (LocalCluster of single-threaded
   worker processes): megavoxels per second per step and end to end.

Writes WORK/bench_scale.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def make_model(sample: Path, out: Path, iterations: int) -> None:
    from mineral3d.io import open_sample
    from mineral3d.labels import SparseLabels
    from mineral3d.nn import NetworkConfig, TrainConfig, save_model
    from mineral3d.pipeline.segment_phases import material_classes, train_phase_model

    s = open_sample(sample)
    truth = s.truth_phases()
    z = np.arange(8, truth.shape[0] - 8, 16)
    idx = np.ravel_multi_index(np.meshgrid(z, np.arange(truth.shape[1]), np.arange(truth.shape[2]),
                                           indexing="ij"), truth.shape).reshape(-1)
    idx.sort()
    lab = truth.reshape(-1)[idx]
    keep = lab != 255
    labels = SparseLabels(truth.shape, idx[keep], lab[keep], np.ones(keep.sum(), np.float32),
                          np.ones(keep.sum(), np.int32))
    classes = material_classes(s.phase_table)
    model = train_phase_model(s.ct(), labels, voxel_size_um=s.voxel_size_um, phase_table=s.phase_table,
                              network=NetworkConfig(out_channels=len(classes)),
                              config=TrainConfig(iterations=iterations, seed=0))
    save_model(out, model, overwrite=True)


def mirror_index(n_out: int, n_in: int) -> np.ndarray:
    """0, 1, .., n-1, n-1, .., 0, 0, 1, ... (mirrored tiling: no seams in the grey values)."""
    i = np.arange(n_out) % (2 * n_in)
    return np.where(i < n_in, i, 2 * n_in - 1 - i)


def tile_tiff(ct: np.ndarray, shape, path: Path) -> None:
    import tifffile

    zi, yi, xi = (mirror_index(n, s) for n, s in zip(shape, ct.shape))
    tmp = path.with_suffix(".partial.tif")
    with tifffile.TiffWriter(tmp, bigtiff=True) as w:
        def pages():
            for z in zi:
                yield ct[z][np.ix_(yi, xi)]
        w.write(pages(), shape=tuple(shape), dtype=ct.dtype, contiguous=True)
    tmp.replace(path)


def timed_apply(model: Path, ct: Path, out: Path, extra: list[str]) -> dict:
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    cmd = ["/usr/bin/time", "-v", str(Path(PY).parent / "mineral3d"), "apply", str(model), str(ct), "--voxel-um", "2",
           "--out", str(out), "--device", "cpu", *extra]
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"apply failed ({r.returncode}):\n{r.stderr[-3000:]}")
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr).group(1))
    run = json.loads((out / "run.json").read_text())
    return {"wall_s": round(wall, 1), "peak_rss_gib": round(rss_kb / 2 ** 20, 2),
            "steps_s": {k: v["seconds"] for k, v in run["timings"].items()},
            "peak_after_step_mb": {k: v.get("peak_rss_mb") for k, v in run["timings"].items()}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("work", type=Path)
    ap.add_argument("--model", type=Path)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--mid", type=int, nargs=3, default=(256, 512, 512))
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--skip-big", action="store_true")
    ap.add_argument("--skip-mid", action="store_true", help="keep the mid runs of WORK/bench_scale.json")
    a = ap.parse_args()
    work = a.work
    work.mkdir(parents=True, exist_ok=True)
    sample = work / "sample"
    if not (sample / "sample.toml").exists():
        from mineral3d.phantom import PhantomConfig, generate_sample

        generate_sample(sample, PhantomConfig(fraction="fine", seed=61))
    model = a.model or work / "model"
    if not (model / "model.json").exists():
        t = time.perf_counter()
        make_model(sample, model, a.iterations)
        print(f"model trained in {time.perf_counter() - t:.0f} s", flush=True)
    from mineral3d.io import open_sample

    ct = open_sample(sample).ct()
    results = {"sample_shape": list(ct.shape), "runs": {}}
    if a.skip_mid and (work / "bench_scale.json").exists():
        results["runs"] = {k: v for k, v in json.loads((work / "bench_scale.json").read_text())["runs"].items()
                           if k.startswith("mid")}
    mid = work / f"mid_{'x'.join(map(str, a.mid))}.tif"
    if not mid.exists():
        tile_tiff(ct, a.mid, mid)
    nvox_mid = int(np.prod(a.mid))
    for name, extra in () if a.skip_mid else (("threads", []), ("workers-1", ["--workers", "1"]),
                                              ("workers-2", ["--workers", "2"])):
        r = timed_apply(model, mid, work / f"out-mid-{name}", extra)
        r["mvox_s"] = {k: round(nvox_mid / v / 1e6, 2) for k, v in r["steps_s"].items() if v > 0}
        r["mvox_s_total"] = round(nvox_mid / r["wall_s"] / 1e6, 3)
        results["runs"][f"mid {name}"] = r
        print(name, json.dumps(r), flush=True)
    if not a.skip_big:
        big = work / f"big_{a.size}.tif"
        if not big.exists():
            t = time.perf_counter()
            tile_tiff(ct, (a.size,) * 3, big)
            print(f"tiled {big} in {time.perf_counter() - t:.0f} s", flush=True)
        r = timed_apply(model, big, work / "out-big", [])
        nvox = a.size ** 3
        r["mvox_s_total"] = round(nvox / r["wall_s"] / 1e6, 3)
        r["extrapolated_2000_cubed_h"] = round(2000 ** 3 / (nvox / r["wall_s"]) / 3600, 1)
        results["runs"][f"big {a.size}^3 threads"] = r
        print("big", json.dumps(r), flush=True)
    (work / "bench_scale.json").write_text(json.dumps(results, indent=1))
    steps = sorted({k for r in results["runs"].values() for k in r["steps_s"]},
                   key=lambda k: ["segment", "particles", "measure", "kernel", "validate", "report"].index(k)
                   if k in ["segment", "particles", "measure", "kernel", "validate", "report"] else -1)
    print("| run | peak RSS GiB | wall s | Mvox/s end to end | " + " | ".join(f"{s} s" for s in steps) + " |")
    print("|---" * (4 + len(steps)) + "|")
    for name, r in results["runs"].items():
        print(f"| {name} | {r['peak_rss_gib']} | {r['wall_s']} | {r['mvox_s_total']} | "
              + " | ".join(str(r["steps_s"].get(s, "-")) for s in steps) + " |")


if __name__ == "__main__":
    main()

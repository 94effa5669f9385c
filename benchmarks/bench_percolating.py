"""Particle separation when touching particles percolate: peak memory, time, same particles.

Run: .venv/bin/python benchmarks/bench_percolating.py SAMPLE [--tile 3 2 2] [--json OUT.json]

A sample's true phase volume is tiled periodically (``np.tile``), so that particles cut by
one face meet their copies across it: one cluster of touching particles spans the whole
volume (the case where issue 19's 1024³ run went over its memory bar). The particles step
(:func:`mineral3d.pipeline.particles.segment_particles`, the run's own function, settings
from ``InstanceConfig.for_sample`` with the sample's sieve and voxel size) runs in a fresh
process each time, in memory and chunked, with the default window (clusters larger than
``window``³ separated in overlapping windows) and with the window set larger than the
volume (every cluster in one piece: the behaviour before windows). Peak resident memory
is the process's own ``VmHWM`` (``ru_maxrss`` of a child counts its parent's memory at the
fork); the labels of both are compared with
``validate.instance_scores`` (the one-piece result as reference) and against the tiled
truth particles.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

CHILD = r"""
import json, sys, time, dataclasses
from mineral3d.pipeline.particles import segment_particles
from mineral3d.separation import InstanceConfig
group, window, in_memory, sieve0, sieve1, voxel = sys.argv[1:7]


def peak_mb():  # this process's own peak (VmHWM); ru_maxrss would include the parent's at fork + exec
    line = next(x for x in open("/proc/self/status") if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


cfg = InstanceConfig.for_sample(voxel_size_um=float(voxel), sieve_um=(float(sieve0), float(sieve1)))
if int(window):
    cfg = dataclasses.replace(cfg, window=int(window))
t = time.perf_counter()
n = segment_particles(group, cfg, in_memory=in_memory == "1")
print(json.dumps({"particles": n, "s": round(time.perf_counter() - t, 1),
                  "peak_mb": round(peak_mb()),
                  "window": cfg.window, "halo": cfg.halo}))
"""


def main() -> None:
    import cc3d
    import tifffile
    import zarr

    from mineral3d.io import open_sample
    from mineral3d.validate import instance_scores

    ap = argparse.ArgumentParser()
    ap.add_argument("sample", type=Path)
    ap.add_argument("--tile", type=int, nargs=3, default=(3, 2, 2))
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    s = open_sample(a.sample)
    phases = np.tile(tifffile.imread(a.sample / "truth" / "phases.tif"), a.tile)
    truth = tifffile.imread(a.sample / "truth" / "particles.tif").astype(np.int64)
    # tiled truth particles: one id per copy (copies that touch across a face stay apart)
    n_t = int(truth.max()) + 1
    copy = np.zeros(phases.shape, np.int64)
    k = 0
    for i in range(a.tile[0]):
        for j in range(a.tile[1]):
            for m in range(a.tile[2]):
                sl = tuple(slice(o * n, (o + 1) * n) for o, n in zip((i, j, m), truth.shape))
                copy[sl] = np.where(truth > 0, truth + k * n_t, 0)
                k += 1
    comp = cc3d.connected_components(phases != 0, connectivity=6)
    sizes = np.bincount(comp.reshape(-1))[1:]
    rows = {"shape": list(phases.shape), "voxels": int(phases.size), "clusters": int(sizes.size),
            "largest_cluster_share": round(float(sizes.max() / sizes.sum()), 3), "runs": {}}
    print(json.dumps(rows), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        group = Path(tmp) / "segmentation.zarr"
        g = zarr.open_group(store=str(group), mode="w", zarr_format=3)
        arr = g.create_array("phases", shape=phases.shape, dtype=np.uint8, chunks=(64, 64, 64), fill_value=0)
        arr[...] = phases
        arr.attrs["voxel_size_um"] = s.voxel_size_um
        labels = {}
        for name, window, in_memory in (("windows, in memory", 0, 1), ("one piece, in memory", 100000, 1),
                                        ("windows, chunked", 0, 0), ("one piece, chunked", 100000, 0)):
            r = subprocess.run([sys.executable, "-c", CHILD, str(group), str(window), str(in_memory),
                                *map(str, s.config.sieve_um), str(s.voxel_size_um)],
                               capture_output=True, text=True)
            if r.returncode:
                raise SystemExit(r.stderr[-3000:])
            row = json.loads(r.stdout.strip().splitlines()[-1])
            lab = zarr.open_array(store=str(group / "particles"), mode="r")[...]
            labels[name] = lab
            row["vs truth"] = {k: v for k, v in instance_scores(lab, copy).items()
                               if k in ("f1", "split_fraction", "merge_fraction")}
            rows["runs"][name] = row
            print(name, json.dumps(row), flush=True)
    ref = labels["one piece, in memory"]
    for name, lab in labels.items():
        sc = instance_scores(lab, ref)
        rows["runs"][name]["vs one piece"] = {k: sc[k] for k in ("f1", "split", "merges")}
        rows["runs"][name]["identical to one piece"] = bool(np.array_equal(lab, ref))
    print(json.dumps(rows, indent=1))
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

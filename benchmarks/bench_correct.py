"""What a round of corrections and a suggested section buy: IoU and 3D liberation error, per seed.

Run: .venv/bin/python benchmarks/bench_correct.py --seeds 51 52 53 [--out bench-out/correct]
         [--iterations 400] [--finetune 150] [--table]

Per seed, a fine sample at 3 µm (128 x 192 x 192 voxels, three sections) trained on its
*first train section only* (so the labels miss most of the volume's phase regions), with
``--iterations`` (fewer than the default 1200, to fit 3 seeds in an hour on 2 cores; the
same for every arm). From that base model, four arms, each fine-tuned ``--finetune``
iterations with the same settings (run's ``correct`` step: sections + new labels, new labels
weigh 2 and half the patches centre on them) and scored on the whole volume:

- ``base``: no fine-tuning;
- ``corrections``: 3 painted slices (z at 1/4, 1/2, 3/4 of the depth), the truth painted
  where the base prediction is wrong, not on phase rims (each phase region eroded by one
  voxel), as a user paints;
- ``suggested``: a new z section at ``suggest-section``'s first plane, labelled with the
  truth on that voxel plane (a perfectly registered SEM map);
- ``random``: the same at a random plane among those suggest-section chooses from (at least
  ``min_gap`` from the sections and ``min_gap / 2`` from the faces; seeded), the control.

Scores: IoU of each phase vs truth; 3D L(0.8/0.9/0.95) from argmax grades with the base
run's particles vs the truth volume's (same definitions as bench_liberation.py).
Writes OUT/<seed>/bench.json; ``--table`` prints the Markdown table of all seeds.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

ARMS = ("base", "corrections", "suggested", "random")


def iou(pred, truth, k):
    i = np.count_nonzero((pred == k) & (truth == k))
    u = np.count_nonzero((pred == k) | (truth == k))
    return float(i / u) if u else None


def liberation(labels, phases, s):
    from mineral3d.measure import liberation as lib
    from mineral3d.measure.particles import particle_table
    from mineral3d.pipeline.measure import population_3d

    t = particle_table(labels, phases, voxel_size_um=s.voxel_size_um, phase_table=s.phase_table, calipers=False,
                       exposure=False)
    return lib.as_dict(lib.cumulative_liberation(population_3d(t, s.phase_table.target)))


def one_seed(seed: int, root: Path, iterations: int, finetune: int) -> dict:
    import zarr
    from scipy import ndimage

    from mineral3d.io import open_sample
    from mineral3d.io.corrections import read_corrections, save_corrections
    from mineral3d.io.volumes import open_volume
    from mineral3d.nn import TrainConfig, load_model
    from mineral3d.phantom import PhantomConfig, generate_sample
    from mineral3d.pipeline.run import RunConfig, TrainSettings, open_run, run
    from mineral3d.pipeline.segment_phases import finetune_on_corrections, segment_phases
    from mineral3d.pipeline.suggest import default_min_gap, section_positions, suggest_sections

    sample_dir, out = root / "sample", root / "base"
    if not (sample_dir / "sample.toml").exists():
        generate_sample(sample_dir, PhantomConfig(fraction="fine", seed=seed, shape=(128, 192, 192), voxel_um=3.0,
                                                  sections=3), overwrite=True)
        text = (sample_dir / "sample.toml").read_text()  # keep one train section: the labels miss most regions
        blocks = text.split("[[sections]]")
        kept, trains = [blocks[0]], 0
        for b in blocks[1:]:
            if 'role = "train"' in b:
                trains += 1
                if trains > 1:
                    continue
            kept.append(b)
        (sample_dir / "sample.toml").write_text("[[sections]]".join(kept))
    s = open_sample(sample_dir)
    cfg = RunConfig(seed=0, device="cpu", train=TrainSettings(iterations=iterations))
    t0 = time.perf_counter()
    run(open_run(sample_dir, out, config=cfg, log=lambda m: None))
    base_s = time.perf_counter() - t0
    truth, truth_lab = s.truth_phases(), s.truth_particles()
    labels = zarr.open_array(store=str(out / "segmentation.zarr" / "particles"), mode="r")[...]
    base = zarr.open_array(store=str(out / "segmentation.zarr" / "phases"), mode="r")[...]
    nz = truth.shape[0]
    train = [n for n, r in json.loads((out / "registration" / "registration.json").read_text())["sections"].items()
             if r["registered"] and r["role"] == "train"]
    # the arms' new labels
    paint = {}
    p = np.zeros(truth.shape, np.uint8)
    for z in (nz // 4, nz // 2, 3 * nz // 4):
        for k in np.unique(truth[z]):
            if k not in (0, 255):
                p[z][ndimage.binary_erosion(truth[z] == k) & (base[z] != k)] = k
    paint["corrections"] = p
    t1 = time.perf_counter()
    rec = suggest_sections(out, sample=s, device="cpu")
    suggest_s = time.perf_counter() - t1
    z_sug = int(rec["suggestions"][0]["position_voxel"])
    taken = list(section_positions(out_layout(out), s, 0).values())
    gap = default_min_gap(s)
    edge = max(2, gap // 2)  # the planes suggest-section may choose from: away from the sections and the faces
    free = [z for z in range(edge, nz - edge) if all(abs(z - t) >= gap for t in taken)]
    z_rand = int(np.random.default_rng(seed).choice(free))
    for arm, z in (("suggested", z_sug), ("random", z_rand)):
        p = np.zeros(truth.shape, np.uint8)
        p[z] = np.where(truth[z] != 255, truth[z], 0)
        paint[arm] = p
    res = {"seed": seed, "shape": list(truth.shape), "voxel_um": s.voxel_size_um, "train_sections": train,
           "iterations": iterations, "finetune": finetune, "base_run_s": round(base_s, 1),
           "suggest_s": round(suggest_s, 1), "z_suggested": z_sug, "z_random": z_rand, "sections_z": taken,
           "min_gap": gap, "painted_voxels": int(np.count_nonzero(paint["corrections"])),
           "truth": liberation(truth_lab, truth, s), "arms": {}}
    names = {k: s.phase_table.name_of(k) for k in s.phase_table.ids if k not in (0, 255)}
    vol, _ = open_volume(s.config.ct)
    for arm in ARMS:
        if arm == "base":
            pred, secs = base, 0.0
        elif (root / arm / "result.json").is_file() and json.loads((root / arm / "result.json").read_text())[
                "painted"] == int(np.count_nonzero(paint[arm])) and np.array_equal(
                read_corrections(root / arm / "corrections.zarr").to_dense(), paint[arm]):
            res["arms"][arm] = json.loads((root / arm / "result.json").read_text())["result"]  # same labels: reuse
            print(seed, arm, "(reused)", json.dumps(res["arms"][arm]), flush=True)
            continue
        else:
            d = root / arm
            shutil.rmtree(d, ignore_errors=True)
            save_corrections(d / "corrections.zarr", paint[arm])
            t = time.perf_counter()
            config = TrainConfig(iterations=finetune, learning_rate=1e-3, warmup=20, seed=0, precision="auto")
            finetune_on_corrections(s, out / "registration", out / "model", d / "corrections.zarr", d / "model",
                                    sections=train, config=config,
                                    correction_weight=2.0 if arm == "corrections" else 1.0, device="cpu")
            segment_phases(vol, voxel_size_um=s.voxel_size_um, model=load_model(d / "model"),
                           out=d / "segmentation.zarr", device="cpu")
            secs = time.perf_counter() - t
            pred = zarr.open_array(store=str(d / "segmentation.zarr" / "phases"), mode="r")[...]
        lib3 = liberation(labels, pred, s)
        res["arms"][arm] = {"seconds": round(secs, 1), "iou": {n: iou(pred, truth, k) for k, n in names.items()},
                            "3d": lib3,
                            "max_3d_error": max(abs(_num(lib3[t]) - _num(res["truth"][t])) for t in lib3)}
        if arm != "base":
            (root / arm / "result.json").write_text(json.dumps({"painted": int(np.count_nonzero(paint[arm])),
                                                                "result": res["arms"][arm]}))
        print(seed, arm, json.dumps(res["arms"][arm]), flush=True)
    return res


def _num(v) -> float:
    return float("nan") if v is None else float(v)


def _l(d: dict) -> str:
    return "/".join("–" if v is None else f"{v:.3f}" for v in d.values())


def out_layout(out):
    from mineral3d.io.layout import RunLayout

    return RunLayout(out)


def table(results: list[dict]) -> str:
    lines = ["| seed | arm | LiAlO2 IoU | gehlenite IoU | spinel IoU | metal IoU | 3D L(0.8/0.9/0.95) | max 3D error | "
             "fine-tune + segment (s) |", "|---|---|---|---|---|---|---|---|---|"]

    def f(v):
        return "–" if v is None else f"{v:.3f}"

    for r in results:
        t = r["truth"]
        lines.append(f"| {r['seed']} | truth | | | | | {_l(t)} | | |")
        for arm in ARMS:
            a = r["arms"][arm]
            label = arm + (f" (z={r['z_suggested']})" if arm == "suggested" else f" (z={r['z_random']})"
                           if arm == "random" else f" ({r['painted_voxels']} voxels)" if arm == "corrections" else "")
            i = a["iou"]
            lines.append(f"| {r['seed']} | {label} | {f(i.get('LiAlO2'))} | {f(i.get('gehlenite'))} | "
                         f"{f(i.get('spinel'))} | {f(i.get('metal'))} | {_l(a['3d'])}"
                         f" | {a['max_3d_error']:.3f} | {a['seconds']:.0f} |")
    if results:
        lines.append("")
        def gain(arm, get):
            return np.mean([get(r["arms"][arm]) - get(r["arms"]["base"]) for r in results])

        lines.append("Mean over seeds (change from base): " + "; ".join(
            f"{arm}: LiAlO2 IoU {gain(arm, lambda a: a['iou']['LiAlO2']):+.3f}, "
            f"max 3D error {gain(arm, lambda a: a['max_3d_error']):+.3f}" for arm in ARMS[1:]))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[51, 52, 53])
    ap.add_argument("--out", type=Path, default=Path("bench-out/correct"))
    ap.add_argument("--iterations", type=int, default=400)
    ap.add_argument("--finetune", type=int, default=150)
    ap.add_argument("--table", action="store_true")
    args = ap.parse_args()
    if not args.table:
        for seed in args.seeds:
            root = args.out / str(seed)
            root.mkdir(parents=True, exist_ok=True)
            res = one_seed(seed, root, args.iterations, args.finetune)
            (root / "bench.json").write_text(json.dumps(res, indent=1))
    results = [json.loads(p.read_text()) for p in sorted(args.out.glob("*/bench.json"))]
    print(table(results))


if __name__ == "__main__":
    main()

"""Phase CNN accuracy: sparse section labels vs a dense-label oracle vs the grey-value baseline.

Run: .venv/bin/python benchmarks/bench_phases.py [--seed 11] [--iterations 1200] [--sections 3 5]
     [--out bench-out/phases]

1. Generates a fine sample (160 x 224 x 224, 2 µm, 3 sections: 2 train, 1 validation) of a
   seed not used while developing, and registers its sections with `register_section`
   (not the truth).
2. **sparse**: trains the default network on the train-role sections' labels.
3. **oracle**: the same network, settings and iterations, trained on the truth labels of
   every voxel of the lower half of the volume (z < Z/2).
4. **baseline**: per-phase Gaussians of grey values fitted to the sparse labels, with and
   without priors (the better of the two per phase is the reference).
   Both CNNs are calibrated (Delesse, ``mineral3d.calibrate``): the sparse model to the
   train sections' area fractions, the oracle to the phase fractions of its labelled
   half; the sparse model is also scored uncalibrated.
   All three are scored against truth/phases.tif on the upper half (z >= Z/2), which the
   oracle never saw; modal mineralogy is over the whole volume.
5. **transfer**: the sparse model applied to a coarse sample of another seed (3 µm voxels)
   as `apply` does (`check_model`: at the CT's own voxels when its edges are as sharp in
   voxels as the training CT's, else resampled), scored on its whole truth volume.
6. **validation honesty**: `mineral3d validate`'s scores on the validation section vs the
   truth-volume IoU on the same voxels, and the ceiling.

7. **how many sections** (``--sections 3 5``): the generator's CT does not depend on the
   number of sections, so samples with more sections share the oracle's volume; one sparse
   model per count, scored like the first, shows how the gap to the oracle shrinks with
   more labelled planes.

Writes ``OUT/bench_phases.json`` and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from mineral3d.baseline import GreyClassifier
from mineral3d.io import open_sample, write_transform
from mineral3d.nn.infer import InferConfig, predict_blocks
from mineral3d.nn.model import save_model
from mineral3d.nn.train import TrainConfig
from mineral3d.phantom import PhantomConfig, generate_sample
from mineral3d.pipeline.segment_phases import (
    check_model,
    material_classes,
    section_area_fractions,
    section_labels,
    train_phase_model,
)
from mineral3d.pipeline.validation import validate_sample
from mineral3d.register import RegisterConfig, ct_indicator, register_section


def iou(pred, truth, k):
    i = np.count_nonzero((pred == k) & (truth == k))
    u = np.count_nonzero((pred == k) | (truth == k))
    return float(i / u) if u else None


def predict(model, ct, zoom=1.0, calibrated=True):
    from mineral3d.calibrate import classify
    from mineral3d.intensity import GreyLevels

    out = np.zeros(ct.shape, np.uint8)
    classes = np.asarray(model.classes, np.uint8)
    levels = GreyLevels.from_volume(ct, trend=model.levels.trend is not None)
    bias = np.asarray(model.class_bias) if (calibrated and model.class_bias is not None) else None
    for _, sl, prob in predict_blocks(ct, levels.normalise, model.build(), zoom=zoom, config=InferConfig()):
        out[sl] = classes[classify(prob, bias)]
    return out


def sparse_run(out: Path, seed: int, n_sections: int, config: TrainConfig):
    """Generate (once) a fine sample with ``n_sections`` sections, register them, train on the train-role ones.

    Returns (sample, registration folder, labels, calibrated model, training seconds).
    """
    name = f"fine{seed}" if n_sections == 3 else f"fine{seed}-s{n_sections}"
    sample_dir = out / name
    if not (sample_dir / "sample.toml").exists():
        generate_sample(sample_dir, PhantomConfig(fraction="fine", seed=seed, sections=n_sections), overwrite=True)
    s = open_sample(sample_dir)
    ct = s.ct()
    reg = out / f"{name}-registration"
    ind = ct_indicator(ct)
    for c in s.config.sections:
        if not (reg / f"{c.name}.json").exists():
            r = register_section(ct, s.section_map(c.name), scale=s.nominal_scale(c.name), config=RegisterConfig(),
                                 indicator=ind)
            write_transform(reg / f"{c.name}.json", c.name, r.transform, **r.record())
    classes = material_classes(s.phase_table)
    labels, names = section_labels(s, reg)
    fractions = section_area_fractions(s, reg, names, classes)
    t = time.perf_counter()
    model = train_phase_model(ct, labels, voxel_size_um=s.voxel_size_um, phase_table=s.phase_table, config=config,
                              device="cpu", area_fractions=fractions)
    return s, reg, labels, model, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--coarse-seed", type=int, default=12)
    ap.add_argument("--iterations", type=int, default=TrainConfig.iterations)
    ap.add_argument("--out", type=Path, default=Path("bench-out/phases"))
    ap.add_argument("--skip-oracle", action="store_true")
    ap.add_argument("--sections", type=int, nargs="+", default=[3],
                    help="sections of the generated sample (the last is the validation one); several: one sparse "
                         "model each, on the same CT (the first is the one validated and transferred)")
    args = ap.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    res: dict = {"seed": args.seed, "iterations": args.iterations}
    config = TrainConfig(iterations=args.iterations)
    runs = {n: sparse_run(out, args.seed, n, config) for n in args.sections}
    s, reg, labels, sparse, res["sparse_train_s"] = runs[args.sections[0]]
    ct, truth = s.ct(), s.truth_phases()
    table = s.phase_table
    classes = material_classes(table)
    names = [table.name_of(k) for k in classes]
    half = ct.shape[0] // 2
    test = (slice(half, None),)
    res["labelled_voxels"] = {table.name_of(k): v for k, v in labels.counts().items()}
    save_model(out / "model-sparse", sparse)
    t = time.perf_counter()
    pred_sparse = predict(sparse, ct)
    res["sparse_infer_s"] = time.perf_counter() - t
    res["sections_curve"] = {}
    for n, (sn, _, lab, model, seconds) in runs.items():
        if not np.array_equal(sn.ct(), ct):
            raise SystemExit(f"the {n}-section sample's CT differs from the {args.sections[0]}-section one's")
        p = pred_sparse if n == args.sections[0] else predict(model, ct)
        res["sections_curve"][n] = {
            "train_sections": sum(c.role == "train" for c in sn.config.sections),
            "labelled_voxels": len(lab), "train_s": seconds,
            "iou_test_half": {m: iou(p[test], truth[test], k) for m, k in zip(names, classes)},
            "modal": {m: float(np.mean(p == k)) for m, k in zip(names, classes)}}

    preds = {"sparse": pred_sparse, "sparse_uncalibrated": predict(sparse, ct, calibrated=False)}
    if not args.skip_oracle:
        from mineral3d.labels import SparseLabels

        index = np.arange(half * ct.shape[1] * ct.shape[2], dtype=np.int64)
        dense = SparseLabels(ct.shape, index, truth.reshape(-1)[index], np.ones(index.size, np.float32),
                             np.ones(index.size, np.int32))
        t = time.perf_counter()
        # the oracle's own "sections": the phase fractions of its labelled half
        counts = np.bincount(np.searchsorted(classes, dense.label), minlength=len(classes))
        oracle = train_phase_model(ct, dense, voxel_size_um=s.voxel_size_um, phase_table=table, config=config,
                                   device="cpu", area_fractions=counts / counts.sum())
        res["oracle_train_s"] = time.perf_counter() - t
        preds["oracle"] = predict(oracle, ct)

    base = GreyClassifier.from_dict(sparse.info["baseline"])
    norm = sparse.levels.normalise(ct)
    preds["baseline"] = base.predict(norm)
    preds["baseline_no_prior"] = base.predict(norm, priors=False)

    res["iou_test_half"] = {m: {n: iou(p[test], truth[test], k) for n, k in zip(names, classes)}
                            for m, p in preds.items()}
    res["modal_truth"] = {n: float(np.mean(truth == k)) for n, k in zip(names, classes)}
    res["modal"] = {m: {n: float(np.mean(p == k)) for n, k in zip(names, classes)} for m, p in preds.items()}

    # validation honesty on the validation-role section(s)
    v = validate_sample(s, reg, pred_sparse, baseline=base, trend=sparse.levels.trend is not None)
    res["validation"] = {k: {n: v["all"][k]["voxel_grid"]["per_phase"][n]["iou"] for n in names}
                         for k in ("ceiling", "truth_volume", "baseline") if k in v["all"]}
    res["validation"]["map"] = {n: v["all"]["voxel_grid"]["per_phase"][n]["iou"] for n in names}

    # transfer to a coarse sample of another seed (3 µm voxels), zoom chosen as `apply` does
    cdir = out / f"coarse{args.coarse_seed}"
    if not (cdir / "sample.toml").exists():
        generate_sample(cdir, PhantomConfig(fraction="coarse", seed=args.coarse_seed), overwrite=True)
    cs = open_sample(cdir)
    zoom = check_model(sparse, voxel_size_um=cs.voxel_size_um, phase_table=cs.phase_table, allow_resample=True,
                       source=str(cdir), ct=cs.ct())
    res["coarse_zoom"] = zoom
    t = time.perf_counter()
    cpred = predict(sparse, cs.ct(), zoom=zoom)
    res["coarse_infer_s"] = time.perf_counter() - t
    ctruth = cs.truth_phases()
    res["iou_coarse"] = {n: iou(cpred, ctruth, k) for n, k in zip(names, classes)}
    res["iou_fine_whole"] = {n: iou(pred_sparse, truth, k) for n, k in zip(names, classes)}
    res["modal_coarse"] = {n: [float(np.mean(ctruth == k)), float(np.mean(cpred == k))] for n, k in zip(names, classes)}
    (out / "bench_phases.json").write_text(json.dumps(res, indent=2))

    print(f"\nfine seed {args.seed}, {args.iterations} iterations; sparse training {res['sparse_train_s']:.0f} s"
          + (f", oracle {res['oracle_train_s']:.0f} s" if "oracle_train_s" in res else ""))
    print("| phase | sparse IoU | sparse uncalibrated | oracle IoU | baseline IoU (priors / none) | modal truth | "
          "sparse | oracle |")
    print("|---|---|---|---|---|---|---|---|")
    f = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
    for n in names:
        i = res["iou_test_half"]
        om = res["modal"].get("oracle")
        oracle_modal = "-" if om is None else f"{100 * om[n]:.2f}%"
        print(f"| {n} | {f(i['sparse'][n])} | {f(i['sparse_uncalibrated'][n])} | "
              f"{f(i.get('oracle', {}).get(n))} | {f(i['baseline'][n])} / "
              f"{f(i['baseline_no_prior'][n])} | {100 * res['modal_truth'][n]:.2f}% | "
              f"{100 * res['modal']['sparse'][n]:.2f}% | "
              f"{oracle_modal} |")
    if len(res["sections_curve"]) > 1:
        oracle = res["iou_test_half"].get("oracle", {})
        print("\n| train sections | labelled voxels | training s | "
              + " | ".join(f"{n} (gap to oracle)" for n in names) + " |")
        print("|---|---|---|" + "---|" * len(names))
        for c in res["sections_curve"].values():
            cells = [f(c["iou_test_half"][n]) + ("" if oracle.get(n) is None or c["iou_test_half"][n] is None
                                                  else f" ({oracle[n] - c['iou_test_half'][n]:+.3f})") for n in names]
            print(f"| {c['train_sections']} | {c['labelled_voxels']} | {c['train_s']:.0f} | "
                  + " | ".join(cells) + " |")
    print("\ncoarse transfer IoU:", {n: f(x) for n, x in res["iou_coarse"].items()},
          "\nfine whole IoU:", {n: f(x) for n, x in res["iou_fine_whole"].items()})
    print("validation:", json.dumps(res["validation"], indent=None))


if __name__ == "__main__":
    main()

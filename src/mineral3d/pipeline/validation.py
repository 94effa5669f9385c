"""Validation of a phase segmentation against the sample's validation-role sections."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np

from mineral3d.baseline import GreyClassifier
from mineral3d.intensity import GreyLevels
from mineral3d.io.atomic import write_json, write_text
from mineral3d.io.sample import Sample
from mineral3d.io.volumes import take_voxels
from mineral3d.labels import section_voxels
from mineral3d.phase_table import UNCLASSIFIED
from mineral3d.pipeline.segment_phases import registered_transform
from mineral3d.validate import confusion_matrix, scores, section_validation


def validate_sample(sample: Sample, registration: str | os.PathLike, segmentation, *,
                    sections: list[str] | None = None, baseline: GreyClassifier | None = None,
                    use_truth: bool = True, trend: bool = False) -> dict:
    """Scores of ``segmentation`` (phase ids, array-like) on the validation sections.

    Adds, per section and pooled over sections: the grey-value ``baseline`` scored the
    same way (when given, applied to this CT normalised by its own grey levels), and, when
    the sample has ground truth, the resolution ``ceiling`` and the truth-volume scores.
    ``trend``: normalise as the baseline's model did, with the CT's radial grey trend.
    """
    table = sample.phase_table
    classes = [int(i) for i in table.ids if i != UNCLASSIFIED]
    names = [table.name_of(c) for c in classes]
    names_sec = sections or [c.name for c in sample.config.sections if c.role == "validation"]
    truth = sample.truth_phases() if (use_truth and sample.has_truth) else None
    shape = tuple(segmentation.shape)
    if baseline is not None:
        ct = sample.ct()
        levels = GreyLevels.from_volume(ct, trend=trend)
    result: dict = {"sections": {}, "phases": names, "classes": classes}
    pooled = {k: np.zeros((len(classes), len(classes)), np.int64) for k in ("voxel_grid", "ceiling", "truth_volume",
                                                                            "baseline")}
    for name in names_sec:
        ids = sample.section_map(name)
        tr = registered_transform(registration, name)
        r = section_validation(segmentation, ids, tr, classes, names, truth=truth)
        if r.get("voxels", 0) and baseline is not None:
            vox = section_voxels(shape, ids, tr)
            grey = levels.normalise_voxels(take_voxels(ct, vox.index), vox.index, ct.shape)
            conf = confusion_matrix(vox.label, baseline.predict(grey), classes)
            r["baseline"] = {"confusion": conf.tolist(), "voxel_grid": scores(conf, names)}
        for k in pooled:
            src = r if k == "voxel_grid" else r.get(k)
            if src and "confusion" in src:
                pooled[k] += np.asarray(src["confusion"], np.int64)
        result["sections"][name] = r
    main = pooled.pop("voxel_grid")
    result["all"] = {"voxels": int(main.sum()), "confusion": main.tolist(), "voxel_grid": scores(main, names)}
    result["all"].update({k: {"confusion": v.tolist(), "voxel_grid": scores(v, names)} for k, v in pooled.items()
                          if v.sum() > 0})
    return result


def write_validation(out: str | os.PathLike, result: dict) -> list[Path]:
    """``validation.json``, ``validation_scores.csv`` (one row per section x phase) and
    ``validation_confusion.csv`` (long form) in folder ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = io.StringIO()
    w = csv.writer(rows, lineterminator="\n")
    w.writerow(["section", "phase", "iou", "dice", "precision", "recall", "map_fraction", "predicted_fraction",
                "voxels", "baseline_iou", "ceiling_iou", "truth_volume_iou"])
    conf_rows = io.StringIO()
    wc = csv.writer(conf_rows, lineterminator="\n")
    wc.writerow(["section", "reference", "predicted", "voxels"])
    for sec, r in [*result["sections"].items(), ("all", result.get("all", {}))]:
        grid = r.get("voxel_grid")
        if not grid:
            continue

        def iou(key, phase):
            x = r.get(key)
            return "" if not x else _fmt(x["voxel_grid"]["per_phase"][phase]["iou"])

        for phase, s in grid["per_phase"].items():
            w.writerow([sec, phase, _fmt(s["iou"]), _fmt(s["dice"]), _fmt(s["precision"]), _fmt(s["recall"]),
                        _fmt(s["reference_fraction"]), _fmt(s["predicted_fraction"]), s["reference_voxels"],
                        iou("baseline", phase), iou("ceiling", phase), iou("truth_volume", phase)])
        if r.get("confusion") is not None:
            for i, a in enumerate(result["phases"]):
                for j, b in enumerate(result["phases"]):
                    wc.writerow([sec, a, b, r["confusion"][i][j]])
    write_text(out / "validation_scores.csv", rows.getvalue())
    write_text(out / "validation_confusion.csv", conf_rows.getvalue())
    write_json(out / "validation.json", result)
    return [out / "validation.json", out / "validation_scores.csv", out / "validation_confusion.csv"]


def _fmt(v) -> str:
    return "" if v is None else f"{v:.4f}"

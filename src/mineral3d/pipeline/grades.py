"""The grades step with files: section grade pairs -> calibration (train) and trust (validation).

Reads the sample's registered sections and the run's phase segmentation; writes, in
``OUT/grades/`` (one atomic folder):

- ``calibration.json``: the :class:`~mineral3d.measure.grades.GradeCalibration` used by
  ``measure`` (fitted on this run's train sections when it has registered ones, else the
  model's own ``grade_calibration.json``, else none) and where it came from;
- ``trust.json``: :func:`~mineral3d.measure.grades.liberation_agreement` on the
  validation sections (``status`` "unchecked" when there are none);
- ``section_pairs.csv``: every section grade pair, with its section name and role.

A run that trains its model also stores the calibration with the model
(``MODEL/grade_calibration.json``), so that ``apply`` with that model uses it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from mineral3d.errors import InputError
from mineral3d.io.atomic import atomic_dir, read_json, write_json
from mineral3d.io.sample import Sample
from mineral3d.measure.grades import GradeCalibration, fit_grade_calibration, liberation_agreement, section_grade_pairs
from mineral3d.pipeline.segment_phases import registered_transform
from mineral3d.plane import cut_volume

METHOD_VERSION = 4
"""Part of the grades step's key: a run made with another calibration method redoes the step."""

MODEL_FILE = "grade_calibration.json"
"""Name of the calibration stored in a model folder."""


def grade_pairs(sample: Sample, registration: str | os.PathLike, segmentation, names: list[str]) -> dict:
    """Section grade pairs ({name: DataFrame}) of the registered sections ``names``."""
    tid = sample.phase_table.target_id
    out = {}
    for name in names:
        ids = sample.section_map(name)
        cut = cut_volume(segmentation, registered_transform(registration, name), ids.shape)
        px = next(c.pixel_size_um for c in sample.config.sections if c.name == name)
        out[name] = section_grade_pairs(ids, cut, pixel_size_um=px, target_id=tid)
    return out


def read_model_calibration(model_dir: str | os.PathLike | None) -> GradeCalibration | None:
    """The calibration stored with a model, or None."""
    if model_dir is None:
        return None
    path = Path(model_dir) / MODEL_FILE
    if not path.is_file():
        return None
    try:
        return GradeCalibration.from_dict(read_json(path))
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(path, f"not a grade calibration of this mineral3d version ({exc!r}): delete it, or "
                               "retrain the model") from None


def read_run_calibration(out: str | os.PathLike) -> GradeCalibration | None:
    """The calibration a run's grades step chose (None when the run has no grades step output)."""
    path = Path(out) / "grades" / "calibration.json"
    if not path.is_file():
        return None
    data = read_json(path)
    return GradeCalibration.from_dict(data["calibration"]) if data.get("calibration") else None


def read_run_trust(out: str | os.PathLike) -> dict | None:
    path = Path(out) / "grades" / "trust.json"
    return read_json(path) if path.is_file() else None


def check_grades(sample: Sample, registration: str | os.PathLike, segmentation, *, train: list[str],
                 validation: list[str], model_calibration: GradeCalibration | None = None, n_boot: int = 1000,
                 seed: int = 0) -> tuple[GradeCalibration | None, str, dict, pd.DataFrame]:
    """(calibration, its source, trust, all pairs) of a segmentation of ``sample``."""
    pairs_train = grade_pairs(sample, registration, segmentation, train)
    pairs_val = grade_pairs(sample, registration, segmentation, validation)
    if pairs_train:
        calibration = fit_grade_calibration(pairs_train, seed=seed)
        source = f"fitted on this sample's train sections ({', '.join(train)})"
    elif model_calibration is not None:
        calibration, source = model_calibration, "stored with the model (fitted on its training sample's sections)"
    else:
        calibration, source = None, "none: no registered train section and none stored with the model"
    if pairs_val:
        trust = liberation_agreement(pd.concat(pairs_val.values(), ignore_index=True),
                                     calibration=calibration if calibration is not None and calibration.applied
                                     else None, n_boot=n_boot, seed=seed)
        trust["sections_used"] = list(validation)
    else:
        trust = {"status": "unchecked", "reason": "no registered validation section: the 3D liberation could not be "
                                                  "checked against a held-out SEM map", "sections_used": []}
    frames = [p.assign(section_name=n, role=r) for r, group in (("train", pairs_train), ("validation", pairs_val))
              for n, p in group.items()]
    pairs = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return calibration, source, trust, pairs


def with_scan_note(trust: dict, scan: dict | None) -> dict:
    """``trust`` with the comparison of the CT with the model's training CT (a model from elsewhere).

    The comparison (:func:`~mineral3d.pipeline.segment_phases.scan_difference`) is kept
    under ``"scan"``; where the CT differs, the reason says so in words. It does not change
    the status: a held-out section is evidence, the edge blur only a reason to look for it.
    """
    if scan is None:
        return trust
    out = {**trust, "scan": scan}
    if scan["differs"]:
        ct, model = scan["ct_edge_sigma_vox"], scan["model_edge_sigma_vox"]
        advice = {"trusted": "", "untrusted": " (train on this sample's own sections)"}.get(
            trust.get("status"), " (train on this sample's own sections, or check with a validation section)")
        out["reason"] = (f"{trust['reason']}; and this CT is not like the model's training CT: its edges are "
                         f"blurred over {ct:.2f} voxels against {model:.2f} "
                         f"({100 * scan['relative']:+.0f}%), as from other scan settings, where the model's phase "
                         f"boundaries and grade calibration need not hold{advice}")
    return out


def write_grades(out: str | os.PathLike, calibration: GradeCalibration | None, source: str, trust: dict,
                 pairs: pd.DataFrame) -> Path:
    """Write ``OUT/grades/`` (calibration.json, trust.json, section_pairs.csv) atomically."""
    folder = Path(out) / "grades"
    with atomic_dir(folder, overwrite=True) as tmp:
        pairs.to_csv(tmp / "section_pairs.csv", index=False)
        write_json(tmp / "trust.json", trust)
        write_json(tmp / "calibration.json", {"calibration": None if calibration is None else calibration.to_dict(),
                                              "source": source})
    return folder


def store_with_model(model_dir: str | os.PathLike, calibration: GradeCalibration) -> None:
    """Keep ``calibration`` in the model folder, for ``apply``."""
    write_json(Path(model_dir) / MODEL_FILE, calibration.to_dict())

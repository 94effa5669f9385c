"""Where a run's outputs live: the one place that knows every path of a run folder.

A run (``mineral3d run`` or ``apply``) writes, under its output folder ``OUT``::

    sample.json              what was run on (phase table, voxel size, provenance)
    run.json                 the step keys and timings
    registration/            <section>.json, <section>_overlay.png, registration.json
    model/                   the phase model (unless --model points elsewhere)
    segmentation.zarr/       phases (uint8) and particles (uint32), OME-Zarr
    grades/                  calibration.json, trust.json, section_pairs.csv
    particles.csv, .parquet  the particle table
    summary.json             liberation and its 2D-3D bias (the measure step's last file)
    liberation.csv, liberation_curves.csv, grade_recovery.csv
    kernel/                  status.json (last), kernel and corrected.json
    validation.json          validation_scores.csv, validation_confusion.csv
    report.html
    corrections.zarr/        phase ids painted in `mineral3d view` (rounds, appended)
    model_corrected/         the model fine-tuned on sections + corrections (run --corrections)
    suggest/                 suggest-section: suggestions.csv, suggestions.png
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


def is_zarr(path: str | Path) -> bool:
    """Whether ``path`` is a Zarr v3 array or group (holds ``zarr.json``)."""
    return (Path(path) / "zarr.json").exists()


@dataclass(frozen=True)
class RunLayout:
    """The paths of a run folder ``root``; ``model_dir`` replaces ``root/model`` when given."""

    root: Path
    model_dir: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    # --- files and folders -------------------------------------------------------------------
    @property
    def sample_record(self) -> Path:
        return self.root / "sample.json"

    @property
    def run_record(self) -> Path:
        return self.root / "run.json"

    @property
    def registration(self) -> Path:
        return self.root / "registration"

    @property
    def registration_record(self) -> Path:
        return self.registration / "registration.json"

    @property
    def model(self) -> Path:
        return Path(self.model_dir) if self.model_dir is not None else self.root / "model"

    @property
    def segmentation(self) -> Path:
        return self.root / "segmentation.zarr"

    @property
    def phases(self) -> Path:
        return self.segmentation / "phases"

    @property
    def particle_labels(self) -> Path:
        return self.segmentation / "particles"

    @property
    def grades(self) -> Path:
        return self.root / "grades"

    @property
    def grade_calibration(self) -> Path:
        return self.grades / "calibration.json"

    @property
    def trust(self) -> Path:
        return self.grades / "trust.json"

    @property
    def particles_csv(self) -> Path:
        return self.root / "particles.csv"

    @property
    def particles_parquet(self) -> Path:
        return self.root / "particles.parquet"

    @property
    def liberation_csv(self) -> Path:
        return self.root / "liberation.csv"

    @property
    def liberation_curves(self) -> Path:
        return self.root / "liberation_curves.csv"

    @property
    def grade_recovery(self) -> Path:
        return self.root / "grade_recovery.csv"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def kernel(self) -> Path:
        return self.root / "kernel"

    @property
    def kernel_status(self) -> Path:
        return self.kernel / "status.json"

    @property
    def corrected(self) -> Path:
        return self.kernel / "corrected.json"

    @property
    def validation(self) -> Path:
        return self.root / "validation.json"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @property
    def corrections(self) -> Path:
        """Phase ids painted in ``mineral3d view`` (:mod:`mineral3d.io.corrections`)."""
        return self.root / "corrections.zarr"

    @property
    def corrected_model(self) -> Path:
        """The model fine-tuned on the sections plus the corrections (``run --corrections``)."""
        return self.root / "model_corrected"

    @property
    def suggestions(self) -> Path:
        """``mineral3d suggest-section`` output: where the next SEM section would teach the model most."""
        return self.root / "suggest"

    def segmenting_model(self) -> Path:
        """The model the last run segmented with: fine-tuned on corrections when its ``correct`` step ran."""
        if (self.root / ".steps" / "correct.json").is_file() and (self.corrected_model / "model.json").is_file():
            return self.corrected_model
        return self.model

    # --- completeness ------------------------------------------------------------------------
    def marker(self, step: str) -> Path:
        """The file a step writes last: it exists only when the step's output is complete."""
        return {
            "register": self.registration_record,
            "train": self.model / "model.json",
            "correct": self.corrected_model / "model.json",
            "segment": self.phases / "zarr.json",
            "particles": self.particle_labels / "zarr.json",
            "grades": self.trust,
            "measure": self.summary,
            "kernel": self.kernel_status,
            "validate": self.validation,
            "report": self.report,
        }[step]

    def done(self, step: str) -> bool:
        """Whether ``step``'s output is complete (its :meth:`marker` exists)."""
        return self.marker(step).exists()

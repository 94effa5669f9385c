"""The measure step: particle table, 3D and 2D liberation, stereological bias -> files.

Outputs in the output folder (each written atomically; ``summary.json`` last):

- ``particles.csv`` / ``particles.parquet``: :mod:`mineral3d.measure.particles`;
- ``liberation.csv``: tidy spectra (method 3d / 2d-virtual / 2d-map, basis grade /
  exposure, size class, grade class, particles, amount, target amount, target share);
- ``liberation_curves.csv``: cumulative liberation L(t), t in [0, 1];
- ``grade_recovery.csv``: theoretical grade-recovery curves per method;
- ``summary.json``: target phase, particle counts, modal mineralogy, association,
  L3D / L2D at 0.8, 0.9, 0.95 and the 2D-3D bias with 95% bootstrap intervals; with a
  grade calibration, the 95% interval of L3D from the particles' grade uncertainty;
- ``measure_config.json``: the settings used.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from mineral3d.errors import InputError
from mineral3d.io.atomic import atomic_file, write_json
from mineral3d.io.layout import RunLayout
from mineral3d.measure import liberation as lib
from mineral3d.measure.grades import GradeCalibration, add_grade_columns, calibrated_population
from mineral3d.measure.particles import particle_table
from mineral3d.measure.sections2d import maps_population, virtual_sections
from mineral3d.phase_table import UNCLASSIFIED, PhaseTable


@dataclass(frozen=True)
class MeasureConfig:
    """Settings of the measure step.

    section_step : voxels between virtual section planes; None: a third of the median
        particle ESD (about three planes through a typical particle along each axis).
    size_edges_um : size-class edges in µm; None: a sqrt(2) series spanning the particles.
    n_boot : bootstrap resamples for the 95% intervals.
    """

    section_step: int | None = None
    size_edges_um: tuple[float, ...] | None = None
    n_boot: int = 1000
    seed: int = 0
    n_directions: int = 64


@dataclass
class SectionMap:
    """A validation SEM map for the 2D-map estimate."""

    name: str
    ids: np.ndarray
    pixel_size_um: float


def population_3d(table: pd.DataFrame, target: str, *, calibrated: bool = True) -> lib.Population:
    """Liberation population of the particles not touching the volume border.

    The grade is the table's ``grade`` column (calibrated against the sections) where it
    has one and ``calibrated``, else the segmented volume fraction ``vol_<target>``.
    """
    t = table[~table["touches_border"]]
    amount = t["material_um3"].to_numpy()
    grade = t["grade"] if calibrated and "grade" in t.columns else t[f"vol_{target}"]
    return lib.Population(amount=amount, target=amount * grade.to_numpy(),
                          exposure=t[f"surf_{target}"].to_numpy(), size_um=t["esd_um"].to_numpy(),
                          group=t["particle"].to_numpy())


def check_volumes(labels: np.ndarray, phases: np.ndarray, table: PhaseTable, *, labels_src: str,
                  phases_src: str) -> None:
    """Raise InputError for mismatched shapes, non-integer labels or phase ids not in the table."""
    if labels.shape != phases.shape:
        raise InputError(labels_src, f"shape {labels.shape} differs from the phase volume's {phases.shape} "
                         f"({phases_src})")
    for arr, src, what in ((labels, labels_src, "particle labels"), (phases, phases_src, "phase ids")):
        if arr.dtype.kind not in "ui":
            raise InputError(src, f"{what} must be an integer volume, got dtype {arr.dtype}")
    counts = np.bincount(np.asarray(phases).ravel().astype(np.int64), minlength=256) if phases.max() < 256 else None
    if counts is None:
        raise InputError(phases_src, f"phase id {int(phases.max())} is not in the phase table")
    known = set(int(i) for i in table.ids) | {UNCLASSIFIED}
    bad = [(i, int(c)) for i, c in enumerate(counts) if c and i not in known]
    if bad:
        raise InputError(phases_src, f"phase id {bad[0][0]} on {bad[0][1]} voxels is not in the phase table")


def measure(labels: np.ndarray, phases: np.ndarray, *, voxel_size_um: float, phase_table: PhaseTable,
            maps: list[SectionMap] = (), config: MeasureConfig = MeasureConfig(),
            table: pd.DataFrame | None = None, calibration: GradeCalibration | None = None,
            trust: dict | None = None) -> dict:
    """All measurements in memory: tables (DataFrames) and the summary dict.

    ``table``: the particle table when already measured (e.g. slab by slab on a cluster by
    :func:`mineral3d.measure.chunked.particle_table_chunked`).

    ``calibration`` (fitted on the train sections, :mod:`mineral3d.measure.grades`): the
    particle table gets ``grade`` (calibrated target grade) and ``grade_sd`` columns, and
    3D and virtual-section liberation, spectra and grade-recovery use calibrated grades;
    the summary keeps the uncalibrated values as ``liberation_3d_argmax`` and
    ``liberation_2d_argmax``, and gives ``liberation_3d_ci95``: the 95% interval of each
    L3D(t) from the particles' grade uncertainty
    (:func:`~mineral3d.measure.liberation.grade_interval`, None where it could not be
    estimated; it also carries the calibration line's own uncertainty) with
    ``grade_uncertainty`` (its error model) and ``liberation_3d_near_threshold``: the
    particles within two ``grade_sd`` of each threshold, which decide it
    (:func:`~mineral3d.measure.liberation.near_threshold`). SEM maps are measured as they
    are. ``trust``: the check of the grades on the validation sections, copied into the
    summary.
    """
    target = phase_table.target
    tid = phase_table.target_id
    if table is None:
        table = particle_table(labels, phases, voxel_size_um=voxel_size_um, phase_table=phase_table,
                               n_directions=config.n_directions)
    if calibration is not None:
        table = add_grade_columns(table, target, calibration)
    pop3 = population_3d(table, target)
    pop3_argmax = population_3d(table, target, calibrated=False)
    med_esd_vox = float(np.median(table["esd_um"])) / voxel_size_um if len(table) else 8.0
    step = config.section_step or max(2, int(round(med_esd_vox / 3)))
    pop2v_argmax = virtual_sections(labels, phases, step=step, voxel_size_um=voxel_size_um, target_id=tid)
    pop2v = calibrated_population(pop2v_argmax, calibration)
    pops = {"3d": pop3, "2d-virtual": pop2v}
    pop2m = None
    if maps:
        pop2m = maps_population((m.ids, m.pixel_size_um, tid, None) for m in maps)
        pops["2d-map"] = pop2m
    edges = (np.asarray(config.size_edges_um, float) if config.size_edges_um
             else lib.default_size_edges(np.concatenate([p.size_um for p in pops.values()])))

    libtab = pd.concat([lib.liberation_table(p, method=k, size_edges=edges) for k, p in pops.items()],
                       ignore_index=True)
    curves = pd.concat([lib.liberation_curves(p, method=k) for k, p in pops.items()], ignore_index=True)
    gr = pd.concat([lib.grade_recovery(p).assign(method=k) for k, p in pops.items()], ignore_index=True)

    bias = {"2d-virtual": {b: lib.bootstrap_bias(pop3, pop2v, basis=b, n_boot=config.n_boot, paired=True,
                                                 seed=config.seed) for b in ("grade", "exposure")}}
    if pop2m is not None and len(pop2m):
        bias["2d-map"] = {b: lib.bootstrap_bias(pop3, pop2m, basis=b, n_boot=config.n_boot, paired=False,
                                                seed=config.seed) for b in ("grade", "exposure")}
    names = {p.id: p.name for p in phase_table.phases}
    summary = {
        "target_phase": target,
        "voxel_size_um": voxel_size_um,
        "particles": int(len(table)),
        "particles_inside": int(len(pop3)),
        "particles_touching_border": int(table["touches_border"].sum()),
        "modal_3d": lib.modal_mineralogy(table, table["material_um3"].to_numpy()),
        "association_3d": {names[k]: v for k, v in
                           lib.association(phases, tid, [p.id for p in phase_table.phases
                                                          if p.id != UNCLASSIFIED]).items()},
        "liberation_3d": lib.as_dict(lib.cumulative_liberation(pop3)),
        "liberation_2d": lib.as_dict(lib.cumulative_liberation(pop2v)),
        "liberation_3d_exposure": lib.as_dict(lib.cumulative_liberation(pop3, basis="exposure")),
        "liberation_2d_exposure": lib.as_dict(lib.cumulative_liberation(pop2v, basis="exposure")),
        "sections_2d_virtual": {"planes_every_voxels": step, "sections": int(len(pop2v))},
        "bias_2d_minus_3d": bias,
        "size_edges_um": [float(e) for e in edges],
    }
    if calibration is not None:
        summary["liberation_3d_argmax"] = lib.as_dict(lib.cumulative_liberation(pop3_argmax))
        summary["liberation_2d_argmax"] = lib.as_dict(lib.cumulative_liberation(pop2v_argmax))
        summary["grade_calibration"] = {"applied": calibration.applied, "note": calibration.note,
                                        "sections": list(calibration.sections)}
        inside = table.loc[~table["touches_border"], "grade_sd"].to_numpy(float)
        interval = lib.grade_interval(pop3, inside, n_draws=config.n_boot, seed=config.seed,
                                      centres=partial(calibration.draw_grades, pop3_argmax.grade))
        known = all(v["ci95"] is not None for v in interval.values())
        summary["liberation_3d_ci95"] = {t: v["ci95"] for t, v in interval.items()}
        summary["liberation_3d_near_threshold"] = lib.near_threshold(pop3, inside)
        summary["grade_uncertainty"] = {
            "particle_sd": calibration.particle_sd, "noise_um2": calibration.noise_um2,
            "line_cov": None if calibration.line_cov is None else [list(r) for r in calibration.line_cov],
            "median_grade_sd": float(np.median(inside)) if known else None,
            "note": ("liberation_3d_ci95: 95% interval of L3D(t) from each particle's grade uncertainty "
                     "(grade_sd) and the calibration line's own uncertainty (line_cov, shared by all "
                     "particles), for these particles" if known else
                     "the grade error could not be estimated (too few target-bearing particle sections on the "
                     "train sections, or no particle inside the volume): no interval")}
    if trust is not None:
        summary["liberation_trust"] = trust
    if pop2m is not None:
        summary["liberation_2d_map"] = lib.as_dict(lib.cumulative_liberation(pop2m))
        summary["sections_2d_map"] = {"maps": [m.name for m in maps], "sections": int(len(pop2m))}
    return {"particles": table, "liberation": libtab, "curves": curves, "grade_recovery": gr, "summary": summary,
            "step": step}


def write_measurements(out_dir: str | Path, result: dict, config: MeasureConfig, *, inputs: dict) -> None:
    """Write the outputs of :func:`measure`; ``summary.json`` comes last and marks completion."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    done = RunLayout(out).summary
    if done.exists():
        done.unlink()  # a rerun invalidates the old summary first
    for name, frame in (("particles", result["particles"]), ("liberation", result["liberation"]),
                        ("liberation_curves", result["curves"]), ("grade_recovery", result["grade_recovery"])):
        with atomic_file(out / f"{name}.csv") as tmp:
            frame.to_csv(tmp, index=False)
    with atomic_file(RunLayout(out).particles_parquet) as tmp:
        result["particles"].to_parquet(tmp, index=False)
    write_json(out / "measure_config.json", {**asdict(config), "section_step_used": result["step"], **inputs})
    write_json(done, result["summary"])

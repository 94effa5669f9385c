"""The steps of `mineral3d run`: what each reads, its settings, and what it writes.

:data:`GRAPH` lists the steps in order as :class:`Step` s: the function that runs it, the
steps it depends on, its settings and its input files, from which
:func:`mineral3d.pipeline.run.run` makes the step's key and decides whether it must run
(its completion marker is :meth:`RunLayout.marker <mineral3d.io.layout.RunLayout.marker>`).
Input paths are files from outside the run folder (the sample, an external model); what
earlier steps wrote is covered by their keys.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from mineral3d.errors import InputError
from mineral3d.io.atomic import atomic_dir, atomic_file, write_json


def _sample_files(ctx) -> list[Path]:
    s = ctx.sample
    paths = [s.root / "sample.toml", s.config.ct, s.config.phases]
    for c in s.config.sections:
        paths += [c.map] + ([c.bse] if c.bse else [])
    return paths


def _grades_version() -> int:
    from mineral3d.pipeline.grades import METHOD_VERSION

    return METHOD_VERSION


def step_register(ctx) -> None:
    from mineral3d.pipeline.registration import register_sections
    from mineral3d.register import RegisterConfig

    cfg = ctx.config.register
    config = RegisterConfig.for_orientation(cfg.orientation, min_score=cfg.min_score, min_ratio=cfg.min_ratio,
                                            min_anchors=cfg.min_anchors, min_overlap=cfg.min_overlap)
    with atomic_dir(ctx.layout.registration, overwrite=True) as tmp:
        record, _ = register_sections(ctx.sample, tmp, config, progress=ctx.progress, log=ctx.log)
        write_json(tmp / ctx.layout.registration_record.name, record)


def _registered(ctx, role: str) -> list[str]:
    import json

    rec = json.loads(ctx.layout.registration_record.read_text())["sections"]
    return [n for n, r in rec.items() if r["registered"] and r["role"] == role]


def step_train(ctx) -> None:
    from mineral3d.nn import TrainConfig, load_model
    from mineral3d.pipeline.segment_phases import check_model, train_on_sections

    s = ctx.sample
    if ctx.model_dir is not None:
        m = load_model(ctx.model_dir)
        check_model(m, voxel_size_um=s.voxel_size_um, phase_table=s.phase_table,
                    allow_resample=ctx.config.segment.allow_resample, source=str(s.root))
        return
    names = _registered(ctx, "train")
    if not names:
        raise InputError(s.root / "sample.toml", "no train-role section could be registered: nothing to learn from")
    t = ctx.config.train
    config = TrainConfig(iterations=t.iterations, seed=ctx.config.seed, precision=t.precision,
                         class_weight=t.class_weight)
    train_on_sections(s, ctx.layout.registration, ctx.layout.model, sections=names, config=config,
                      features=t.features, calibrate=t.calibrate, device=ctx.config.device, overwrite=True,
                      progress=None if ctx.progress is None else (lambda i, n, loss: ctx.progress("training", i, n)))


def step_correct(ctx) -> None:
    """Fine-tune the model on the train sections plus the user's corrections (only with ``--corrections``)."""
    from mineral3d.nn import TrainConfig
    from mineral3d.pipeline.segment_phases import finetune_on_corrections

    c = ctx.config.correct
    config = TrainConfig(iterations=c.iterations, learning_rate=c.learning_rate, warmup=min(20, c.iterations),
                         seed=ctx.config.seed, precision=ctx.config.train.precision,
                         class_weight=ctx.config.train.class_weight)
    names = _registered(ctx, "train") if ctx.layout.registration_record.is_file() else []
    m = finetune_on_corrections(ctx.sample, ctx.layout.registration, ctx.layout.model, ctx.corrections,
                                ctx.layout.corrected_model, sections=names, config=config, correction_weight=c.weight,
                                device=ctx.config.device,
                                progress=None if ctx.progress is None else
                                (lambda i, n, loss: ctx.progress("fine-tuning on corrections", i, n)))
    info = m.info["corrections"]
    ctx.log(f"  fine-tuned on {info['voxels']} corrected voxels (round {info['round']}) + the train sections")


def _correction_files(ctx) -> list[Path]:
    from mineral3d.io.corrections import correction_rounds

    rounds = correction_rounds(ctx.corrections)
    if not rounds:
        raise InputError(ctx.corrections, "no saved corrections here (paint in `mineral3d view` and save first)")
    return [rounds[-1]]


def step_segment(ctx) -> None:
    from mineral3d.io.volumes import open_volume
    from mineral3d.nn import load_model
    from mineral3d.nn.infer import InferConfig
    from mineral3d.pipeline.segment_phases import check_model, segment_phases

    s, cfg = ctx.sample, ctx.config.segment
    model = load_model(ctx.phase_model)
    vol, _ = open_volume(s.config.ct)
    zoom = check_model(model, voxel_size_um=s.voxel_size_um, phase_table=s.phase_table,
                       allow_resample=cfg.allow_resample, source=str(s.root), ct=vol)
    if zoom != 1.0 or abs(s.voxel_size_um / model.voxel_size_um - 1) > 0.05:
        ctx.log(f"  model trained at {model.voxel_size_um:g} µm applied to {s.voxel_size_um:g} µm voxels: "
                + ("at the CT's own voxels (its edges are as sharp, in voxels, as the training CT's)" if zoom == 1.0
                   else f"blocks resampled x{zoom:.3f}"))
    segment_phases(vol, voxel_size_um=s.voxel_size_um, model=model, out=ctx.layout.segmentation,
                   config=InferConfig(block=cfg.block, precision=cfg.precision, tta=cfg.tta), device=ctx.config.device,
                   zoom=zoom, progress=None if ctx.progress is None else
                   (lambda d, n: ctx.progress("segmenting blocks", d, n)),
                   scheduler=ctx.scheduler, volume_path=s.config.ct)


def step_particles(ctx) -> None:
    from mineral3d.pipeline.particles import segment_particles
    from mineral3d.separation import InstanceConfig

    s, cfg = ctx.sample, ctx.config.particles
    config = InstanceConfig.for_sample(voxel_size_um=s.voxel_size_um, sieve_um=s.config.sieve_um,
                                       min_diameter_um=cfg.min_diameter_um, neck_ratio=cfg.neck_ratio)
    segment_particles(ctx.layout.segmentation, config, progress=ctx.progress, scheduler=ctx.scheduler)


def _scan_difference(ctx, zoom: float) -> dict | None:
    """The CT's edge blur against the model's training CT's, at the ``zoom`` the segment step applied."""
    from mineral3d.io.volumes import open_volume
    from mineral3d.nn import load_model
    from mineral3d.pipeline.segment_phases import scan_difference

    vol, _ = open_volume(ctx.sample.config.ct)
    return scan_difference(load_model(ctx.phase_model), vol, zoom=zoom)


def step_grades(ctx) -> None:
    """Section grade pairs: the grade calibration (train sections) and the trust signal (validation)."""
    import zarr

    from mineral3d.pipeline.grades import (
        check_grades,
        read_model_calibration,
        store_with_model,
        with_scan_note,
        write_grades,
    )

    seg = zarr.open_array(store=str(ctx.layout.phases), mode="r")
    train = _registered(ctx, "train")
    calibration, source, trust, pairs = check_grades(
        ctx.sample, ctx.layout.registration, seg, train=train, validation=_registered(ctx, "validation"),
        model_calibration=None if train else read_model_calibration(ctx.phase_model), n_boot=ctx.config.measure.n_boot,
        seed=ctx.config.seed)
    if (ctx.model_dir is None or ctx.corrections is not None) and calibration is not None:
        store_with_model(ctx.phase_model, calibration)  # this run's own model: `apply` uses it
    if ctx.model_dir is not None:  # a model trained on another CT: is this one like it?
        trust = with_scan_note(trust, _scan_difference(ctx, float(seg.attrs.get("zoom", 1.0))))
    write_grades(ctx.out, calibration, source, trust, pairs)
    if calibration is not None:
        ctx.log(f"  grade calibration: {calibration.note}")
    ctx.log(f"  liberation check on held-out sections: {trust['status']}: {trust['reason']}")


def step_measure(ctx) -> None:
    import numpy as np
    import zarr

    from mineral3d.pipeline.measure import MeasureConfig, SectionMap, measure, write_measurements
    from mineral3d.pipeline.particles import IN_MEMORY_VOXELS

    s, cfg = ctx.sample, ctx.config.measure
    phases = zarr.open_array(store=str(ctx.layout.phases), mode="r")
    labels = zarr.open_array(store=str(ctx.layout.particle_labels), mode="r")
    maps = [SectionMap(c.name, s.section_map(c.name), c.pixel_size_um) for c in s.config.sections
            if c.role == "validation"]
    config = MeasureConfig(section_step=cfg.section_step, size_edges_um=cfg.size_edges_um, n_boot=cfg.n_boot,
                           seed=ctx.config.seed)
    table = None
    if int(np.prod(labels.shape)) > IN_MEMORY_VOXELS:  # large: slab by slab, same result (measure.chunked)
        from mineral3d.measure.chunked import particle_table_chunked

        table = particle_table_chunked(ctx.layout.particle_labels, ctx.layout.phases, voxel_size_um=s.voxel_size_um,
                                       phase_table=s.phase_table, scheduler=ctx.scheduler or "threads")
        from mineral3d.nn.runtime import release_memory

        release_memory()  # the slabs' buffers, before the virtual sections
    else:
        phases, labels = phases[...], labels[...]
    from mineral3d.pipeline.grades import read_run_calibration, read_run_trust

    result = measure(labels, phases, voxel_size_um=s.voxel_size_um, phase_table=s.phase_table, maps=maps,
                     config=config, table=table, calibration=read_run_calibration(ctx.out),
                     trust=read_run_trust(ctx.out))
    write_measurements(ctx.out, result, config,
                       inputs={"segmentation": str(ctx.layout.segmentation), "sample": str(s.root)})


def step_kernel(ctx) -> None:
    """Kernel of this run's 3D result (reusable for 2D data of the same material and size fraction),
    and the correction of this sample's own SEM maps with it (an in-sample check, shown in the report).

    Writes ``kernel/kernel.json`` (a kernel folder), ``kernel/corrected.json`` and, last,
    ``kernel/status.json``
    (``{"kernel": true/false, "note": ...}``: too few particles inside the volume is not an error).
    """
    import pandas as pd
    import zarr

    from mineral3d.measure.sections2d import maps_population
    from mineral3d.pipeline.kernel import correction, kernel_from_volumes, write_correction, write_kernel

    s, cfg = ctx.sample, ctx.config.kernel
    import shutil

    folder = ctx.layout.kernel
    shutil.rmtree(folder, ignore_errors=True)
    table = s.phase_table
    phases = zarr.open_array(store=str(ctx.layout.phases), mode="r")
    labels = zarr.open_array(store=str(ctx.layout.particle_labels), mode="r")
    parts = pd.read_csv(ctx.layout.particles_csv)
    labels, phases, parts, crop_note = _kernel_crop(labels, phases, parts)
    try:
        k = kernel_from_volumes(labels, phases, parts, target=table.target, target_id=table.target_id,
                                voxel_size_um=s.voxel_size_um, n_directions=cfg.n_directions, seed=ctx.config.seed,
                                source=str(ctx.out))
    except InputError as exc:
        folder.mkdir(parents=True, exist_ok=True)
        write_json(ctx.layout.kernel_status, {"kernel": False, "note": exc.problem})
        return
    write_kernel(folder, k)  # the kernel folder itself: `mineral3d correct OUT/kernel --maps ...`
    pop = maps_population((s.section_map(c.name), c.pixel_size_um, table.target_id, None)
                          for c in s.config.sections)
    note = "in-sample: the kernel and the corrected SEM maps come from the same sample"
    if crop_note:
        note += "; " + crop_note
    if k.provenance["particles"] < 100:
        note += (f"; only {k.provenance['particles']} particles lie inside the volume, so the kernel and its "
                 "intervals are rough: a trustworthy kernel needs hundreds")
    if len(pop):
        r = correction(k, pop, n_boot=cfg.n_boot, seed=ctx.config.seed,
                       source=f"{s.root}: all sections ({', '.join(c.name for c in s.config.sections)})")
        write_correction(folder, r)
    else:
        note = "no SEM map section to correct"
    write_json(ctx.layout.kernel_status, {"kernel": True, "note": note, "particles": k.provenance["particles"]})


KERNEL_VOXELS = 400 ** 3
"""The kernel of a larger volume is measured in its central box of about this many voxels."""


def _kernel_crop(labels, phases, parts):
    """(labels, phases, table, note): the volumes in memory, or their central box when larger than KERNEL_VOXELS.

    A kernel needs hundreds of whole particles, not the whole volume: in a crop, only the
    particles that lie inside it (and inside the volume) are used, with their table
    rows; the rest of the crop is ignored (their sections find no table row).
    """
    import numpy as np

    shape = np.array(labels.shape)
    if shape.prod() <= KERNEL_VOXELS:
        return labels[...], phases[...], parts, ""
    side = np.minimum(shape, int(round(KERNEL_VOXELS ** (1 / 3))))
    while side.prod() < KERNEL_VOXELS and (side < shape).any():  # flat volumes: widen the other axes
        side = np.minimum(shape, (side * 1.1).astype(int) + 1)
    lo = (shape - side) // 2
    box = tuple(slice(int(a), int(a + n)) for a, n in zip(lo, side))
    inside = np.ones(len(parts), bool)
    for d, a in enumerate("zyx"):
        inside &= (parts[f"bbox_{a}0"].to_numpy() > lo[d]) & (parts[f"bbox_{a}1"].to_numpy() < lo[d] + side[d])
    sub = parts[inside].copy()
    for d, a in enumerate("zyx"):
        for e in "01":
            sub[f"bbox_{a}{e}"] -= lo[d]
    note = (f"kernel measured in the central {' x '.join(map(str, side))} voxels of the "
            f"{' x '.join(map(str, shape))} volume "
            f"({int((~sub['touches_border'].astype(bool)).sum())} whole particles)")
    return labels[box], phases[box], sub, note


def step_validate(ctx) -> None:
    import zarr

    from mineral3d.baseline import GreyClassifier
    from mineral3d.nn import load_model
    from mineral3d.pipeline.grades import read_run_trust
    from mineral3d.pipeline.validation import validate_sample, write_validation

    s = ctx.sample
    names = _registered(ctx, "validation")
    seg = zarr.open_array(store=str(ctx.layout.phases), mode="r")
    m = load_model(ctx.phase_model)
    base = GreyClassifier.from_dict(m.info["baseline"]) if "baseline" in m.info else None
    if not names:
        write_json(ctx.layout.validation, {"sections": {}, "all": {},
                                                 "note": "no validation-role section was registered",
                                                 "liberation_trust": read_run_trust(ctx.out)})
        return
    result = validate_sample(s, ctx.layout.registration, seg, sections=names, baseline=base,
                             trend=m.levels.trend is not None)
    result["liberation_trust"] = read_run_trust(ctx.out)
    write_validation(ctx.out, result)


def step_report(ctx) -> None:
    from mineral3d.report import build_report

    html = build_report(ctx.out, ctx.sample)
    with atomic_file(ctx.layout.report) as tmp:
        tmp.write_text(html, encoding="utf-8")


@dataclass(frozen=True)
class Step:
    """One step of ``mineral3d run``.

    ``depends_on``, ``settings`` and ``inputs`` are functions of the run context: the names
    of the steps whose keys enter this one's, the JSON-able settings it depends on, and the
    files from outside the run folder it reads.
    """

    name: str
    run: Callable[..., None]
    depends_on: Callable[..., list[str]]
    settings: Callable[..., object]
    inputs: Callable[..., list[Path]]
    enabled: Callable[..., bool] = lambda ctx: True
    """A disabled step is neither run nor recorded (``correct`` runs only with ``--corrections``)."""


def _segment_settings(ctx) -> dict:
    """The segment step's settings for its key: ``tta`` only when on, so runs from before it resume."""
    d = asdict(ctx.config.segment)
    if d.get("tta") == "none":
        d.pop("tta")
    return d


def _model_files(ctx) -> list[Path]:
    return [ctx.model_dir] if ctx.model_dir else []


GRAPH: tuple[Step, ...] = (
    Step("register", step_register, lambda ctx: [], lambda ctx: asdict(ctx.config.register), _sample_files),
    Step("train", step_train, lambda ctx: ["register"] if ctx.model_dir is None else [],
         lambda ctx: [asdict(ctx.config.train), ctx.config.seed, str(ctx.model_dir)],
         lambda ctx: _sample_files(ctx) if ctx.model_dir is None else [ctx.model_dir]),
    Step("correct", step_correct, lambda ctx: ["train", "register"] if ctx.model_dir is None else ["train"],
         lambda ctx: [asdict(ctx.config.correct), ctx.config.seed, ctx.config.device], _correction_files,
         enabled=lambda ctx: ctx.corrections is not None),
    Step("segment", step_segment, lambda ctx: ["train"] + (["correct"] if ctx.corrections is not None else []),
         lambda ctx: [_segment_settings(ctx), ctx.config.device],
         lambda ctx: [ctx.sample.config.ct] + _model_files(ctx)),
    Step("particles", step_particles, lambda ctx: ["segment"], lambda ctx: asdict(ctx.config.particles),
         lambda ctx: [ctx.sample.root / "sample.toml"]),
    Step("grades", step_grades, lambda ctx: ["segment", "register"],
         lambda ctx: [ctx.config.measure.n_boot, ctx.config.seed, _grades_version()],
         lambda ctx: _sample_files(ctx) + _model_files(ctx)),
    Step("measure", step_measure, lambda ctx: ["particles", "grades"],
         lambda ctx: [asdict(ctx.config.measure), ctx.config.seed], _sample_files),
    Step("kernel", step_kernel, lambda ctx: ["measure"], lambda ctx: [asdict(ctx.config.kernel), ctx.config.seed],
         _sample_files),
    Step("validate", step_validate, lambda ctx: ["segment", "register", "grades"], lambda ctx: [], _sample_files),
    Step("report", step_report, lambda ctx: ["measure", "kernel", "validate"], lambda ctx: [], lambda ctx: []),
)
"""The steps of ``mineral3d run``, in the order they run."""

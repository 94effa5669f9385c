"""The ``mineral3d`` command line: a thin layer over the library.

Every user error is an :class:`~mineral3d.errors.InputError`; it is printed as one line
(``error: <file>: <problem>``) and the command exits with code 2, never a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from mineral3d.errors import InputError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Correlative 3D mineralogy: CT volumes + SEM-EDS mineral maps -> 3D phases, "
                       "particles and liberation.")
err = Console(stderr=True)
out = Console()


class _StageProgress:
    """Turns (stage, done, total) callbacks into rich progress bars on stderr."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, int] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=max(total, 1))
        self.progress.update(self.tasks[stage], completed=done, total=max(total, 1))


def _progress() -> Progress:
    return Progress(TextColumn("{task.description:<24}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                    TimeElapsedColumn(), console=err, transient=False, disable=not err.is_terminal)


@app.command()
def phantom(
    out_dir: Path = typer.Argument(..., metavar="OUT", help="Sample folder to create."),
    fraction: str = typer.Option("fine", help="Sieve fraction: fine (63-100 µm) or coarse (100-250 µm)."),
    seed: int = typer.Option(0, help="Random seed: the same seed gives identical files."),
    shape: tuple[int, int, int] = typer.Option((160, 224, 224), metavar="Z Y X", help="CT volume shape, voxels."),
    voxel_um: Optional[float] = typer.Option(None, help="CT voxel size, µm [default: 2 fine, 3 coarse]."),
    sections: int = typer.Option(3, help="Number of polished sections (the last one is for validation)."),
    map_format: str = typer.Option("ids", help="Mineral maps as phase ids or RGB colours: ids|rgb."),
    variant: str = typer.Option("default", help="default, or varied: microstructure, CT artefacts and map pixels "
                                                "drawn per seed from wide ranges (docs/phantom.md)."),
    force: bool = typer.Option(False, "--force", help="Replace OUT if it exists."),
) -> None:
    """Generate a synthetic correlative slag sample (CT, mineral maps, BSE, ground truth)."""
    from mineral3d.phantom import PhantomConfig, generate_sample

    config = PhantomConfig(fraction=fraction, seed=seed, shape=shape, voxel_um=voxel_um, sections=sections,
                           map_format=map_format, variant=variant)
    if out_dir.exists() and not force:
        raise InputError(out_dir, "already exists (use --force to replace it)")
    with _progress() as p:
        g = generate_sample(out_dir, config, overwrite=force, progress=_StageProgress(p))
    out.print(f"wrote {out_dir}: {len(g.particles)} particles, CT {'x'.join(map(str, g.ct.shape))} at "
              f"{config.voxel_size_um:g} µm, {len(g.sections)} sections")


@app.command()
def info(
    sample: Path = typer.Argument(..., help="Sample folder (or its sample.toml)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Read and validate every file of a sample and summarise it."""
    from mineral3d.io import open_sample
    from mineral3d.summary import sample_summary

    s = sample_summary(open_sample(sample))
    if as_json:
        out.print_json(json.dumps(s))
        return
    ct = s["ct"]
    g = ct["grey"]
    out.print(f"[bold]{s['name']}[/]  ({s['root']})" + (f"  sieve {s['sieve_um'][0]:g}-{s['sieve_um'][1]:g} µm"
                                                         if s["sieve_um"] else ""))
    out.print(f"CT: {' x '.join(map(str, ct['shape']))} voxels (z, y, x), {ct['dtype']}, voxel "
              f"{ct['voxel_size_um']:g} µm = {' x '.join(f'{e:g}' for e in ct['extent_um'])} µm")
    out.print(f"    grey min {g['min']:g}  p1 {g['p1']:g}  median {g['median']:g}  p99 {g['p99']:g}  "
              f"max {g['max']:g}  mean {g['mean']:.1f}  std {g['std']:.1f}")
    phases = Table("id", "phase", "colour", title=f"Phases (target: {s['target']})", title_justify="left")
    for p in s["phases"]:
        phases.add_row(str(p["id"]), p["name"], f"[{p['color']}]■[/] {p['color']}")
    out.print(phases)
    if not s["sections"]:
        out.print("no sections")
    sec = Table("section", "role", "map rows x cols", "pixel µm", "voxels/pixel", "BSE", "unclassified",
                title="Sections", title_justify="left")
    for x in s["sections"]:
        sec.add_row(x["name"], x["role"], f"{x['shape'][0]} x {x['shape'][1]}", f"{x['pixel_size_um']:g}",
                    f"{x['nominal_scale_vox_per_px']:.3f}", "yes" if x["bse"] else "no",
                    f"{x['unclassified_fraction']:.2%}")
    if s["sections"]:
        out.print(sec)
        frac = Table("phase", *(x["name"] for x in s["sections"]),
                     title="Phase area fractions of classified map pixels", title_justify="left")
        for p in s["phases"]:
            if p["id"] != 255:
                frac.add_row(p["name"], *(f"{x['area_fractions'].get(p['name'], 0):.2%}" for x in s["sections"]))
        out.print(frac)
    out.print("ground truth: " + ("yes (truth/)" if s["has_truth"] else "no"))


SCHEDULER_OPTION = typer.Option(None, "--scheduler", help="Where volume steps run: threads (default: this process), "
                                "processes, or a dask.distributed scheduler address (tcp://host:8786) whose workers "
                                "share OUT's file system.")
WORKERS_OPTION = typer.Option(None, "--workers", help="Start a local dask cluster of this many single-threaded worker "
                              "processes for the volume steps.")


@app.command()
def measure(
    phases: Path = typer.Option(..., help="Phase-id volume: TIFF, folder of slices or Zarr (e.g. truth/phases.tif)."),
    particles: Path = typer.Option(..., help="Particle-label volume: TIFF or Zarr (e.g. truth/particles.tif)."),
    out_dir: Path = typer.Option(..., "--out", help="Output folder."),
    sample: Optional[Path] = typer.Option(None, help="Sample folder: voxel size, phase table, target and "
                                                      "validation maps come from it."),
    voxel_um: Optional[float] = typer.Option(None, help="Voxel size, µm (without --sample)."),
    phase_table: Optional[Path] = typer.Option(None, help="phases.csv (without --sample)."),
    target: Optional[str] = typer.Option(None, help="Target phase name (without --sample)."),
    section_step: Optional[int] = typer.Option(None, help="Voxels between virtual sections [default: ESD/3]."),
    size_classes: Optional[str] = typer.Option(None, help="Size-class edges in µm, e.g. '45,63,90,125,180'."),
    boot: int = typer.Option(1000, help="Bootstrap resamples for the 95% intervals."),
    seed: int = typer.Option(0, help="Seed of the bootstrap."),
    scheduler: Optional[str] = typer.Option(None, help="Measure the particle table slab by slab with dask: "
                                                       "threads, processes, or a dask.distributed scheduler "
                                                       "address (tcp://host:8786)."),
    workers: Optional[int] = typer.Option(None, help="Start a local dask cluster of this many worker processes "
                                                     "for the particle table."),
    slab: Optional[int] = typer.Option(None, help="z-layers per dask task [default: about 16 Mi voxels, 4-64]."),
) -> None:
    """Particle table and liberation in 3D and from 2D sections, with the 2D-3D bias."""
    from mineral3d.io import open_sample
    from mineral3d.io.volumes import read_any_volume
    from mineral3d.phases import PhaseTable
    from mineral3d.pipeline.measure import MeasureConfig, SectionMap, check_volumes, write_measurements
    from mineral3d.pipeline.measure import measure as run

    maps = []
    if sample is not None:
        s = open_sample(sample)
        table, voxel = s.phase_table, s.voxel_size_um
        if target is not None:
            table = table.with_target(target)
        maps = [SectionMap(c.name, s.section_map(c.name), c.pixel_size_um) for c in s.config.sections
                if c.role == "validation"]
    else:
        from mineral3d.pipeline.run import recorded_phase_table

        recorded = recorded_phase_table(phases) if phase_table is None else None  # a run's own output
        if recorded is not None:
            table = recorded.with_target(target) if target is not None else recorded
        elif phase_table is None or target is None:
            raise InputError("--phase-table/--target", "give --sample, or --phase-table and --target")
        else:
            table = PhaseTable.from_csv(phase_table, target=target)
        voxel = voxel_um
    edges = None
    if size_classes:
        try:
            edges = tuple(sorted(float(v) for v in size_classes.split(",")))
        except ValueError:
            raise InputError("--size-classes",
                             f"expected comma-separated numbers in µm, got {size_classes!r}") from None
    ph, ph_voxel = read_any_volume(phases, name="phase volume", labels=True)
    lab, _ = read_any_volume(particles, name="particle volume", labels=True)
    voxel = voxel or ph_voxel
    if voxel is None or not voxel > 0:
        raise InputError("--voxel-um", f"a positive voxel size is needed, got {voxel}")
    check_volumes(lab, ph, table, labels_src=str(particles), phases_src=str(phases))
    config = MeasureConfig(section_step=section_step, size_edges_um=edges, n_boot=boot, seed=seed)
    parts = None
    if scheduler is not None or workers is not None:
        from mineral3d.cluster import open_scheduler
        from mineral3d.measure.chunked import particle_table_chunked

        with err.status("measuring particles slab by slab"), open_scheduler(scheduler, workers) as sched:
            parts = particle_table_chunked(particles, phases, voxel_size_um=voxel, phase_table=table, slab=slab,
                                           scheduler=sched, n_directions=config.n_directions)
    with err.status("measuring particles and liberation"):
        result = run(lab, ph, voxel_size_um=voxel, phase_table=table, maps=maps, config=config, table=parts)
    write_measurements(out_dir, result, config, inputs={"phases": str(phases), "particles": str(particles),
                                                         "sample": None if sample is None else str(sample)})
    s = result["summary"]
    out.print(f"{s['particles']} particles ({s['particles_inside']} inside the volume), target {s['target_phase']}")
    line = "  ".join(f"L({t})={v:.3f}" for t, v in s["liberation_3d"].items() if v is not None)
    out.print(f"3D liberation by grade: {line}")
    for method, b in s["bias_2d_minus_3d"].items():
        x = b["grade"]["0.9"]
        if None in (x["L2D"], x["L3D"], x["bias"], *x["ci95"]):
            out.print(f"{method}: no target phase to liberate")
            continue
        out.print(f"{method}: L2D(0.9)={x['L2D']:.3f} vs L3D(0.9)={x['L3D']:.3f}: bias {x['bias']:+.3f} "
                  f"(95% CI {x['ci95'][0]:+.3f} to {x['ci95'][1]:+.3f})")
    out.print(f"wrote {out_dir}")


@app.command()
def register(
    sample: Path = typer.Argument(..., help="Sample folder (or its sample.toml)."),
    out_dir: Path = typer.Option(..., "--out", help="Output folder for <section>.json and <section>_overlay.png."),
    section: Optional[str] = typer.Option(None, help="Register only this section [default: all]."),
    orientation: str = typer.Option("near-z", help="near-z (tilts up to 10 degrees) or any."),
    min_score: float = typer.Option(0.75, help="Smallest final NCC accepted."),
    min_ratio: float = typer.Option(2.0, help="Runner-up misfit (1 - NCC) over the best's must reach this."),
    min_anchors: int = typer.Option(3, help="Separate particle regions the map must show to fix the tilt."),
    min_overlap: float = typer.Option(0.75, help="Share of the map that must lie inside the CT volume."),
) -> None:
    """Find where each mineral map lies in the CT volume (no manual input).

    Exits with code 3, writing no transform for it, when a section cannot be registered
    with confidence (a map from another sample, a map without particle outlines).
    """
    from mineral3d.io import open_sample
    from mineral3d.pipeline.registration import register_and_write
    from mineral3d.register import RegisterConfig, RegistrationError, ct_indicator

    if orientation not in ("near-z", "any"):
        raise InputError("--orientation", f"must be near-z or any, got {orientation!r}")
    s = open_sample(sample)
    names = [section] if section else [c.name for c in s.config.sections]
    for name in names:
        s.config.section(name)  # unknown names fail before any work
    if not names:
        raise InputError(s.root / "sample.toml", "the sample has no sections to register")
    config = RegisterConfig.for_orientation(orientation, min_score=min_score, min_ratio=min_ratio,
                                            min_anchors=min_anchors, min_overlap=min_overlap)
    ct = s.ct_array()
    failed = []
    with err.status("preparing the CT"):
        ind = ct_indicator(ct)
    for name in names:
        with err.status(f"registering {name}"):
            try:
                r = register_and_write(s, name, out_dir, config=config, ct=ct, indicator=ind)
            except RegistrationError as exc:
                failed.append(f"{name}: {exc}")
                err.print(f"[red]{name}: not registered[/]: {exc}")
                stale = out_dir / f"{name}.json"
                if stale.exists():
                    stale.unlink()
                continue
        t = r.transform
        out.print(f"{name}: score {r.score:.3f} (runner-up {r.runner_up:.3f}), tilt {t.tilt_deg:.2f} deg, "
                  f"scale {t.scale / s.nominal_scale(name):.4f} x nominal{', mirrored' if r.mirrored else ''}")
    if failed:
        raise RegistrationError("; ".join(failed))


def _ints(text: str, what: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise InputError(what, f"expected integers separated by commas, got {text!r}") from None


@app.command()
def train(
    sample: Path = typer.Argument(..., help="Sample folder (or its sample.toml)."),
    registration: Path = typer.Option(..., help="Folder written by `mineral3d register`."),
    out_dir: Path = typer.Option(..., "--out", help="Model folder to write."),
    device: str = typer.Option("auto", help="cpu, cuda or auto."),
    iterations: int = typer.Option(1200, help="Training iterations (batches of 2 patches)."),
    seed: int = typer.Option(0, help="Random seed: the same seed gives the same model."),
    sections: Optional[str] = typer.Option(None, help="Comma-separated sections to learn from [default: the "
                                                      "train-role sections]."),
    features: Optional[str] = typer.Option(None, help="U-Net channels, 6 integers [default: 8,8,16,32,64,8]."),
    precision: str = typer.Option("auto", help="auto (bf16 on a GPU that has it, fp32 on CPU: reproducible), "
                                               "fp32 or bf16."),
    class_weight: Optional[float] = typer.Option(None, help="Loss weight of a phase ∝ its labelled voxel count "
                                                 "to the power -W (0: none, 1: every phase equal in total) "
                                                 "[default: 0.75, see docs/phases.md]."),
    no_calibrate: bool = typer.Option(False, "--no-calibrate", help="Keep the network's own phase balance instead "
                                                                    "of matching the sections' area fractions."),
    force: bool = typer.Option(False, "--force", help="Replace an existing model folder."),
) -> None:
    """Train a 3D phase CNN on the registered sections (loss only on the voxels they label).

    Checkpoints go beside the model folder; rerunning an interrupted command resumes.
    """
    from mineral3d.io import open_sample
    from mineral3d.nn import NetworkConfig, TrainConfig, save_model
    from mineral3d.pipeline.phases import material_classes, section_labels, train_phase_model

    if out_dir.exists() and not force:
        raise InputError(out_dir, "already exists (use --force to replace it)")
    s = open_sample(sample)
    names = [n.strip() for n in sections.split(",")] if sections else None
    for n in names or []:
        s.config.section(n)
    labels, used = section_labels(s, registration, sections=names)
    from mineral3d.pipeline.phases import section_area_fractions

    fractions = None if no_calibrate else section_area_fractions(s, registration, used,
                                                                 material_classes(s.phase_table))
    config = TrainConfig(iterations=iterations, seed=seed, precision=precision,
                         **({} if class_weight is None else {"class_weight": class_weight}))
    net = NetworkConfig(out_channels=len(material_classes(s.phase_table)),
                        **({"features": _ints(features, "--features")} if features else {}))
    ckpt = out_dir.parent / f".{out_dir.name}.checkpoint.pt"
    out.print(f"training on {len(labels)} labelled voxels of sections {', '.join(used)}: "
              + ", ".join(f"{s.phase_table.name_of(k)} {v}" for k, v in sorted(labels.counts().items())))
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn(), TextColumn("eta"),
                  TimeRemainingColumn(), console=err, disable=not err.is_terminal) as p:
        task = p.add_task("training", total=iterations, loss=float("nan"))
        model = train_phase_model(s.ct_array(), labels, voxel_size_um=s.voxel_size_um, phase_table=s.phase_table,
                                  network=net, config=config, device=device, checkpoint=ckpt,
                                  progress=lambda i, n, loss: p.update(task, completed=i, loss=loss),
                                  info={"sample": str(s.root), "sections": used}, area_fractions=fractions)
    save_model(out_dir, model, overwrite=force)
    rec = model.info["record"]
    out.print(f"wrote {out_dir}: {rec['iterations']} iterations in {rec['seconds']:.0f} s, "
              f"final loss {rec['final_loss']:.4f}"
              + (f" (resumed at {rec['resumed_at']})" if rec["resumed_at"] else ""))


def _open_input(path: Path, voxel_um: float | None):
    """(volume, voxel size, phase table or None, sample or None) of a sample folder or a CT file."""
    from mineral3d.io import open_sample
    from mineral3d.io.volumes import open_volume

    if path.is_dir() and (path / "sample.toml").exists() or path.suffix == ".toml":
        s = open_sample(path)
        vol, _ = open_volume(s.config.ct)
        return vol, s.voxel_size_um, s.phase_table, s
    vol, voxel = open_volume(path)
    voxel = voxel_um or voxel
    if not voxel or voxel <= 0:
        raise InputError(path, "no voxel size recorded: give --voxel-um")
    return vol, voxel, None, None


@app.command()
def segment(
    source: Path = typer.Argument(..., metavar="CT_OR_SAMPLE", help="Sample folder, or a CT volume (TIFF, "
                                                                    "slice folder or Zarr)."),
    model_dir: Path = typer.Option(..., "--model", help="Model folder written by `mineral3d train`."),
    out_dir: Path = typer.Option(..., "--out", help="Output folder: OUT/segmentation.zarr is written."),
    device: str = typer.Option("auto", help="cpu, cuda or auto."),
    probabilities: bool = typer.Option(False, "--probabilities", help="Also write class probabilities."),
    allow_resample: bool = typer.Option(False, "--allow-resample", help="Apply a model trained at another voxel "
                                                                        "size by resampling each block."),
    voxel_um: Optional[float] = typer.Option(None, help="Voxel size, µm, of a CT file that does not record it."),
    block: str = typer.Option("128,256,256", help="Block shape (z,y,x) processed at a time, voxels."),
    precision: str = typer.Option("auto", help="auto, fp32 or bf16."),
    particles: bool = typer.Option(False, "--particles", help="Also separate individual particles (array "
                                                              "particles)."),
    min_diameter_um: Optional[float] = typer.Option(None, help="Smallest particle diameter, µm [default: the "
                                                               "sample's lower sieve bound, else 8 voxels]."),
    scheduler: Optional[str] = SCHEDULER_OPTION,
    workers: Optional[int] = WORKERS_OPTION,
) -> None:
    """Segment mineral phases (and particles) in a whole volume, block by block, into Zarr."""
    from mineral3d.nn import load_model
    from mineral3d.nn.infer import InferConfig
    from mineral3d.pipeline.phases import check_model, segment_phases

    model = load_model(model_dir)
    vol, voxel, table, sample = _open_input(source, voxel_um)
    zoom = check_model(model, voxel_size_um=voxel, phase_table=table, allow_resample=allow_resample,
                       source=str(source), ct=vol)
    config = InferConfig(block=_ints(block, "--block"), precision=precision)
    from mineral3d.cluster import open_scheduler

    ct_path = sample.config.ct if sample is not None else source
    with open_scheduler(scheduler, workers) as sched:
        with _progress() as p:
            prog = _StageProgress(p)
            r = segment_phases(vol, voxel_size_um=voxel, model=model, out=out_dir / "segmentation.zarr",
                               config=config, device=device, probabilities=probabilities, zoom=zoom,
                               progress=lambda d, n: prog("segmenting blocks", d, n), scheduler=sched,
                               volume_path=ct_path)
        out.print(f"wrote {r.path}/phases ({r.blocks} blocks" + (f", {r.resumed_blocks} resumed"
                                                                 if r.resumed_blocks else "")
                  + (f", resampled x{zoom:.3f}" if zoom != 1 else "") + ")")
        if particles:
            _particles(r.path, voxel, sample.config.sieve_um if sample else None, min_diameter_um, 0.7, sched)


def _particles(group: Path, voxel: float, sieve, min_diameter_um, neck_ratio, scheduler=None) -> None:
    from mineral3d.instances import InstanceConfig
    from mineral3d.pipeline.particles import segment_particles

    config = InstanceConfig.for_sample(voxel_size_um=voxel, sieve_um=sieve, min_diameter_um=min_diameter_um,
                                       neck_ratio=neck_ratio)
    with _progress() as p:
        n = segment_particles(group, config, progress=_StageProgress(p), scheduler=scheduler)
    out.print(f"wrote {group}/particles ({n} particles; markers {config.marker_radius:.1f} voxels, "
              f"fragments < {config.min_voxels} voxels merged, neck ratio {config.neck_ratio:g})")


@app.command()
def particles(
    source: Path = typer.Argument(..., help="segmentation.zarr holding a phases array, or a CT volume (TIFF, "
                                            "slice folder, Zarr) or sample folder to separate without sections."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Output folder (for a CT volume)."),
    sample: Optional[Path] = typer.Option(None, help="Sample folder: its sieve fraction sets the particle size."),
    model_dir: Optional[Path] = typer.Option(None, "--model", help="A phase model: its segmentation gives the "
                                                                   "foreground [default: Otsu threshold]."),
    voxel_um: Optional[float] = typer.Option(None, help="Voxel size, µm, of a bare CT volume [default: recorded, "
                                                        "else 1 (sizes then in voxels)]."),
    min_diameter_um: Optional[float] = typer.Option(None, help="Smallest particle diameter, µm [default: the "
                                                               "sample's lower sieve bound, else the median local "
                                                               "thickness of the foreground]."),
    neck_ratio: float = typer.Option(0.7, help="Regions meeting at a neck thicker than this share of their "
                                               "inscribed radius are one particle."),
    device: str = typer.Option("auto", help="With --model: cpu, cuda or auto."),
) -> None:
    """Separate individual particles (touching and non-convex ones): from a phase segmentation or a bare CT."""
    import zarr

    from mineral3d.io import open_sample

    if (source / "phases" / "zarr.json").exists():
        voxel = float(zarr.open_array(store=str(source / "phases"), mode="r").attrs.get("voxel_size_um") or 0)
        sieve = None
        from mineral3d.pipeline.run import SAMPLE_RECORD, recorded_sample

        if sample is None and (source.parent / SAMPLE_RECORD).is_file():  # a run's own segmentation
            sample = recorded_sample(source.parent, need="the particle size").root
        if sample is not None:
            s = open_sample(sample)
            voxel, sieve = s.voxel_size_um, s.config.sieve_um
        if voxel <= 0:
            raise InputError(source / "phases", "no voxel size recorded: give --sample")
        _particles(source, voxel, sieve, min_diameter_um, neck_ratio)
        return
    _particles_ct(source, out_dir, sample, model_dir, voxel_um, min_diameter_um, neck_ratio, device)


def _particles_ct(source, out_dir, sample, model_dir, voxel_um, min_diameter_um, neck_ratio, device) -> None:
    from mineral3d.io import open_sample
    from mineral3d.io.volumes import read_any_volume
    from mineral3d.pipeline.particles import particles_from_ct

    if out_dir is None:
        raise InputError("--out", "give an output folder for particles of a CT volume")
    sieve = None
    if (source / "sample.toml").exists() or source.name == "sample.toml":
        s = open_sample(source)
        ct, voxel, sieve = s.ct_array(), s.voxel_size_um, s.config.sieve_um
    else:
        ct, voxel = read_any_volume(source, name="CT volume")
    if sample is not None:
        s = open_sample(sample)
        voxel, sieve = s.voxel_size_um, s.config.sieve_um
    voxel = voxel_um or voxel
    if voxel is None:
        err.print(f"{source}: voxel size unknown, using 1 (sizes in voxels); give --voxel-um")
        voxel = 1.0
    if not voxel > 0:
        raise InputError("--voxel-um", f"must be positive, got {voxel}")
    phases = table = None
    if model_dir is not None:
        import zarr

        from mineral3d.nn import load_model
        from mineral3d.pipeline.phases import check_model, segment_phases

        model = load_model(model_dir)
        if model.phase_table is None:
            raise InputError(model_dir, "the model records no phase table: retrain it with this version")
        zoom = check_model(model, voxel_size_um=voxel, phase_table=None, allow_resample=True, source=str(source),
                           ct=ct)
        with _progress() as p:
            task = p.add_task("segmenting phases", total=1)
            segment_phases(ct, voxel_size_um=voxel, model=model, out=out_dir / "segmentation.zarr", device=device,
                           zoom=zoom,
                           progress=lambda d, n: p.update(task, completed=d, total=n))
        phases = zarr.open_array(store=str(out_dir / "segmentation.zarr" / "phases"), mode="r")[...]
        table = model.phase_table
    with _progress() as p:
        summary = particles_from_ct(ct, out_dir, voxel_size_um=voxel, sieve_um=sieve,
                                    min_diameter_um=min_diameter_um, neck_ratio=neck_ratio, phases=phases,
                                    phase_table=table, progress=_StageProgress(p))
    share = summary["largest_share_of_volume"]
    out.print(f"{summary['particles']} particles ({summary['particles_inside']} not touching the border); "
              f"D10/D50/D90 {summary['D10_um']:.1f}/{summary['D50_um']:.1f}/{summary['D90_um']:.1f} µm; "
              f"largest holds {100 * (share or 0):.1f}% of the particle volume")
    out.print(f"wrote {out_dir} (particles.csv, size_distribution.csv, particles_slices.png)")


@app.command()
def validate(
    sample: Path = typer.Argument(..., help="Sample folder (or its sample.toml)."),
    registration: Path = typer.Option(..., help="Folder written by `mineral3d register`."),
    segmentation: Path = typer.Option(..., help="segmentation.zarr (its phases array is used) or a phase volume."),
    out_dir: Path = typer.Option(..., "--out", help="Folder for validation.json and the CSV tables."),
    model_dir: Optional[Path] = typer.Option(None, "--model", help="The model: adds its grey-value baseline."),
    sections: Optional[str] = typer.Option(None, help="Comma-separated sections [default: validation-role]."),
) -> None:
    """Score a phase segmentation against held-out mineral maps, on the CT voxel grid."""
    from mineral3d.baseline import GreyClassifier
    from mineral3d.io import open_sample
    from mineral3d.io.volumes import open_volume
    from mineral3d.nn import load_model
    from mineral3d.pipeline.validation import validate_sample, write_validation

    s = open_sample(sample)
    seg_path = segmentation / "phases" if (segmentation / "phases" / "zarr.json").exists() else segmentation
    seg, _ = open_volume(seg_path, name="phase volume", labels=True)
    if tuple(seg.shape) != tuple(s.ct().shape):
        raise InputError(seg_path, f"shape {tuple(seg.shape)} differs from the CT's {tuple(s.ct().shape)}")
    names = [n.strip() for n in sections.split(",")] if sections else None
    for n in names or []:
        s.config.section(n)
    baseline = None
    if model_dir is not None:
        m = load_model(model_dir)
        if "baseline" in m.info:
            baseline = GreyClassifier.from_dict(m.info["baseline"])
    result = validate_sample(s, registration, seg, sections=names, baseline=baseline)
    write_validation(out_dir, result)
    table = Table("phase", "IoU", "Dice", "map %", "predicted %", *(["baseline IoU"] if baseline else []),
                  *(["ceiling IoU", "truth IoU"] if "ceiling" in result["all"] else []),
                  title=f"Validation on {', '.join(result['sections'])} ({result['all']['voxels']} voxels)",
                  title_justify="left")
    a = result["all"]

    def f(v):
        return "-" if v is None else f"{v:.3f}"

    for ph, sc in a["voxel_grid"]["per_phase"].items():
        row = [ph, f(sc["iou"]), f(sc["dice"]), f(100 * sc["reference_fraction"]), f(100 * sc["predicted_fraction"])]
        for k in ["baseline"] * bool(baseline) + ["ceiling", "truth_volume"] * ("ceiling" in a):
            row.append(f(a[k]["voxel_grid"]["per_phase"][ph]["iou"]))
        table.add_row(*row)
    out.print(table)
    out.print(f"wrote {out_dir}/validation.json")


@app.command("config")
def config_cmd(
    defaults: bool = typer.Option(False, "--defaults", help="Print the default settings of `mineral3d run`."),
    file: Optional[Path] = typer.Option(None, "--check", help="Validate a config file and print it in full."),
) -> None:
    """Print the settings of `mineral3d run` as JSON (edit and pass back with --config)."""
    from mineral3d.pipeline.run import RunConfig, load_config

    if not defaults and file is None:
        raise InputError("config", "give --defaults or --check FILE")
    cfg = RunConfig() if defaults else load_config(file)
    print(json.dumps(cfg.to_dict(), indent=2))


def _run(sample: Path, out_dir: Path, cfg, model: Path | None, scheduler: str | None = None,
         workers: int | None = None) -> None:
    from mineral3d.cluster import open_scheduler
    from mineral3d.nn.runtime import resolve_device
    from mineral3d.pipeline.run import open_run
    from mineral3d.pipeline.run import run as run_pipeline

    resolve_device(cfg.device)
    with open_scheduler(scheduler, workers) as sched, _progress() as p:
        ctx = open_run(sample, out_dir, config=cfg, model=model, progress=_StageProgress(p),
                       log=lambda m: err.print(m), scheduler=sched)
        timings = run_pipeline(ctx)
    total = sum(t["seconds"] for t in timings.values())
    out.print(f"done in {total:.0f} s; report: {out_dir / 'report.html'}")


def _settings(config_file: Path | None, *, device=None, seed=None, iterations=None, allow_resample=None):
    """The run settings: defaults, then the config file, then command-line overrides."""
    import dataclasses

    from mineral3d.pipeline.run import load_config

    cfg = load_config(config_file)
    if device is not None:
        cfg = dataclasses.replace(cfg, device=device)
    if seed is not None:
        cfg = dataclasses.replace(cfg, seed=seed)
    if iterations is not None:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, iterations=iterations))
    if allow_resample is not None:
        cfg = dataclasses.replace(cfg, segment=dataclasses.replace(cfg.segment, allow_resample=allow_resample))
    return cfg


@app.command("run")
def run_cmd(
    sample: Path = typer.Argument(..., help="Sample folder (or its sample.toml)."),
    out_dir: Path = typer.Option(..., "--out", help="Output folder (a rerun resumes and skips finished steps)."),
    config_file: Optional[Path] = typer.Option(None, "--config", help="JSON settings (see `mineral3d config "
                                                                      "--defaults`)."),
    model: Optional[Path] = typer.Option(None, help="Use this model instead of training one."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda or auto (overrides the config)."),
    seed: Optional[int] = typer.Option(None, help="Random seed (overrides the config)."),
    iterations: Optional[int] = typer.Option(None, help="Training iterations (overrides the config)."),
    scheduler: Optional[str] = SCHEDULER_OPTION,
    workers: Optional[int] = WORKERS_OPTION,
) -> None:
    """Everything: register, train, segment phases and particles, measure, validate, report."""
    if model is not None:
        from mineral3d.nn import load_model

        load_model(model)  # a bad model folder fails before any work
    _run(sample, out_dir, _settings(config_file, device=device, seed=seed, iterations=iterations), model,
         scheduler, workers)


@app.command("apply")
def apply_cmd(
    model: Path = typer.Argument(..., help="Model folder (from `mineral3d train` or a run's OUT/model)."),
    sample: Path = typer.Argument(..., help="Sample folder (it needs no sections: another size fraction), or a "
                                            "bare CT volume (TIFF, slice folder, Zarr) with --voxel-um."),
    out_dir: Path = typer.Option(..., "--out", help="Output folder."),
    config_file: Optional[Path] = typer.Option(None, "--config", help="JSON settings."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda or auto."),
    voxel_um: Optional[float] = typer.Option(None, help="Voxel size of a bare CT volume, µm [default: recorded in "
                                                        "a Zarr CT]."),
    allow_resample: bool = typer.Option(True, "--allow-resample/--no-resample",
                                        help="Resample when the sample's voxel size differs from the model's."),
    scheduler: Optional[str] = SCHEDULER_OPTION,
    workers: Optional[int] = WORKERS_OPTION,
) -> None:
    """Segment, measure and report a sample or a bare CT with a trained model (no training).

    A TIFF CT is converted to OME-Zarr in OUT/sample/ct.zarr first (once); every volume
    step then works block by block, so memory stays bounded whatever the volume size.
    """
    from mineral3d.nn import load_model

    m = load_model(model)  # a bad model folder fails before any work
    if not ((sample / "sample.toml").exists() or sample.name == "sample.toml"):
        sample = _bare_ct_sample(sample, out_dir, m, voxel_um)
    _run(sample, out_dir, _settings(config_file, device=device, allow_resample=allow_resample), model,
         scheduler, workers)


def _bare_ct_sample(ct: Path, out_dir: Path, model, voxel_um: float | None) -> Path:
    """Write ``OUT/sample`` (sample.toml + phases.csv) around a bare CT: phase table from the model.

    A TIFF stack or slice folder is converted once to ``OUT/sample/ct.zarr`` (a slab of
    pages at a time, never the whole volume); a rerun with the same source file reuses it.
    """
    from mineral3d.io.atomic import write_text
    from mineral3d.io.sample import sample_toml_text
    from mineral3d.io.volumes import open_volume
    from mineral3d.io.zarr_io import convert_to_zarr, zarr_attrs

    if not ct.exists():
        raise InputError(ct, "file not found")
    if model.phase_table is None or model.phase_table.target is None:
        raise InputError(ct, "the model records no phase table with a target: apply it to a sample folder")
    folder = out_dir / "sample"
    if (ct / "zarr.json").exists():
        _, recorded = open_volume(ct, name="CT volume")  # validates the file before any work
        voxel = voxel_um or recorded
        if voxel is None or not voxel > 0:
            raise InputError(ct, "a bare CT volume needs its voxel size: give --voxel-um")
        ct_path = ct.resolve()
    else:
        if voxel_um is None or not voxel_um > 0:
            raise InputError(ct, "a bare CT volume needs its voxel size: give --voxel-um")
        voxel, ct_path = voxel_um, folder / "ct.zarr"
        st = ct.stat()
        source = f"{ct.resolve()}|{st.st_size}|{st.st_mtime_ns}|{voxel}"
        if not ((ct_path / "zarr.json").exists() and zarr_attrs(ct_path).get("converted_from") == source):
            with _progress() as p:
                task = p.add_task(f"converting {ct.name} to Zarr", total=1)
                convert_to_zarr(ct, ct_path, voxel_size_um=voxel, overwrite=True, attrs={"converted_from": source},
                                progress=lambda d, n: p.update(task, completed=d, total=n))
    files = {"phases.csv": model.phase_table.to_csv_text(),
             "sample.toml": sample_toml_text(name=ct.stem, voxel_size_um=voxel, target=model.phase_table.target,
                                             sections=[], ct_path=str(Path(ct_path).resolve()))}
    for name, text in files.items():
        path = folder / name
        if not (path.is_file() and path.read_text(encoding="utf-8") == text):  # unchanged: a rerun does no work
            write_text(path, text)
    return folder


@app.command("report")
def report_cmd(
    out_dir: Path = typer.Argument(..., help="A run's output folder."),
    sample: Optional[Path] = typer.Option(None, help="The sample folder of that run (default: the one the run "
                                                     "records in OUT/sample.json)."),
) -> None:
    """(Re)build OUT/report.html from a run's outputs."""
    from mineral3d.io import atomic_file, open_sample
    from mineral3d.pipeline.run import recorded_sample
    from mineral3d.report import build_report

    if not (out_dir / "summary.json").exists():
        raise InputError(out_dir / "summary.json", "file not found: run `mineral3d run` first")
    s = open_sample(sample) if sample is not None else recorded_sample(out_dir, need="the report")
    html_text = build_report(out_dir, s)
    with atomic_file(out_dir / "report.html") as tmp:
        tmp.write_text(html_text, encoding="utf-8")
    out.print(f"wrote {out_dir / 'report.html'}")


@app.command()
def convert(
    source: Path = typer.Argument(..., help="A CT volume: multi-page TIFF or a folder of TIFF slices."),
    out_dir: Path = typer.Option(..., "--out", help="OME-Zarr group to write (e.g. ct.zarr)."),
    voxel_um: float = typer.Option(..., help="Voxel size, µm."),
    chunk: int = typer.Option(64, help="Chunk edge along z (pages read at a time); y and x chunks are 2x that."),
    overwrite: bool = typer.Option(False, help="Replace an existing output."),
) -> None:
    """Convert a TIFF CT to chunked OME-Zarr once, a slab of pages at a time (never the whole volume)."""
    from mineral3d.io.zarr_io import convert_to_zarr

    if out_dir.exists() and not overwrite:
        raise InputError(out_dir, "already exists: choose another --out or give --overwrite")
    with _progress() as p:
        task = p.add_task("converting to Zarr", total=1)
        convert_to_zarr(source, out_dir, voxel_size_um=voxel_um, chunks=(chunk, 2 * chunk, 2 * chunk),
                        overwrite=overwrite, progress=lambda d, n: p.update(task, completed=d, total=n))
    out.print(f"wrote {out_dir}")


@app.command("import-map")
def import_map(
    source: Path = typer.Argument(..., help="A TIMA MinDif export folder, or a map image (RGB or indexed)."),
    out_dir: Path = typer.Option(..., "--out", help="Map folder to write (map.tif, phases.csv, measured.tif, "
                                                    "bse.tif, map.toml)."),
    legend: Optional[Path] = typer.Option(None, help="Legend CSV for a map image: name and id and/or color."),
    grouping: Optional[Path] = typer.Option(None, help="CSV phase,group[,color]: group the phases on import."),
    pixel_um: Optional[float] = typer.Option(None, help="Pixel size, µm [default: from the export's metadata]."),
    background: Optional[str] = typer.Option(None, help="Legend name of the resin/background entry."),
    unclassified: Optional[str] = typer.Option(None, help="Legend name of the unclassified entry."),
    measured: Optional[Path] = typer.Option(None, help="Image of the measured area (non-zero = measured)."),
    overwrite: bool = typer.Option(False, help="Replace an existing map folder."),
) -> None:
    """Import an automated-mineralogy map (TIMA MinDif, or an MLA/QEMSCAN-style image + legend)."""
    from mineral3d.grouping import PhaseGrouping
    from mineral3d.io.mineral_maps import read_legend_map, read_tima_mindif, write_mineral_map

    if out_dir.exists() and not overwrite:
        raise InputError(out_dir, "already exists: choose another --out or give --overwrite")
    if source.is_dir():
        with err.status("stitching TIMA fields"):
            m = read_tima_mindif(source)
    else:
        if legend is None:
            raise InputError(source, "a map image needs --legend (CSV with name and id and/or color)")
        m = read_legend_map(source, legend, pixel_size_um=pixel_um, background=background,
                            unclassified=unclassified, measured=measured)
    if pixel_um is not None:
        from dataclasses import replace

        m = replace(m, pixel_size_um=pixel_um)
    if grouping is not None:
        m = m.grouped(PhaseGrouping.from_csv(grouping))
    write_mineral_map(out_dir, m, overwrite=overwrite)
    n = len([p for p in m.phase_table.phases if p.id not in (0, 255)])
    px = "unknown pixel size" if m.pixel_size_um is None else f"{m.pixel_size_um:g} µm/px"
    out.print(f"{m.ids.shape[0]}x{m.ids.shape[1]} px, {px}, {n} phases, "
              f"{100 * m.measured.mean():.1f}% measured -> {out_dir}")


@app.command("measure-map")
def measure_map_cmd(
    source: Path = typer.Argument(..., help="A map folder (from import-map), or a map image with --phases."),
    out_dir: Path = typer.Option(..., "--out", help="Output folder."),
    target: Optional[str] = typer.Option(None, help="Target phase [default: the phase table's target]."),
    phases: Optional[Path] = typer.Option(None, help="phases.csv for a bare map image."),
    pixel_um: Optional[float] = typer.Option(None, help="Pixel size, µm [default: from the map folder]."),
    measured: Optional[Path] = typer.Option(None, help="Image of the measured area, for a bare map image."),
    grouping: Optional[Path] = typer.Option(None, help="CSV phase,group[,color] applied before measuring."),
    min_section_px: Optional[int] = typer.Option(None, help="Smallest particle section, pixels [default: an "
                                                             "equivalent circle of 3 pixels, i.e. 8]."),
) -> None:
    """2D characterization of a mineral map: particle sections, modal mineralogy, liberation."""
    from mineral3d.grouping import PhaseGrouping
    from mineral3d.io.mineral_maps import read_mineral_map
    from mineral3d.pipeline.map_measure import measure_map, write_map_measurements

    m = read_mineral_map(source, phases=phases, pixel_size_um=pixel_um, measured=measured)
    if grouping is not None:
        m = m.grouped(PhaseGrouping.from_csv(grouping))
    if target is not None and target not in m.phase_table.names:
        raise InputError("--target", f"phase {target!r} is not in the map's phase table")
    with err.status("measuring particle sections"):
        result = measure_map(m, target=target, min_size_px=min_section_px)
    write_map_measurements(out_dir, m, result)
    s = result["summary"]
    out.print(f"{s['sections']} particle sections ({s['sections_cut']} cut by the measured area's edge), "
              f"{s['specks']['count']} specks below {s['specks']['min_section_px']} px")
    modal = result["modal"]
    top = modal[modal["id"] != 255].head(5)
    out.print("modal (% of classified): " + ", ".join(f"{r.phase} {r.percent_of_classified:.1f}"
                                                      for r in top.itertuples()))
    line = "  ".join(f"L({t})={v:.3f}" for t, v in s["liberation_2d"].items() if v is not None)
    out.print(f"{s['target_phase']}: {s['target_area_percent']:.2f}% of section material; 2D liberation {line}")
    out.print(f"wrote {out_dir}")


@app.command("kernel")
def kernel_cmd(
    run_out: Optional[Path] = typer.Argument(None, help="A run/apply output folder (segmentation.zarr with phases "
                                                        "and particles, particles.csv, summary.json)."),
    out_dir: Path = typer.Option(..., "--out", help="Kernel folder to write (kernel.json)."),
    phases: Optional[Path] = typer.Option(None, help="Instead of RUN_OUT: a phase-id volume (e.g. truth/phases.tif)."),
    particles: Optional[Path] = typer.Option(None, help="Instead of RUN_OUT: a particle-label volume."),
    sample: Optional[Path] = typer.Option(None, help="Sample folder: phase table, target and voxel size."),
    directions: int = typer.Option(32, help="Random plane orientations."),
    seed: int = typer.Option(0, help="Seed of the orientations and plane offsets."),
) -> None:
    """Measure the 3D -> 2D liberation kernel of a 3D result (random virtual sections of its particles)."""
    import zarr

    from mineral3d.io import open_sample
    from mineral3d.io.atomic import read_json
    from mineral3d.io.volumes import read_any_volume
    from mineral3d.measure.particles import particle_table
    from mineral3d.phases import PhaseTable
    from mineral3d.pipeline.kernel import kernel_from_volumes, write_kernel
    from mineral3d.pipeline.measure import check_volumes

    s = open_sample(sample) if sample is not None else None
    if run_out is not None:
        group = run_out / "segmentation.zarr"
        for name in ("phases", "particles"):
            if not (group / name / "zarr.json").exists():
                raise InputError(group / name, "not found: give a run/apply output folder")
        summary = read_json(run_out / "summary.json")
        ph = zarr.open_array(store=str(group / "phases"), mode="r")[...]
        lab = zarr.open_array(store=str(group / "particles"), mode="r")[...]
        if s is not None:
            table = s.phase_table
        else:
            from mineral3d.pipeline.run import SAMPLE_RECORD

            record = run_out / SAMPLE_RECORD
            text = (read_json(record).get("phase_table") if record.is_file() else None) or \
                zarr.open_group(store=str(group), mode="r").attrs.get("mineral3d", {}).get("phase_table")
            if not text:
                raise InputError(group, "no phase table recorded: give --sample")
            table = PhaseTable.from_text(text, source=str(group))
        target = summary.get("target_phase") or table.target
        table = table.with_target(target)
        voxel = float(summary.get("voxel_size_um") or (s.voxel_size_um if s else 0))
        import pandas as pd

        try:
            parts = pd.read_csv(run_out / "particles.csv")
        except FileNotFoundError:
            raise InputError(run_out / "particles.csv", "file not found: run the measure step first") from None
        source = str(run_out)
    else:
        if phases is None or particles is None or s is None:
            raise InputError("kernel", "give RUN_OUT, or --phases, --particles and --sample")
        ph, _ = read_any_volume(phases, name="phase volume", labels=True)
        lab, _ = read_any_volume(particles, name="particle volume", labels=True)
        table, voxel = s.phase_table, s.voxel_size_um
        check_volumes(lab, ph, table, labels_src=str(particles), phases_src=str(phases))
        with err.status("measuring particles"):
            parts = particle_table(lab, ph, voxel_size_um=voxel, phase_table=table, calipers=False, exposure=False)
        target = table.target
        source = f"{phases} + {particles}"
    with err.status(f"cutting particles along {directions} random directions"):
        k = kernel_from_volumes(lab, ph, parts, target=target, target_id=table.target_id, voxel_size_um=voxel,
                                n_directions=directions, seed=seed, source=source)
    write_kernel(out_dir, k)
    p = k.provenance
    out.print(f"kernel of {target}: {p['particles']} particles, {p['sections']} sections "
              f"({directions} directions, planes every {p['spacing_vox']:.1f} voxels) -> {out_dir}")


@app.command()
def correct(
    kernel_dir: Path = typer.Argument(..., help="Kernel folder from `mineral3d kernel`."),
    out_dir: Path = typer.Option(..., "--out", help="Output folder (corrected.json)."),
    maps: Optional[list[Path]] = typer.Option(None, "--maps", help="Mineral maps (repeat the option): map folders "
                                                                    "from import-map, map images, or sample folders "
                                                                    "(all their sections)."),
    phase_table: Optional[Path] = typer.Option(None, help="phases.csv of bare map images."),
    pixel_um: Optional[float] = typer.Option(None, help="Pixel size of bare map images, µm."),
    liberation_2d: Optional[Path] = typer.Option(None, help="Instead of maps: a liberation.csv from "
                                                             "`mineral3d measure`."),
    method: Optional[str] = typer.Option(None, help="Rows of liberation.csv to use [default: 2d-map, else "
                                                    "2d-virtual]."),
    boot: int = typer.Option(500, help="Bootstrap resamples for the 95% intervals."),
    seed: int = typer.Option(0, help="Seed of the bootstrap and of the cross-validation."),
) -> None:
    """Estimate 3D liberation from 2D data with a measured kernel (regularised non-negative inversion)."""
    from mineral3d.io import open_sample
    from mineral3d.io.mineral_maps import read_mineral_map
    from mineral3d.measure.sections2d import maps_population
    from mineral3d.pipeline.kernel import correction, population_from_liberation_csv, read_kernel, write_correction

    k = read_kernel(kernel_dir)
    target = k.provenance.get("target")
    if (maps is None) == (liberation_2d is None):
        raise InputError("correct", "give --maps (one or more) or --liberation-2d, not both")
    if liberation_2d is not None:
        pop, used = population_from_liberation_csv(liberation_2d, method=method)
        source = f"{liberation_2d} ({used})"
    else:
        items = []
        for m in maps:
            if (m / "sample.toml").exists():
                s = open_sample(m)
                items += [(s.section_map(c.name), c.pixel_size_um, s.phase_table, f"{m}:{c.name}", None)
                          for c in s.config.sections]
            else:
                mm = read_mineral_map(m, phases=phase_table, pixel_size_um=pixel_um)
                if mm.pixel_size_um is None:
                    raise InputError(m, "the pixel size is unknown: give --pixel-um")
                items.append((mm.ids, mm.pixel_size_um, mm.phase_table, str(m), mm.measured))
        for _, _, table, name, _ in items:
            if target not in table.names:
                raise InputError(name, f"the kernel's target {target!r} is not in this map's phase table")
        pop = maps_population((ids, px, table.id_of(target), measured) for ids, px, table, _, measured in items)
        source = ", ".join(map(str, maps))
    with err.status("inverting"):
        r = correction(k, pop, n_boot=boot, seed=seed, source=source)
    write_correction(out_dir, r)
    for t in ("0.8", "0.9", "0.95"):
        lo, hi = r["ci95"][t]
        out.print(f"L({t}): 2D {r['liberation_2d'][t]:.3f} -> corrected 3D {r['liberation_3d_corrected'][t]:.3f} "
                  f"(95% interval {lo:.3f}-{hi:.3f})")
    out.print(f"{r['n_sections']} sections, lambda {r['lambda']:g}; wrote {out_dir / 'corrected.json'}")


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user errors become one line on stderr and exit code 2."""
    from mineral3d.errors import MineralError, OutOfMemory

    try:
        app(args=argv)
    except MineralError as exc:  # InputError (2), RegistrationError (3), OutOfMemory (1)
        print(f"error: {exc.prefix}{exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except MemoryError:
        exc = OutOfMemory(None)
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()

"""Commands of the phase path: register the sections, train a phase model, segment a volume."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from mineral3d.cli.app import SCHEDULER_OPTION, WORKERS_OPTION, StageProgress, err, out, parse_ints, progress_bars
from mineral3d.cli.particles import separate_and_write
from mineral3d.errors import InputError


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
    from mineral3d.io.atomic import read_json, write_json
    from mineral3d.pipeline.registration import register_sections
    from mineral3d.register import RegisterConfig, RegistrationError

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
    with err.status("registering " + ", ".join(names)):
        record, results = register_sections(s, out_dir, config, names=names)
    # registration.json: this call's sections updated in the folder's record (the same file `run` writes)
    index = out_dir / "registration.json"
    merged = read_json(index) if index.exists() else {"sections": {}}
    merged["sections"].update(record["sections"])
    write_json(index, merged)
    failed = []
    for name, rec in record["sections"].items():
        if not rec["registered"]:
            failed.append(f"{name}: {rec['reason']}")
            err.print(f"[red]{name}: not registered[/]: {rec['reason']}")
            continue
        r = results[name]
        t = r.transform
        out.print(f"{name}: score {r.score:.3f} (runner-up {r.runner_up:.3f}), tilt {t.tilt_deg:.2f} deg, "
                  f"scale {t.scale / s.nominal_scale(name):.4f} x nominal{', mirrored' if r.mirrored else ''}")
    if failed:
        raise RegistrationError("; ".join(failed))


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
    corrections: Optional[Path] = typer.Option(None, help="Phase ids painted in `mineral3d view` (a corrections."
                                                          "zarr): learnt with the sections, weighing 2x."),
    init: Optional[Path] = typer.Option(None, help="With --corrections: fine-tune this model (e.g. OUT/model) "
                                                   "instead of training from random weights."),
) -> None:
    """Train a 3D phase CNN on the registered sections (loss only on the voxels they label).

    Checkpoints go beside the model folder; rerunning an interrupted command resumes.
    """
    from mineral3d.io import open_sample
    from mineral3d.nn import TrainConfig
    from mineral3d.pipeline.segment_phases import train_on_sections

    if out_dir.exists() and not force:
        raise InputError(out_dir, "already exists (use --force to replace it)")
    s = open_sample(sample)
    names = [n.strip() for n in sections.split(",")] if sections else None
    for n in names or []:
        s.config.section(n)
    config = TrainConfig(iterations=iterations, seed=seed, precision=precision,
                         **({} if class_weight is None else {"class_weight": class_weight}))
    feats = parse_ints(features, "--features") if features else None

    def announce(labels, used):
        out.print(f"training on {len(labels)} labelled voxels of sections {', '.join(used)}: "
                  + ", ".join(f"{s.phase_table.name_of(k)} {v}" for k, v in sorted(labels.counts().items())))

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn(), TextColumn("eta"),
                  TimeRemainingColumn(), console=err, disable=not err.is_terminal) as p:
        task = p.add_task("training", total=iterations, loss=float("nan"))
        if init is not None:
            if corrections is None:
                raise InputError(init, "--init fine-tunes on --corrections: give them")
            import dataclasses

            from mineral3d.pipeline.segment_phases import finetune_on_corrections

            config = dataclasses.replace(config, learning_rate=1e-3, warmup=min(20, iterations))  # as run's `correct`

            model = finetune_on_corrections(s, registration, init, corrections, out_dir,
                                            sections=names or [c.name for c in s.config.sections
                                                               if c.role == "train"],
                                            config=config, device=device,
                                            progress=lambda i, n, loss: p.update(task, completed=i, loss=loss))
        else:
            model = train_on_sections(s, registration, out_dir, sections=names, config=config, features=feats,
                                      calibrate=not no_calibrate, device=device, announce=announce, overwrite=force,
                                      progress=lambda i, n, loss: p.update(task, completed=i, loss=loss),
                                      corrections=corrections)
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
    tta: str = typer.Option("none", help="Test-time mirroring: none (1 pass), flips (4: as is and flipped "
                                         "along z, y, x; phase IoU about +0.01) or all-flips (8)."),
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
    from mineral3d.pipeline.segment_phases import check_model, segment_phases

    model = load_model(model_dir)
    vol, voxel, table, sample = _open_input(source, voxel_um)
    zoom = check_model(model, voxel_size_um=voxel, phase_table=table, allow_resample=allow_resample,
                       source=str(source), ct=vol)
    from mineral3d.nn.infer import check_tta

    config = InferConfig(block=parse_ints(block, "--block"), precision=precision,
                         tta=check_tta(tta, "--tta", "--tta"))
    from mineral3d.cluster import open_scheduler

    ct_path = sample.config.ct if sample is not None else source
    with open_scheduler(scheduler, workers) as sched:
        with progress_bars() as p:
            prog = StageProgress(p)
            r = segment_phases(vol, voxel_size_um=voxel, model=model, out=out_dir / "segmentation.zarr",
                               config=config, device=device, probabilities=probabilities, zoom=zoom,
                               progress=lambda d, n: prog("segmenting blocks", d, n), scheduler=sched,
                               volume_path=ct_path)
        out.print(f"wrote {r.path}/phases ({r.blocks} blocks" + (f", {r.resumed_blocks} resumed"
                                                                 if r.resumed_blocks else "")
                  + (f", resampled x{zoom:.3f}" if zoom != 1 else "") + ")")
        if particles:
            separate_and_write(r.path, voxel, sample.config.sieve_um if sample else None, min_diameter_um, 0.7, sched)

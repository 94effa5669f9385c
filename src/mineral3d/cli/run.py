"""The whole pipeline: `run`, `apply` (a trained model on a new CT), `report` and `config`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from mineral3d.cli.app import SCHEDULER_OPTION, WORKERS_OPTION, StageProgress, err, out, progress_bars
from mineral3d.errors import InputError


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
         workers: int | None = None, corrections: Path | None = None) -> None:
    from mineral3d.cluster import open_scheduler
    from mineral3d.nn.runtime import resolve_device
    from mineral3d.pipeline.run import open_run
    from mineral3d.pipeline.run import run as run_pipeline

    resolve_device(cfg.device)
    with open_scheduler(scheduler, workers) as sched, progress_bars() as p:
        ctx = open_run(sample, out_dir, config=cfg, model=model, progress=StageProgress(p),
                       log=lambda m: err.print(m), scheduler=sched, corrections=corrections)
        timings = run_pipeline(ctx)
    total = sum(t["seconds"] for t in timings.values())
    out.print(f"done in {total:.0f} s; report: {out_dir / 'report.html'}")


def _settings(config_file: Path | None, *, device=None, seed=None, iterations=None, allow_resample=None,
              tta=None):
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
    if tta is not None:
        cfg = dataclasses.replace(cfg, segment=dataclasses.replace(cfg.segment, tta=tta))
    return cfg


TTA_OPTION = typer.Option(None, help="Test-time mirroring of the phase network: none, flips (4 passes; phase IoU "
                                     "about +0.01) or all-flips (8) (overrides the config).")


def run_cmd(
    sample: Path = typer.Argument(..., help="Sample folder (or its sample.toml)."),
    out_dir: Path = typer.Option(..., "--out", help="Output folder (a rerun resumes and skips finished steps)."),
    config_file: Optional[Path] = typer.Option(None, "--config", help="JSON settings (see `mineral3d config "
                                                                      "--defaults`)."),
    model: Optional[Path] = typer.Option(None, help="Use this model instead of training one."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda or auto (overrides the config)."),
    seed: Optional[int] = typer.Option(None, help="Random seed (overrides the config)."),
    iterations: Optional[int] = typer.Option(None, help="Training iterations (overrides the config)."),
    tta: Optional[str] = TTA_OPTION,
    scheduler: Optional[str] = SCHEDULER_OPTION,
    workers: Optional[int] = WORKERS_OPTION,
    corrections: Optional[Path] = typer.Option(None, help="Phase ids painted in `mineral3d view` (OUT/corrections."
                                                          "zarr): fine-tune the model on the sections plus these, "
                                                          "then redo the steps after training."),
) -> None:
    """Everything: register, train, segment phases and particles, measure, validate, report."""
    if model is not None:
        from mineral3d.nn import load_model

        load_model(model)  # a bad model folder fails before any work
    if corrections is not None:
        from mineral3d.io.corrections import read_corrections

        read_corrections(corrections)  # nothing saved there: fail before any work
    _run(sample, out_dir, _settings(config_file, device=device, seed=seed, iterations=iterations, tta=tta), model,
         scheduler, workers, corrections)


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
    tta: Optional[str] = TTA_OPTION,
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
    _run(sample, out_dir, _settings(config_file, device=device, allow_resample=allow_resample, tta=tta), model,
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
            with progress_bars() as p:
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


def report_cmd(
    out_dir: Path = typer.Argument(..., help="A run's output folder."),
    sample: Optional[Path] = typer.Option(None, help="The sample folder of that run (default: the one the run "
                                                     "records in OUT/sample.json)."),
) -> None:
    """(Re)build OUT/report.html from a run's outputs."""
    from mineral3d.io import atomic_file, open_sample
    from mineral3d.io.layout import RunLayout
    from mineral3d.pipeline.run import recorded_sample
    from mineral3d.report import build_report

    layout = RunLayout(out_dir)
    if not layout.done("measure"):
        raise InputError(layout.summary, "file not found: run `mineral3d run` first")
    s = open_sample(sample) if sample is not None else recorded_sample(out_dir, need="the report")
    html_text = build_report(out_dir, s)
    with atomic_file(layout.report) as tmp:
        tmp.write_text(html_text, encoding="utf-8")
    out.print(f"wrote {layout.report}")

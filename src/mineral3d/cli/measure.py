"""Commands that measure: particles and liberation, a single mineral map, the validation sections."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from mineral3d.cli.app import err, out
from mineral3d.errors import InputError


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
    from mineral3d.phase_table import PhaseTable
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


def validate(
    sample: Path = typer.Argument(..., help="Sample folder (or its sample.toml), or a run output folder: its "
                                            "recorded sample, registration, segmentation and model are used."),
    registration: Optional[Path] = typer.Option(None, help="Folder written by `mineral3d register` [default: a "
                                                           "run output's]."),
    segmentation: Optional[Path] = typer.Option(None, help="segmentation.zarr (its phases array is used) or a phase "
                                                           "volume [default: a run output's]."),
    out_dir: Path = typer.Option(..., "--out", help="Folder for validation.json and the CSV tables."),
    model_dir: Optional[Path] = typer.Option(None, "--model", help="The model: adds its grey-value baseline "
                                                                   "[default: a run output's]."),
    sections: Optional[str] = typer.Option(None, help="Comma-separated sections [default: validation-role]."),
) -> None:
    """Score a phase segmentation against held-out mineral maps, on the CT voxel grid."""
    from mineral3d.baseline import GreyClassifier
    from mineral3d.io import open_sample
    from mineral3d.io.layout import RunLayout
    from mineral3d.io.volumes import open_volume
    from mineral3d.nn import load_model
    from mineral3d.pipeline.run import recorded_sample
    from mineral3d.pipeline.validation import validate_sample, write_validation

    layout = RunLayout(sample)
    if layout.sample_record.is_file() and not (sample / "sample.toml").is_file():  # a run output
        s = recorded_sample(sample, need="validate")
        registration = registration or layout.registration
        segmentation = segmentation or layout.segmentation
        model_dir = model_dir or (layout.segmenting_model() if layout.done("train") else None)
    else:
        s = open_sample(sample)
        if registration is None or segmentation is None:
            raise InputError(sample, "give --registration and --segmentation (or a run output folder instead of "
                                     "the sample)")
    seg_path = segmentation / "phases" if (segmentation / "phases" / "zarr.json").exists() else segmentation
    seg, _ = open_volume(seg_path, name="phase volume", labels=True)
    if tuple(seg.shape) != tuple(s.ct().shape):
        raise InputError(seg_path, f"shape {tuple(seg.shape)} differs from the CT's {tuple(s.ct().shape)}")
    names = [n.strip() for n in sections.split(",")] if sections else None
    for n in names or []:
        s.config.section(n)
    baseline, trend = None, False
    if model_dir is not None:
        m = load_model(model_dir)
        trend = m.levels.trend is not None
        if "baseline" in m.info:
            baseline = GreyClassifier.from_dict(m.info["baseline"])
    result = validate_sample(s, registration, seg, sections=names, baseline=baseline, trend=trend)
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

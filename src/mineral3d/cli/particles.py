"""`mineral3d particles`: separate the particles of a phase volume (or of a CT through a model)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mineral3d.cli.app import StageProgress, err, out, progress_bars
from mineral3d.errors import InputError


def separate_and_write(group: Path, voxel: float, sieve, min_diameter_um, neck_ratio, scheduler=None) -> None:
    """Separate the particles of the phase volume in segmentation group ``group`` and write them beside it."""
    from mineral3d.pipeline.particles import segment_particles
    from mineral3d.separation import InstanceConfig

    config = InstanceConfig.for_sample(voxel_size_um=voxel, sieve_um=sieve, min_diameter_um=min_diameter_um,
                                       neck_ratio=neck_ratio)
    with progress_bars() as p:
        n = segment_particles(group, config, progress=StageProgress(p), scheduler=scheduler)
    out.print(f"wrote {group}/particles ({n} particles; markers {config.marker_radius:.1f} voxels, "
              f"fragments < {config.min_voxels} voxels merged, neck ratio {config.neck_ratio:g})")


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
        from mineral3d.io.layout import RunLayout
        from mineral3d.pipeline.run import recorded_sample

        if sample is None and RunLayout(source.parent).sample_record.is_file():  # a run's own segmentation
            sample = recorded_sample(source.parent, need="the particle size").root
        if sample is not None:
            s = open_sample(sample)
            voxel, sieve = s.voxel_size_um, s.config.sieve_um
        if voxel <= 0:
            raise InputError(source / "phases", "no voxel size recorded: give --sample")
        separate_and_write(source, voxel, sieve, min_diameter_um, neck_ratio)
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
        from mineral3d.pipeline.segment_phases import check_model, segment_phases

        model = load_model(model_dir)
        if model.phase_table is None:
            raise InputError(model_dir, "the model records no phase table: retrain it with this version")
        zoom = check_model(model, voxel_size_um=voxel, phase_table=None, allow_resample=True, source=str(source),
                           ct=ct)
        with progress_bars() as p:
            task = p.add_task("segmenting phases", total=1)
            segment_phases(ct, voxel_size_um=voxel, model=model, out=out_dir / "segmentation.zarr", device=device,
                           zoom=zoom,
                           progress=lambda d, n: p.update(task, completed=d, total=n))
        phases = zarr.open_array(store=str(out_dir / "segmentation.zarr" / "phases"), mode="r")[...]
        table = model.phase_table
    with progress_bars() as p:
        summary = particles_from_ct(ct, out_dir, voxel_size_um=voxel, sieve_um=sieve,
                                    min_diameter_um=min_diameter_um, neck_ratio=neck_ratio, phases=phases,
                                    phase_table=table, progress=StageProgress(p))
    share = summary["largest_share_of_volume"]
    out.print(f"{summary['particles']} particles ({summary['particles_inside']} not touching the border); "
              f"D10/D50/D90 {summary['D10_um']:.1f}/{summary['D50_um']:.1f}/{summary['D90_um']:.1f} µm; "
              f"largest holds {100 * (share or 0):.1f}% of the particle volume")
    out.print(f"wrote {out_dir} (particles.csv, size_distribution.csv, particles_slices.png)")

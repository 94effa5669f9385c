"""Commands of the 2D -> 3D correction: measure the kernel, correct a 2D liberation."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mineral3d.cli.app import err, out
from mineral3d.errors import InputError


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
    from mineral3d.io.layout import RunLayout, is_zarr
    from mineral3d.io.volumes import read_any_volume
    from mineral3d.measure.particles import particle_table
    from mineral3d.phase_table import PhaseTable
    from mineral3d.pipeline.kernel import kernel_from_volumes, write_kernel
    from mineral3d.pipeline.measure import check_volumes

    s = open_sample(sample) if sample is not None else None
    if run_out is not None:
        layout = RunLayout(run_out)
        group = layout.segmentation
        for path in (layout.phases, layout.particle_labels):
            if not is_zarr(path):
                raise InputError(path, "not found: give a run/apply output folder")
        summary = read_json(layout.summary)
        ph = zarr.open_array(store=str(layout.phases), mode="r")[...]
        lab = zarr.open_array(store=str(layout.particle_labels), mode="r")[...]
        if s is not None:
            table = s.phase_table
        else:
            record = layout.sample_record
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
            parts = pd.read_csv(layout.particles_csv)
        except FileNotFoundError:
            raise InputError(layout.particles_csv, "file not found: run the measure step first") from None
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

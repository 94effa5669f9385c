"""Commands on sample folders: generate, inspect, convert and import."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from mineral3d.cli.app import StageProgress, err, out, progress_bars
from mineral3d.errors import InputError


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
    with progress_bars() as p:
        g = generate_sample(out_dir, config, overwrite=force, progress=StageProgress(p))
    out.print(f"wrote {out_dir}: {len(g.particles)} particles, CT {'x'.join(map(str, g.ct.shape))} at "
              f"{config.voxel_size_um:g} µm, {len(g.sections)} sections")


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
    with progress_bars() as p:
        task = p.add_task("converting to Zarr", total=1)
        convert_to_zarr(source, out_dir, voxel_size_um=voxel_um, chunks=(chunk, 2 * chunk, 2 * chunk),
                        overwrite=overwrite, progress=lambda d, n: p.update(task, completed=d, total=n))
    out.print(f"wrote {out_dir}")


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

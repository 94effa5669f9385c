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
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
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
    force: bool = typer.Option(False, "--force", help="Replace OUT if it exists."),
) -> None:
    """Generate a synthetic correlative slag sample (CT, mineral maps, BSE, ground truth)."""
    from mineral3d.phantom import PhantomConfig, generate_sample

    config = PhantomConfig(fraction=fraction, seed=seed, shape=shape, voxel_um=voxel_um, sections=sections,
                           map_format=map_format)
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


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user errors become one line on stderr and exit code 2."""
    try:
        app(args=argv)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except MemoryError:
        print("error: out of memory", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()

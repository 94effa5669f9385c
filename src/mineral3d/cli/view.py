"""Commands to look at a result and decide what to add: view (napari), suggest-section."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mineral3d.cli.app import out
from mineral3d.errors import InputError


def view(
    run_out: Path = typer.Argument(..., help="A run/apply output folder."),
    sample: Optional[Path] = typer.Option(None, help="Sample folder (default: the one the run recorded)."),
    ndisplay: int = typer.Option(2, "--ndisplay", min=2, max=3, help="Open in 2D slices or 3D rendering."),
) -> None:
    """Open the run in napari: CT, phases, particles (table on hover), sections on their planes, and a
    corrections layer to paint phase ids on (Shift-S or the button saves to OUT/corrections.zarr)."""
    import os
    import sys

    from mineral3d.io import open_sample
    from mineral3d.io.layout import RunLayout
    from mineral3d.pipeline.run import recorded_sample

    if not RunLayout(run_out).sample_record.is_file():
        raise InputError(run_out, "not a mineral3d run output (no sample.json): give the folder `run --out` wrote")
    s = open_sample(sample) if sample is not None else recorded_sample(run_out, need="view")
    try:
        import napari
    except ImportError:
        raise InputError("view", "napari is not installed: `pip install 'mineral3d[view]'` "
                                 "(make install does)") from None
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
                                                 or os.environ.get("QT_QPA_PLATFORM")):
        raise InputError("view", "no display (DISPLAY is not set): run it on a desktop, over `ssh -X`, or under "
                                 "`xvfb-run mineral3d view ...`")  # Qt would abort the process without one
    from mineral3d.viewer.app import SAVE_KEY, open_viewer

    try:
        open_viewer(run_out, sample=s, show=True, ndisplay=ndisplay)
    except RuntimeError as exc:
        raise InputError("view", f"cannot open a window ({exc}); set DISPLAY or run under xvfb-run") from None
    out.print(f"paint on the 'corrections' layer, then {SAVE_KEY} to save to {Path(run_out) / 'corrections.zarr'}; "
              f"then `mineral3d run SAMPLE --out {run_out} --corrections {Path(run_out) / 'corrections.zarr'}`")
    napari.run()


def suggest_section(
    run_out: Path = typer.Argument(..., help="A run output folder (its model, sample and registration)."),
    count: int = typer.Option(3, "--count", min=1, help="Planes to suggest."),
    normal: str = typer.Option("z", "--normal", help="Axis the sections are perpendicular to: z (a mount polished "
                                                     "along z), y or x."),
    min_gap_um: Optional[float] = typer.Option(None, "--min-gap-um", help="Least distance between suggestions and "
                                                                          "from a section already cut, µm "
                                                                          "[default: half the sieve's lower size]."),
    model: Optional[Path] = typer.Option(None, help="Model [default: the run's own, fine-tuned one if any]."),
    device: str = typer.Option("auto", help="cpu, cuda or auto."),
) -> None:
    """Where to cut (grind to) the next SEM section: the planes where the model is least sure about the target.

    Writes OUT/suggest/ (suggestions.csv, plane_scores.csv, suggestions.png, uncertainty for `view`) and
    rebuilds the report, which then shows the suggestions.
    """
    from mineral3d.cli.app import progress_bars
    from mineral3d.pipeline.run import recorded_sample
    from mineral3d.pipeline.suggest import default_min_gap, suggest_sections
    from mineral3d.report import build_report
    from mineral3d.suggest import SuggestConfig

    s = recorded_sample(run_out, need="suggest-section")
    gap = default_min_gap(s) if min_gap_um is None else max(1, int(round(min_gap_um / s.voxel_size_um)))
    with progress_bars() as p:
        task = p.add_task("class probabilities", total=None)
        rec = suggest_sections(run_out, sample=s, model_dir=model, axis=normal, device=device,
                               config=SuggestConfig(count=count, min_gap=gap),
                               progress=lambda d, n: p.update(task, completed=d, total=n))
    from mineral3d.io.atomic import atomic_file
    from mineral3d.io.layout import RunLayout

    layout = RunLayout(run_out)
    if layout.summary.is_file():
        html = build_report(run_out, s)
        with atomic_file(layout.report) as tmp:
            tmp.write_text(html, encoding="utf-8")
    taken = rec["sections"]
    for r in rec["suggestions"]:
        beyond = r["beyond_last_um"]
        out.print(f"#{r['rank']}: {normal} = {r['position_um']:.0f} µm (plane {r['position_voxel']}), "
                  f"{100 * r['share']:.0f}% of the useful uncertainty"
                  + (f"; {beyond:+.0f} µm from the last section" if taken else ""))
    out.print(f"wrote {layout.suggestions}")

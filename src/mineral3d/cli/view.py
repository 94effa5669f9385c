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
    from mineral3d.io import open_sample

    try:
        import napari
    except ImportError:
        raise InputError("view", "napari is not installed: `pip install 'mineral3d[view]'` "
                                 "(make install does)") from None
    from mineral3d.viewer.app import SAVE_KEY, open_viewer

    s = open_sample(sample) if sample is not None else None
    try:
        open_viewer(run_out, sample=s, show=True, ndisplay=ndisplay)
    except RuntimeError as exc:  # Qt without a display
        raise InputError("view", f"cannot open a window ({exc}); set DISPLAY or run under xvfb-run") from None
    out.print(f"paint on the 'corrections' layer, then {SAVE_KEY} to save to {Path(run_out) / 'corrections.zarr'}; "
              f"then `mineral3d run SAMPLE --out {run_out} --corrections {Path(run_out) / 'corrections.zarr'}`")
    napari.run()

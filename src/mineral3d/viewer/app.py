"""`mineral3d view`: a napari viewer on a run output, with a corrections layer to paint and save.

napari (and its Qt binding) is imported here only, so the rest of mineral3d imports
without a display. Saving corrections: the "Save corrections" button docked on the right,
or Shift-S in the viewer; each save appends a round to ``OUT/corrections.zarr``
(:mod:`mineral3d.io.corrections`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mineral3d.io.corrections import save_corrections
from mineral3d.io.layout import RunLayout
from mineral3d.viewer.layers import CORRECTIONS, run_layers

__all__ = ["open_viewer", "save_layer"]

SAVE_KEY = "Shift-S"


def add_layers(viewer, layers: list[tuple]) -> list:
    """Add layer-data tuples to a napari viewer; returns the layers."""
    from napari.utils.colormaps import DirectLabelColormap

    added = []
    for data, kw, kind in layers:
        kw = dict(kw)
        if kind == "labels" and isinstance(kw.get("colormap"), dict):
            kw["colormap"] = DirectLabelColormap(color_dict=kw["colormap"])
        added.append(getattr(viewer, f"add_{kind}")(data, **kw))
    return added


def save_layer(layer, *, voxel_size_um: float | None = None):
    """Append the corrections layer's painted voxels to its store (the layer's ``metadata['store']``)."""
    store = layer.metadata["store"]
    return save_corrections(store, np.asarray(layer.data), voxel_size_um=voxel_size_um,
                            note="saved from mineral3d view")


def open_viewer(out: str | os.PathLike, *, sample=None, show: bool = True, ndisplay: int = 2):
    """A napari viewer with the run's layers (see :func:`mineral3d.viewer.layers.run_layers`).

    Returns the viewer; with ``show`` the window is shown (``napari.run()`` is the caller's).
    """
    import napari

    layout = RunLayout(Path(out))
    layers = run_layers(layout.root, sample=sample)
    viewer = napari.Viewer(title=f"mineral3d: {layout.root}", show=show, ndisplay=ndisplay)
    add_layers(viewer, layers)
    overlays = getattr(getattr(viewer, "canvas", None), "overlays", None)  # napari >= 0.9; before: viewer.scale_bar
    (overlays.scale_bar if overlays is not None else viewer.scale_bar).visible = True
    if "particles" in viewer.layers:  # outlines over the phases; selected, so hovering shows the particle's row
        viewer.layers["particles"].contour = 1
        viewer.layers.selection.active = viewer.layers["particles"]
    corrections = viewer.layers[CORRECTIONS]
    corrections.mode = "pan_zoom"
    voxel = corrections.metadata.get("voxel_size_um")

    def save(_viewer=None):
        r = save_layer(corrections, voxel_size_um=voxel)
        viewer.status = ("corrections unchanged: nothing saved" if r is None
                         else f"saved corrections round {r.round}: {len(r)} voxels in {layout.corrections}")
        return r

    viewer.bind_key(SAVE_KEY, save, overwrite=True)
    try:
        from qtpy.QtWidgets import QPushButton

        button = QPushButton(f"Save corrections ({SAVE_KEY})")
        button.clicked.connect(lambda *_: save())
        viewer.window.add_dock_widget(button, name="corrections", area="right")
    except Exception:  # no Qt widgets (headless without a window): the key binding remains
        pass
    viewer.dims.current_step = tuple(s // 2 for s in viewer.dims.nsteps)
    viewer.reset_view()
    return viewer

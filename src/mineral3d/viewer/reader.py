"""napari reader contribution (``napari.yaml``): File > Open of a mineral3d run folder."""

from __future__ import annotations

from pathlib import Path

__all__ = ["get_reader"]


def get_reader(path):
    """The reader of ``path`` when it is a run output folder (holds ``sample.json``), else None."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    p = Path(path)
    if not (p.is_dir() and (p / "sample.json").is_file() and (p / "config.json").is_file()):
        return None
    return read_run


def read_run(path):
    """The run's layers as napari layer-data tuples (:func:`mineral3d.viewer.layers.run_layers`)."""
    from mineral3d.viewer.layers import run_layers

    if isinstance(path, list):
        path = path[0]
    return run_layers(path)

"""Volumes as Zarr v3 with OME-Zarr (0.5) multiscales metadata.

A volume is written as a Zarr group whose ``ome.multiscales`` names the levels
(``"0"`` full resolution, ``"1"`` 2x down, ...) with their voxel size in µm; the
voxel size of level 0 is also stored as ``mineral3d.voxel_size_um``. Label volumes
are downsampled by taking every second voxel, grey volumes by 2x2x2 means.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import zarr

from mineral3d.errors import InputError
from mineral3d.io.atomic import atomic_dir

_AXES = [{"name": a, "type": "space", "unit": "micrometer"} for a in ("z", "y", "x")]


def _downsample(a: np.ndarray, labels: bool) -> np.ndarray:
    if labels:
        return a[::2, ::2, ::2]
    z, y, x = (s // 2 * 2 for s in a.shape)
    b = a[:z, :y, :x].astype(np.float32).reshape(z // 2, 2, y // 2, 2, x // 2, 2).mean(axis=(1, 3, 5))
    return b.astype(a.dtype) if a.dtype.kind == "f" else np.rint(b).astype(a.dtype)


def write_volume_zarr(path: str | os.PathLike, volume: np.ndarray, *, voxel_size_um: float,
                      chunks=(64, 64, 64), levels: int = 1, labels: bool = False,
                      overwrite: bool = False, attrs: dict | None = None) -> Path:
    """Write a (Z, Y, X) volume as an OME-Zarr style multiscale group, atomically.

    Parameters
    ----------
    path : path-like
        The group folder to create (e.g. ``seg.zarr/phases``).
    volume : (Z, Y, X) ndarray
    voxel_size_um : float
        Voxel edge length of level 0, µm.
    chunks : tuple of int
        Chunk shape, voxels.
    levels : int
        Number of pyramid levels (each 2x coarser).
    labels : bool
        Label volume (downsampled by striding) rather than grey values (by mean).
    attrs : dict, optional
        Extra attributes stored under ``mineral3d``.
    """
    if voxel_size_um <= 0:
        raise InputError(path, f"voxel size must be positive, got {voxel_size_um}")
    path = Path(path)
    datasets, level_arrays = [], [np.asarray(volume)]
    for _ in range(1, levels):
        if min(level_arrays[-1].shape) < 4:
            break
        level_arrays.append(_downsample(level_arrays[-1], labels))
    with atomic_dir(path, overwrite=overwrite) as tmp:
        group = zarr.open_group(store=str(tmp), mode="w", zarr_format=3)
        for i, arr in enumerate(level_arrays):
            a = group.create_array(str(i), shape=arr.shape, dtype=arr.dtype,
                                   chunks=tuple(min(c, s) for c, s in zip(chunks, arr.shape)))
            a[...] = arr
            datasets.append({"path": str(i), "coordinateTransformations": [
                {"type": "scale", "scale": [voxel_size_um * 2 ** i] * 3}]})
        meta = {"voxel_size_um": float(voxel_size_um), "labels": bool(labels)}
        meta.update(attrs or {})
        group.attrs.update({"ome": {"version": "0.5", "multiscales": [
            {"name": path.stem, "axes": _AXES, "datasets": datasets}]}, "mineral3d": meta})
    return path


def read_volume_zarr(path: str | os.PathLike, *, level: int = 0) -> tuple[zarr.Array, float]:
    """Open a volume written by :func:`write_volume_zarr` (or a bare 3D Zarr array).

    Returns
    -------
    array : zarr.Array
        Lazy (Z, Y, X) array; index it (``a[...]``) to read.
    voxel_size_um : float
        Voxel size of the returned level, µm.
    """
    path = Path(path)
    if not (path / "zarr.json").exists():
        raise InputError(path, "not a Zarr v3 array or group (no zarr.json)")
    try:
        node = zarr.open(store=str(path), mode="r")
    except Exception as exc:
        raise InputError(path, f"cannot open Zarr ({str(exc).splitlines()[0]})") from None
    attrs = dict(node.attrs)
    if isinstance(node, zarr.Group):
        try:
            ms = attrs["ome"]["multiscales"][0]
            ds = ms["datasets"][level]
        except (KeyError, IndexError, TypeError):
            raise InputError(path, f"Zarr group has no OME multiscales level {level}") from None
        scale = [t for t in ds.get("coordinateTransformations", []) if t.get("type") == "scale"]
        arr = node[ds["path"]]
        voxel = float(scale[0]["scale"][-1]) if scale else float(attrs.get("mineral3d", {}).get("voxel_size_um", 0))
    else:
        arr = node
        voxel = float(attrs.get("voxel_size_um", attrs.get("mineral3d", {}).get("voxel_size_um", 0)) or 0)
    if arr.ndim != 3:
        raise InputError(path, f"expected a 3D volume, got shape {arr.shape}")
    if voxel <= 0:
        raise InputError(path, "no positive voxel size in the Zarr metadata")
    return arr, voxel


def zarr_attrs(path: str | os.PathLike) -> dict:
    """The ``mineral3d`` attributes of a volume group."""
    meta = json.loads((Path(path) / "zarr.json").read_text())
    return meta.get("attributes", {}).get("mineral3d", {})

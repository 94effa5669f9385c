"""Volumes as Zarr v3 with OME-Zarr (0.5) multiscales metadata.

A volume is written as a Zarr group whose ``ome.multiscales`` names the levels
(``"0"`` full resolution, ``"1"`` 2x down, ...) with their voxel size in µm; the
voxel size of level 0 is also stored as ``mineral3d.voxel_size_um``. Label volumes
are downsampled by taking every second voxel, grey volumes by 2x2x2 means.
"""

from __future__ import annotations

import contextlib
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


def _slab_reader(path: Path, name: str):
    """(shape, dtype, read(z0, z1), close) of a TIFF stack or slice folder, reading only the pages asked for."""
    import tifffile

    from mineral3d.io.images import _TIFF_SUFFIXES, VOLUME_DTYPES, _imread

    if not path.exists():
        raise InputError(path, "file not found")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in _TIFF_SUFFIXES)
        if not files:
            raise InputError(path, f"the {name} folder holds no .tif/.tiff slices")
        first = _imread(files[0])
        shape, dtype = (len(files),) + first.shape, first.dtype

        def read(z0, z1):
            out = np.empty((z1 - z0,) + shape[1:], dtype)
            for i, f in enumerate(files[z0:z1]):
                s = _imread(f)
                if s.shape != shape[1:] or s.dtype != dtype:
                    raise InputError(f, f"slice shape/dtype {s.shape} {s.dtype} differs from the first slice "
                                        f"{shape[1:]} {dtype}")
                out[i] = s
            return out

        def close():
            return None
    else:
        try:
            tif = tifffile.TiffFile(path)
        except Exception as exc:  # tifffile raises many types for damaged files
            raise InputError(path, f"cannot read TIFF ({str(exc).splitlines()[0]})") from None
        series = tif.series[0]
        shape, dtype = tuple(series.shape), series.dtype
        pages = series.pages

        def read(z0, z1):
            try:
                return np.stack([pages[i].asarray() for i in range(z0, z1)])
            except Exception as exc:
                raise InputError(path, f"the TIFF is truncated or damaged at pages {z0}-{z1} "
                                       f"({str(exc).splitlines()[0]})") from None

        close = tif.close
    if len(shape) != 3:
        close()
        raise InputError(path, f"the {name} must be 3D (z, y, x), got shape {shape}")
    if dtype not in VOLUME_DTYPES:
        close()
        raise InputError(path, f"unsupported {name} dtype {dtype}: use uint8, uint16 or float32")
    return shape, np.dtype(dtype), read, close


class _Closer:
    def __init__(self, fn) -> None:
        self.close = fn


def convert_to_zarr(src: str | os.PathLike, out: str | os.PathLike, *, voxel_size_um: float,
                    chunks=(64, 128, 128), overwrite: bool = False, progress=None, name: str = "CT volume",
                    attrs: dict | None = None) -> Path:
    """Convert a TIFF stack or slice folder to an OME-Zarr volume, ``chunks[0]`` pages at a time.

    Memory is bounded by one slab of ``chunks[0]`` pages, whatever the volume size; the
    group appears only when complete. ``progress(done_pages, total_pages)`` is called per slab.
    """
    src, out = Path(src), Path(out)
    if voxel_size_um is None or not voxel_size_um > 0:
        raise InputError(src, f"a positive voxel size is needed, got {voxel_size_um}")
    shape, dtype, read, close = _slab_reader(src, name)
    cz = max(1, int(chunks[0]))
    with contextlib.closing(_Closer(close)), atomic_dir(out, overwrite=overwrite) as tmp:
        group = zarr.open_group(store=str(tmp), mode="w", zarr_format=3)
        arr = group.create_array("0", shape=shape, dtype=dtype,
                                 chunks=tuple(min(c, s) for c, s in zip(chunks, shape)))
        for z0 in range(0, shape[0], cz):
            z1 = min(z0 + cz, shape[0])
            arr[z0:z1] = read(z0, z1)
            if progress is not None:
                progress(z1, shape[0])
        group.attrs.update({"ome": {"version": "0.5", "multiscales": [
            {"name": out.stem, "axes": _AXES, "datasets": [{"path": "0", "coordinateTransformations": [
                {"type": "scale", "scale": [float(voxel_size_um)] * 3}]}]}]},
            "mineral3d": {"voxel_size_um": float(voxel_size_um), "labels": False, "source": os.fspath(src),
                          **(attrs or {})}})
    return out

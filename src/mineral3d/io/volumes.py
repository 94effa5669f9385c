"""Reading a label or grey volume from TIFF or Zarr, whichever the path is."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mineral3d.errors import InputError
from mineral3d.io.images import LABEL_DTYPES, VOLUME_DTYPES, read_volume
from mineral3d.io.zarr_io import read_volume_zarr


def read_any_volume(path: str | os.PathLike, *, name: str = "volume",
                    labels: bool = False) -> tuple[np.ndarray, float | None]:
    """A (Z, Y, X) volume from a TIFF file, a folder of TIFF slices or a Zarr array/group.

    Returns the array (in memory) and the voxel size in µm when the file records one.
    """
    vol, voxel = open_volume(path, name=name, labels=labels)
    return np.asarray(vol[...]), voxel


def open_volume(path: str | os.PathLike, *, name: str = "CT volume", labels: bool = False):
    """A (Z, Y, X) volume opened lazily where the format allows it.

    Zarr arrays stay on disk (read chunk by chunk when sliced); an uncompressed TIFF is
    memory-mapped; compressed TIFFs and slice folders are read into memory.

    Returns
    -------
    volume : array-like
        Sliceable like an ndarray (``volume[z0:z1]`` returns an ndarray).
    voxel_size_um : float or None
        From the Zarr metadata, when recorded.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    dtypes = LABEL_DTYPES if labels else VOLUME_DTYPES
    if (path / "zarr.json").exists():
        try:
            arr, voxel = read_volume_zarr(path)
        except InputError as exc:
            if "voxel size" not in exc.problem:
                raise
            import zarr

            arr, voxel = zarr.open_array(store=str(path), mode="r"), None
        if arr.ndim != 3:
            raise InputError(path, f"the {name} must be 3D (z, y, x), got shape {arr.shape}")
        if np.dtype(arr.dtype) not in [np.dtype(d) for d in dtypes]:
            raise InputError(path, f"unsupported {name} dtype {arr.dtype}")
        return arr, voxel
    if path.is_file():
        import tifffile

        try:
            mm = tifffile.memmap(path, mode="r")
        except Exception:  # compressed, tiled or not memory-mappable: read it
            mm = None
        if mm is not None and mm.ndim == 3 and mm.dtype in dtypes and min(mm.shape) >= 2:
            return mm, None
    return read_volume(path, name=name, dtypes=dtypes), None


@dataclass(frozen=True)
class VolumeRef:
    """A volume that a task (maybe in another process or machine) opens itself.

    ``path`` (Zarr, TIFF: anything :func:`open_volume` reads; ``writable``: a Zarr array
    opened for writing) travels as a string; an ``array`` (ndarray, or any sliceable
    object) travels whole, so it suits this process and small tests only.
    """

    path: str | None = None
    array: object = None
    labels: bool = True
    writable: bool = False

    def open(self):
        if self.array is not None:
            return self.array
        if self.writable:
            import zarr

            return zarr.open_array(store=self.path, mode="r+")
        vol, _ = open_volume(self.path, name="volume", labels=self.labels)
        return vol

    @classmethod
    def of(cls, volume, path=None, *, labels: bool = True) -> VolumeRef:
        """A reference to ``path`` when given (or ``volume`` is a path), else to the array itself."""
        if path is not None:
            return cls(path=os.fspath(path), labels=labels)
        if isinstance(volume, (str, os.PathLike)):
            return cls(path=os.fspath(volume), labels=labels)
        return cls(array=volume, labels=labels)


def take_voxels(volume, flat_index: np.ndarray) -> np.ndarray:
    """Values of ``volume`` at C-order flat indices: fancy indexing in memory, coordinate reads on Zarr."""
    if isinstance(volume, np.ndarray):
        return volume.reshape(-1)[flat_index]
    zyx = np.unravel_index(np.asarray(flat_index), tuple(volume.shape))
    if hasattr(volume, "vindex"):
        return np.asarray(volume.vindex[zyx])
    return np.asarray(volume[...]).reshape(-1)[flat_index]


def block_means(volume, factor: int, *, slab: int = 64) -> np.ndarray:
    """Means of ``factor``³ voxel blocks of a (Z, Y, X) volume, float32, read ``slab`` slices at a time.

    The volume (ndarray, memory map or Zarr) is trimmed to a multiple of ``factor`` on each
    axis, as the 2x-mean levels of :func:`~mineral3d.io.zarr_io.write_volume_zarr` are:
    block k is centred on voxel ``factor * k + (factor - 1) / 2``. Memory: the output plus
    one slab.
    """
    f = int(factor)
    z, y, x = (int(s) // f * f for s in volume.shape)
    out = np.empty((z // f, y // f, x // f), np.float32)
    step = max(f, slab // f * f)
    for z0 in range(0, z, step):
        raw = np.asarray(volume[z0:min(z, z0 + step), :y, :x])
        for k in range(0, raw.shape[0], f):
            part = raw[k:k + f].astype(np.float32).reshape(1, f, y // f, f, x // f, f)
            out[(z0 + k) // f] = part.mean(axis=(1, 3, 5))[0]
    return out

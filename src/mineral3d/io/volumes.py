"""Reading a label or grey volume from TIFF or Zarr, whichever the path is."""

from __future__ import annotations

import os
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
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    if (path / "zarr.json").exists():
        try:
            arr, voxel = read_volume_zarr(path)
        except InputError as exc:
            if "voxel size" not in exc.problem:
                raise
            import zarr

            arr, voxel = zarr.open_array(store=str(path), mode="r"), None
        return np.asarray(arr[...]), voxel
    return read_volume(path, name=name, dtypes=LABEL_DTYPES if labels else VOLUME_DTYPES), None

"""TIFF volumes and images: reading with validation, writing atomically."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np
import tifffile

from mineral3d.errors import InputError
from mineral3d.io.atomic import atomic_file

VOLUME_DTYPES = (np.uint8, np.uint16, np.float32)
_TIFF_SUFFIXES = (".tif", ".tiff")


class _TiffLog(logging.Handler):
    """Collects tifffile's logged errors (it logs, not raises, on a cut IFD chain)."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _imread(path: Path) -> np.ndarray:
    if not path.exists():
        raise InputError(path, "file not found")
    if path.is_dir():
        raise InputError(path, "is a folder, expected a TIFF file")
    log = _TiffLog()
    logger = logging.getLogger("tifffile")
    logger.addHandler(log)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # tifffile warns (and returns zeros) on truncated data
            with tifffile.TiffFile(path) as tif:
                data = tif.asarray()
                size = path.stat().st_size
                end = max((int(o) + int(n) for p in tif.pages for o, n in zip(p.dataoffsets, p.databytecounts)),
                          default=0)
    except Exception as exc:  # tifffile raises many types for damaged files
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(path, f"cannot read TIFF, the file is damaged or truncated ({msg})") from None
    finally:
        logger.removeHandler(log)
    if log.messages or end > size:
        why = log.messages[0] if log.messages else f"image data runs to byte {end} of a {size}-byte file"
        raise InputError(path, f"the TIFF file is truncated or damaged ({why.splitlines()[0]})")
    return data


LABEL_DTYPES = (np.uint8, np.uint16, np.uint32, np.uint64, np.int8, np.int16, np.int32, np.int64)


def read_volume(path: str | os.PathLike, *, name: str = "CT volume", dtypes=VOLUME_DTYPES) -> np.ndarray:
    """Read a 3D volume (z, y, x) from a multi-page TIFF or a folder of 2D TIFF slices.

    Slices in a folder are taken in sorted file-name order. Allowed dtypes: uint8, uint16,
    float32.

    Raises
    ------
    InputError
        Missing file, not 3D, unsupported dtype, slices of unequal shape, damaged TIFF.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in _TIFF_SUFFIXES)
        if not files:
            raise InputError(path, f"the {name} folder holds no .tif/.tiff slices")
        slices = []
        for f in files:
            s = _imread(f)
            if s.ndim != 2:
                raise InputError(f, f"a slice of the {name} must be 2D, got shape {s.shape}")
            if slices and (s.shape != slices[0].shape or s.dtype != slices[0].dtype):
                raise InputError(f, f"slice shape/dtype {s.shape} {s.dtype} differs from the first slice "
                                 f"{slices[0].shape} {slices[0].dtype}")
            slices.append(s)
        vol = np.stack(slices)
        src = path
    else:
        vol = _imread(path)
        src = path
    if vol.ndim != 3:
        raise InputError(src, f"the {name} must be 3D (z, y, x), got a {vol.ndim}D array of shape {vol.shape}")
    if vol.dtype not in dtypes:
        allowed = ", ".join(str(np.dtype(d)) for d in dtypes)
        raise InputError(src, f"unsupported {name} dtype {vol.dtype}: use {allowed}")
    if min(vol.shape) < 2:
        raise InputError(src, f"the {name} is too small: shape {vol.shape}")
    return vol


def read_image(path: str | os.PathLike, *, name: str = "image") -> np.ndarray:
    """Read a 2D image (or a 2D RGB image) from a TIFF file."""
    path = Path(path)
    img = _imread(path)
    if img.ndim == 3 and img.shape[-1] in (3, 4):
        return img
    if img.ndim != 2:
        raise InputError(path, f"the {name} must be a 2D image, got an array of shape {img.shape}")
    return img


def write_tiff(path: str | os.PathLike, array: np.ndarray, *, rgb: bool = False, compress: bool = False) -> None:
    """Write an array as (multi-page) TIFF, atomically, without timestamps (byte-reproducible).

    ``compress`` uses lossless zlib (deflate), worthwhile for label images and maps.
    """
    array = np.ascontiguousarray(array)
    with atomic_file(path) as tmp:
        tifffile.imwrite(tmp, array, photometric="rgb" if rgb else "minisblack", metadata=None,
                         compression="zlib" if compress else None)

"""User corrections painted on a run's volume: ``OUT/corrections.zarr``.

A correction is a phase id (of the run's phase table) painted on CT voxels in the
viewer; 0 would be resin, so "no correction" is stored as absent, not as a value. Each
save appends a *round*: a Zarr group ``round-NNNN`` holding the flat (C-order) indices
of the painted voxels (``index``, int64, sorted) and their phase ids (``label``, uint8),
with the volume shape and the save time as attributes. A round holds everything painted
at that moment (the viewer starts from the latest round), so the latest round is the
current state and the earlier ones are history; nothing is ever overwritten.

A round is written under a temporary name and renamed when complete: a crash while
saving leaves the previous rounds as they were and no half round that looks finished.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mineral3d.errors import InputError
from mineral3d.io.atomic import atomic_dir

__all__ = ["Corrections", "save_corrections", "read_corrections", "correction_rounds"]

_PREFIX = "round-"


@dataclass(frozen=True)
class Corrections:
    """Painted voxels of a (Z, Y, X) volume (one round).

    Attributes
    ----------
    shape : tuple of int
        Volume shape, voxels.
    index : (N,) int64 ndarray
        Flat C-order indices, sorted, unique.
    label : (N,) uint8 ndarray
        Phase id painted on each voxel.
    round : int
        Round number (1 = first save).
    """

    shape: tuple[int, int, int]
    index: np.ndarray
    label: np.ndarray
    round: int = 0

    def __len__(self) -> int:
        return int(self.index.size)

    def to_dense(self) -> np.ndarray:
        """(Z, Y, X) uint8 volume: painted ids, 0 elsewhere."""
        out = np.zeros(self.shape, np.uint8)
        out.reshape(-1)[self.index] = self.label
        return out

    def counts(self) -> dict[int, int]:
        ids, n = np.unique(self.label, return_counts=True)
        return {int(i): int(c) for i, c in zip(ids, n)}


def correction_rounds(path: str | os.PathLike) -> list[Path]:
    """The complete rounds of a corrections store, oldest first (empty when there is none)."""
    path = Path(path)
    if not path.is_dir():
        return []
    return sorted(p for p in path.iterdir() if p.name.startswith(_PREFIX) and (p / "zarr.json").is_file()
                  and p.name[len(_PREFIX):].isdigit())


def save_corrections(path: str | os.PathLike, painted: np.ndarray, *, voxel_size_um: float | None = None,
                     note: str = "") -> Corrections | None:
    """Append the non-zero voxels of ``painted`` as a new round; None when nothing is painted
    or when nothing changed since the latest round.

    Parameters
    ----------
    path : path
        The store, e.g. ``OUT/corrections.zarr`` (created when missing).
    painted : (Z, Y, X) integer ndarray
        Phase ids painted by the user (0: not painted).
    voxel_size_um : float, optional
        Recorded with the round.
    """
    import zarr

    painted = np.asarray(painted)
    if painted.ndim != 3:
        raise InputError(path, f"corrections must be a 3D volume, got shape {painted.shape}")
    if painted.size and (painted.min() < 0 or painted.max() > 254):
        raise InputError(path, "corrections must hold phase ids 1-254 (0: not painted)")
    index = np.flatnonzero(painted.reshape(-1)).astype(np.int64)
    label = painted.reshape(-1)[index].astype(np.uint8)
    path = Path(path)
    rounds = correction_rounds(path)
    if rounds:
        last = read_corrections(path)
        if last.shape == painted.shape and np.array_equal(last.index, index) and np.array_equal(last.label, label):
            return None
    elif index.size == 0:
        return None
    n = int(rounds[-1].name[len(_PREFIX):]) + 1 if rounds else 1
    if not (path / "zarr.json").is_file():
        zarr.open_group(store=str(path), mode="a", zarr_format=3).attrs.update(
            {"mineral3d": {"corrections": 1, "doc": "rounds of painted phase ids; the latest is the current state"}})
    with atomic_dir(path / f"{_PREFIX}{n:04d}") as tmp:
        g = zarr.open_group(store=str(tmp), mode="w", zarr_format=3)
        chunk = max(1, min(len(index), 1 << 20))
        g.create_array("index", data=index, chunks=(chunk,))
        g.create_array("label", data=label, chunks=(chunk,))
        g.attrs.update({"shape": list(painted.shape), "round": n, "saved": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                        "voxels": int(index.size), "voxel_size_um": voxel_size_um, "note": note})
    return Corrections(tuple(painted.shape), index, label, n)


def read_corrections(path: str | os.PathLike, *, shape=None) -> Corrections:
    """The latest round of a corrections store.

    Parameters
    ----------
    shape : tuple of int, optional
        The CT's shape: a store painted on another volume is refused.
    """
    import zarr

    path = Path(path)
    rounds = correction_rounds(path)
    if not rounds:
        raise InputError(path, "no saved corrections here (paint in `mineral3d view` and save first)")
    g = zarr.open_group(store=str(rounds[-1]), mode="r")
    stored = tuple(int(s) for s in g.attrs["shape"])
    if shape is not None and tuple(int(s) for s in shape) != stored:
        raise InputError(path, f"corrections were painted on a {stored} volume, this CT is {tuple(shape)}")
    index = np.asarray(g["index"][...], np.int64)
    label = np.asarray(g["label"][...], np.uint8)
    return Corrections(stored, index, label, int(g.attrs["round"]))

"""The particle table of volumes larger than memory: per-slab partial sums, reduced exactly.

A slab of z-layers ``[z0, z1)`` is read with one layer of context on each side (its own
array reads: Zarr or memory-mapped TIFF, nothing else is loaded) and gives, per particle
id: voxel count, coordinate sums, bounding box, phase voxel counts, surface area and
per-phase surface (from the 2x2x2 cubes whose lower layer is in the slab, so every cube is
counted once) and the hull-candidate voxels for the calipers. Sums add, boxes take
min/max, candidates concatenate: the reduction is exact, so the table equals
:func:`~mineral3d.measure.particles.particle_table` of the whole volume (integer columns
exactly, floating sums to rounding). Particle ids are the volume's own (global) ids.

Slabs are scheduled with dask: ``scheduler`` is ``"threads"``, ``"processes"``,
``"synchronous"``, the address of a running ``dask.distributed`` scheduler
(``"tcp://host:8786"``), or a ``distributed.Client``. Peak memory is a few slabs, not the
volume (plus the per-particle sums: about 2 kB per particle).
"""

from __future__ import annotations

import os

import cc3d
import numpy as np
import pandas as pd

from mineral3d.cluster import compute
from mineral3d.io.volumes import VolumeRef
from mineral3d.measure.particles import _hull_candidates, assemble_table, caliper_widths_of_points, phase_counts
from mineral3d.measure.surface import label_surfaces
from mineral3d.phase_table import PhaseTable


def _max_label(labels: VolumeRef, z0: int, z1: int) -> int:
    return int(np.asarray(labels.open()[z0:z1]).max(initial=0))


def slab_partials(labels: VolumeRef, phases: VolumeRef, z0: int, z1: int, n_labels: int, *,
                  exposure: bool = True, calipers: bool = True) -> dict:
    """Per-label partial sums of the slab ``[z0, z1)`` (see the module docstring)."""
    lab_all, ph_all = labels.open(), phases.open()
    depth = lab_all.shape[0]
    a, b = max(z0 - 1, 0), min(z1 + 1, depth)
    lab = np.asarray(lab_all[a:b]).astype(np.uint32, copy=False)
    ph = np.asarray(ph_all[a:b], np.uint8)
    core = slice(z0 - a, z1 - a)
    lc = np.ascontiguousarray(lab[core])
    stats = cc3d.statistics(lc)
    m = min(len(stats["voxel_counts"]), n_labels)
    counts = np.zeros(n_labels, np.int64)
    counts[:m] = stats["voxel_counts"][:m]
    csum = np.zeros((n_labels, 3))
    csum[:m] = np.nan_to_num(np.asarray(stats["centroids"][:m], float)) * counts[:m, None]
    csum[:m, 0] += z0 * counts[:m]
    lo = np.full((n_labels, 3), np.iinfo(np.int64).max, np.int64)
    hi = np.full((n_labels, 3), -1, np.int64)
    present = np.flatnonzero(counts[:m])
    for i in present:  # one slice triple per label present in the slab
        bb = stats["bounding_boxes"][i]
        lo[i] = (bb[0].start + z0, bb[1].start, bb[2].start)
        hi[i] = (bb[0].stop + z0, bb[1].stop, bb[2].stop)
    pc = phase_counts(lc, np.ascontiguousarray(ph[core]), n_labels, threads=1)
    # cubes whose lower layer lies in [z0, z1): layers z0 .. min(z1, depth - 1)
    top = min(z1 + 1, depth) - a
    area, exp = label_surfaces(np.ascontiguousarray(lab[z0 - a:top]),
                               np.ascontiguousarray(ph[z0 - a:top]) if exposure else None,
                               n_labels=n_labels, threads=1)
    # only the rows of labels in the slab's layers travel (a slab holds few of the volume's particles)
    rows = np.unique(lab[z0 - a:top]).astype(np.int64)
    rows = rows[rows < n_labels]
    out = {"rows": rows, "counts": counts[rows], "csum": csum[rows], "lo": lo[rows], "hi": hi[rows], "pc": pc[rows],
           "area": area[rows], "exp": None if exp is None else exp[rows]}
    if calipers:
        cand = _hull_candidates(lab)[core]
        pts = np.stack(np.nonzero(cand), axis=1)
        out["points"] = (pts + np.array([z0, 0, 0])).astype(np.int32)  # voxel indices: int32 halves the transfer
        out["point_labels"] = lc[cand]
    return out


class _Totals:
    """Dense per-label totals of the slabs' partial rows (sums add, boxes take min/max), added
    slab by slab as results arrive; hull-candidate points are kept for the calipers."""

    def __init__(self, n_labels: int, first: dict) -> None:
        def dense(k, fill=0):
            a = first[k]
            return None if a is None else np.full((n_labels,) + a.shape[1:], fill, a.dtype)

        self.total = {k: dense(k) for k in ("counts", "csum", "pc", "area", "exp")}
        self.total["lo"] = dense("lo", np.iinfo(np.int64).max)
        self.total["hi"] = dense("hi", -1)
        self.points: list[np.ndarray] = []
        self.point_labels: list[np.ndarray] = []

    def add(self, p: dict) -> None:
        t, r = self.total, p["rows"]  # rows are unique within a slab
        for k in ("counts", "csum", "pc", "area", "exp"):
            if t[k] is not None:
                t[k][r] += p[k]
        t["lo"][r] = np.minimum(t["lo"][r], p["lo"])
        t["hi"][r] = np.maximum(t["hi"][r], p["hi"])
        if "points" in p:
            self.points.append(p["points"])
            self.point_labels.append(p["point_labels"])


SLAB_VOXELS = 1 << 24
"""Default slab size: about this many voxels (16 Mi; 16 layers of 1024², at most 64 layers)."""


def particle_table_chunked(labels, phases, *, voxel_size_um: float, phase_table: PhaseTable, slab: int | None = None,
                           scheduler=None, n_directions: int = 64, calipers: bool = True,
                           exposure: bool = True) -> pd.DataFrame:
    """:func:`~mineral3d.measure.particles.particle_table` slab by slab, scheduled by dask.

    Parameters
    ----------
    labels, phases : str, path or ndarray
        Zarr array paths (or TIFF files; any process can open them) or in-memory arrays
        (threaded or synchronous scheduling only). Particle ids are used as they are.
    slab : int, optional
        z-layers per task [default: about ``SLAB_VOXELS`` voxels, 4 to 64 layers].
    scheduler : str or distributed.Client, optional
        See the module docstring; default ``"threads"``.
    """
    import dask

    def ref(x):
        return VolumeRef(array=x) if isinstance(x, np.ndarray) else VolumeRef(path=os.fspath(x))

    lref, pref = ref(labels), ref(phases)
    shape = tuple(lref.open().shape)
    if tuple(pref.open().shape) != shape:
        raise ValueError(f"labels {shape} and phases {tuple(pref.open().shape)} differ in shape")
    if slab is None:
        slab = int(np.clip(SLAB_VOXELS // (shape[1] * shape[2]), 4, 64))
    bounds = [(z, min(z + slab, shape[0])) for z in range(0, shape[0], slab)]
    n_labels = max(compute([dask.delayed(_max_label)(lref, z0, z1) for z0, z1 in bounds], scheduler)) + 1
    tasks = [dask.delayed(slab_partials)(lref, pref, z0, z1, n_labels, exposure=exposure, calipers=calipers)
             for z0, z1 in bounds]
    # computed a batch at a time and added up as they come: only a batch of slab results is held
    batch = max(8, 2 * (os.cpu_count() or 1))
    acc = None
    for b0 in range(0, len(tasks), batch):
        for part in compute(tasks[b0:b0 + batch], scheduler):
            acc = _Totals(n_labels, part) if acc is None else acc
            acc.add(part)
    total = acc.total
    if acc.points:
        total["points"] = np.concatenate(acc.points)
        total["point_labels"] = np.concatenate(acc.point_labels)
        acc.points, acc.point_labels = [], []
    counts = total["counts"]
    rows = np.flatnonzero(counts)
    rows = rows[rows > 0]
    if calipers and len(total.get("points", ())):
        fmin, fmax = caliper_widths_of_points(total["points"], total["point_labels"], n_labels,
                                              n_directions=n_directions)
    else:
        fmin = fmax = np.full(n_labels, np.nan)
    centroids = np.divide(total["csum"], counts[:, None], out=np.zeros_like(total["csum"]), where=counts[:, None] > 0)
    bbox = np.concatenate([total["lo"], total["hi"]], axis=1)
    return assemble_table(rows, rows.astype(np.int64), counts=counts, centroids=centroids, bbox=bbox,
                          phase_voxels=total["pc"], area=total["area"], exposure=total["exp"], fmin=fmin, fmax=fmax,
                          shape=shape, voxel_size_um=voxel_size_um, phase_table=phase_table)

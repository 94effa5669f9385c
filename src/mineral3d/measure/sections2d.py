"""2D particle sections: virtual cross-sections of 3D labels, and SEM mineral maps.

Both give a :class:`~mineral3d.measure.liberation.Population` of particle sections
(areas in µm^2), so 2D liberation uses exactly the 3D definitions. A particle section is
one 8-connected 2D piece of a particle; sections cut by the image border (or, on a map, by
the edge of the measured area) are left out of liberation.
"""

from __future__ import annotations

import cc3d
import numpy as np
import pandas as pd
import scipy.ndimage as ndi

from mineral3d.measure.liberation import Population
from mineral3d.phase_table import RESIN, UNCLASSIFIED


def _perimeter_target_share(pieces: np.ndarray, phases: np.ndarray, target_id: int, n: int) -> np.ndarray:
    """Per piece: share of its boundary pixels (4-neighbour outside the piece) that are target."""
    b = np.zeros(pieces.shape, bool)
    for axis in (-2, -1):
        lo = [slice(None)] * pieces.ndim
        hi = [slice(None)] * pieces.ndim
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        d = pieces[tuple(lo)] != pieces[tuple(hi)]
        b[tuple(lo)] |= d
        b[tuple(hi)] |= d
    b &= (pieces > 0) & (phases != UNCLASSIFIED) & (phases != RESIN)
    tot = np.bincount(pieces[b], minlength=n)
    tgt = np.bincount(pieces[b & (phases == target_id)], minlength=n)
    return np.divide(tgt, tot, out=np.zeros(n), where=tot > 0)


def _pieces_population(pieces: np.ndarray, phases: np.ndarray, parents: np.ndarray | None, *, target_id: int,
                       pixel_um: float) -> Population:
    """Population of the pieces of a (P, H, W) stack of 2D labellings (piece ids unique in the stack)."""
    n = int(pieces.max()) + 1
    material = (phases != RESIN) & (phases != UNCLASSIFIED)
    amount = np.bincount(pieces[material], minlength=n).astype(float)
    target = np.bincount(pieces[phases == target_id], minlength=n).astype(float)
    area = np.bincount(pieces.ravel(), minlength=n).astype(float)
    exposure = _perimeter_target_share(pieces, phases, target_id, n)
    edge = np.zeros(n, bool)  # pieces on the image border are cut: drop them
    for sl in ((slice(None), 0), (slice(None), -1), (slice(None), slice(None), 0), (slice(None), slice(None), -1)):
        edge[np.unique(pieces[sl])] = True
    if parents is None:
        parent = np.arange(n)
    else:
        parent = np.zeros(n, np.int64)
        parent[pieces.ravel()] = parents.ravel()
    keep = (np.arange(n) > 0) & ~edge & (amount > 0)
    a2 = pixel_um**2
    return Population(amount=amount[keep] * a2, target=target[keep] * a2, exposure=exposure[keep],
                      size_um=np.sqrt(4 * area[keep] * a2 / np.pi), group=parent[keep])


def _stack_pieces(labels2d: np.ndarray) -> np.ndarray:
    """8-connected pieces of each label in each plane of a (P, H, W) stack, unique ids over the stack."""
    p, h, w = labels2d.shape
    spaced = np.zeros((2 * p - 1, h, w), labels2d.dtype)  # empty planes keep the planes apart
    spaced[::2] = labels2d
    pieces = cc3d.connected_components(spaced, connectivity=26)
    return pieces[::2]


def _planes(volume, idx: np.ndarray, axis: int) -> np.ndarray:
    """Planes ``idx`` normal to ``axis`` as a (P, H, W) stack; a lazy (Zarr) volume is read plane by plane."""
    if isinstance(volume, np.ndarray):
        return np.moveaxis(np.take(volume, idx, axis=axis), axis, 0)
    sel = [slice(None)] * 3
    planes = []
    for i in idx:
        sel[axis] = int(i)
        planes.append(np.asarray(volume[tuple(sel)]))
    return np.stack(planes) if planes else np.zeros((0,) + tuple(np.delete(volume.shape, axis)), volume.dtype)


BATCH_VOXELS = 1 << 24
"""Virtual section planes are cut in batches of about this many voxels (16 Mi): memory is bounded
by the batch, not by the volume."""


def virtual_sections(labels: np.ndarray, phases: np.ndarray, *, step: int, voxel_size_um: float, target_id: int,
                     axes=(0, 1, 2)) -> Population:
    """Particle sections on every ``step``-th plane along each of ``axes`` of 3D label volumes.

    Parameters
    ----------
    labels : (Z, Y, X) integer ndarray or Zarr array
        Particle ids (0 = none); a Zarr array is read one plane at a time.
    phases : (Z, Y, X) uint8 ndarray or Zarr array
    step : int
        Plane spacing, voxels (the first plane is at step // 2).
    voxel_size_um : float
    target_id : int
    axes : sequence of int
        Normal axes of the planes.

    Returns
    -------
    Population of 2D sections; ``group`` is the parent particle id.
    """
    pops = []
    for axis in axes:
        idx = np.arange(step // 2, labels.shape[axis], step)
        per = max(1, BATCH_VOXELS // int(np.prod(np.delete(labels.shape, axis))))
        for b in range(0, len(idx), per):  # planes are independent: batches give the same sections, in order
            lab = _planes(labels, idx[b:b + per], axis)
            ph = _planes(phases, idx[b:b + per], axis)
            pieces = _stack_pieces(np.ascontiguousarray(lab))
            pops.append(_pieces_population(pieces, ph, lab, target_id=target_id, pixel_um=voxel_size_um))
    return Population.concat(pops)


def map_sections(ids: np.ndarray, *, pixel_size_um: float, target_id: int, group_offset: int = 0,
                 measured: np.ndarray | None = None, min_size_px: int | None = None) -> Population:
    """Liberation population of an SEM mineral map (see :func:`map_section_table`).

    Touching particles merge, as they do in any 2D analysis. ``group`` numbers the sections
    from ``group_offset``.
    """
    table, _ = map_section_table(ids, pixel_size_um=pixel_size_um, target_id=target_id, measured=measured,
                                 min_size_px=min_size_px)
    return table_population(table, group_offset=group_offset)


MIN_SECTION_ECD_PX = 3.0
"""Default smallest particle section: equivalent circle diameter 3 pixels (area >= 8 pixels).

Smaller regions are below what the map resolves: their every pixel is a boundary pixel, so
neither grade nor exposure means anything, and on real maps they are mostly polishing
debris, dust and isolated misindexed pixels. Counted in the summary as specks, not sections.
"""


def min_section_px(ecd_px: float = MIN_SECTION_ECD_PX) -> int:
    """Smallest section area, pixels, for an equivalent circle diameter in pixels."""
    return max(1, int(np.ceil(np.pi / 4 * ecd_px ** 2)))


def map_section_table(ids: np.ndarray, *, pixel_size_um: float, target_id: int, phase_table=None,
                      measured: np.ndarray | None = None,
                      min_size_px: int | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """Particle sections of a mineral map, one row each (the 2D particle table).

    A section is an 8-connected region of non-resin pixels (unclassified pixels inside it
    belong to it but to no phase). It is ``cut`` when it touches the image border or a pixel
    outside the measured area (8-neighbourhood): its true extent is unknown, so it is kept in
    the table but left out of liberation.

    Parameters
    ----------
    ids : (H, W) uint8 ndarray
        Phase ids (0 resin, 255 unclassified / not measured).
    pixel_size_um : float
        Pixel edge, µm.
    target_id : int
        Phase id of the target.
    phase_table : PhaseTable, optional
        Adds a ``<phase>_um2`` column per material phase present.
    measured : (H, W) bool ndarray, optional
        The measured area; default: every pixel.
    min_size_px : int, optional
        Regions smaller than this are specks, not sections; default :func:`min_section_px`.

    Returns
    -------
    table : DataFrame
        ``section`` (1..n, the ids of ``labels``), ``row``/``col`` (centroid, pixels),
        ``area_um2``, ``ecd_um``, ``cut``, ``unclassified_um2``, ``material_um2`` (classified
        particle material), ``target_um2``, ``grade``, ``exposure`` (share of the
        section's boundary pixels that are target), then ``<phase>_um2`` for every
        material phase present in the map.
    labels : (H, W) int32 ndarray
        Section ids; 0 for resin, specks and unmeasured pixels.
    """
    ids = np.asarray(ids, np.uint8)
    measured = np.ones(ids.shape, bool) if measured is None else np.asarray(measured, bool)
    min_size_px = min_section_px() if min_size_px is None else int(min_size_px)
    regions = cc3d.connected_components(((ids != RESIN) & measured)[None], connectivity=26)[0].astype(np.int64)
    area = np.bincount(regions.ravel())
    keep = area >= min_size_px
    keep[0] = False
    remap = np.zeros(area.size, np.int64)
    remap[keep] = np.arange(1, int(keep.sum()) + 1)
    labels = remap[regions].astype(np.int32)
    n = int(keep.sum()) + 1
    cut = np.zeros(n, bool)
    outside = ~measured
    near = ndi.binary_dilation(outside, structure=np.ones((3, 3), bool)) if outside.any() else outside
    cut[np.unique(labels[near])] = True
    for sl in ((0, slice(None)), (-1, slice(None)), (slice(None), 0), (slice(None), -1)):
        cut[np.unique(labels[sl])] = True
    flat_l = labels.ravel()
    counts = np.bincount(flat_l.astype(np.int64) * 256 + ids.ravel(), minlength=n * 256).reshape(n, 256)
    a2 = pixel_size_um ** 2
    tid = target_id
    material = counts.sum(axis=1) - counts[:, RESIN] - counts[:, UNCLASSIFIED]
    rows, cols = np.indices(ids.shape)
    npx = np.maximum(counts.sum(axis=1), 1)
    frame = {
        "section": np.arange(n),
        "row": np.bincount(flat_l, weights=rows.ravel(), minlength=n) / npx,
        "col": np.bincount(flat_l, weights=cols.ravel(), minlength=n) / npx,
        "area_um2": counts.sum(axis=1) * a2,
        "ecd_um": np.sqrt(4 * counts.sum(axis=1) * a2 / np.pi),
        "cut": cut,
        "unclassified_um2": counts[:, UNCLASSIFIED] * a2,
        "material_um2": material * a2,
        "target_um2": counts[:, tid] * a2,
        "grade": np.divide(counts[:, tid], material, out=np.zeros(n), where=material > 0),
        "exposure": _perimeter_target_share(labels[None], ids[None], tid, n),
    }
    present = counts[1:].sum(axis=0)
    for p in (phase_table.material if phase_table is not None else ()):
        if present[p.id]:
            frame[f"{p.name}_um2"] = counts[:, p.id] * a2
    table = pd.DataFrame(frame).iloc[1:].reset_index(drop=True)
    return table, labels


def table_population(table: pd.DataFrame, *, group_offset: int = 0) -> Population:
    """Liberation population of a map section table: sections not cut, with classified material."""
    t = table[~table["cut"] & (table["material_um2"] > 0)]
    return Population(amount=t["material_um2"].to_numpy(float), target=t["target_um2"].to_numpy(float),
                      exposure=t["exposure"].to_numpy(float), size_um=t["ecd_um"].to_numpy(float),
                      group=t["section"].to_numpy(np.int64) + group_offset)


def maps_population(maps) -> Population:
    """Particle sections of several maps, ``(ids, pixel_size_um, target_id, measured or None)``
    each, as one population whose ``group`` numbers every section uniquely across the maps."""
    pops, offset = [], 0
    for ids, pixel_size_um, target_id, measured in maps:
        p = map_sections(ids, pixel_size_um=pixel_size_um, target_id=target_id, group_offset=offset,
                         measured=measured)
        offset = int(p.group.max()) + 1 if len(p) else offset + 1
        pops.append(p)
    return Population.concat(pops)

"""2D particle sections: virtual cross-sections of 3D labels, and SEM mineral maps.

Both give a :class:`~mineral3d.measure.liberation.Population` of particle sections
(areas in µm^2), so 2D liberation uses exactly the 3D definitions. A particle section is
one 8-connected 2D piece of a particle; sections touching the image border are dropped.
"""

from __future__ import annotations

import cc3d
import numpy as np

from mineral3d.measure.liberation import Population
from mineral3d.phases import RESIN, UNCLASSIFIED


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


def virtual_sections(labels: np.ndarray, phases: np.ndarray, *, step: int, voxel_size_um: float, target_id: int,
                     axes=(0, 1, 2)) -> Population:
    """Particle sections on every ``step``-th plane along each of ``axes`` of 3D label volumes.

    Parameters
    ----------
    labels : (Z, Y, X) integer ndarray
        Particle ids (0 = none).
    phases : (Z, Y, X) uint8 ndarray
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
        lab = np.moveaxis(np.take(labels, idx, axis=axis), axis, 0)
        ph = np.moveaxis(np.take(phases, idx, axis=axis), axis, 0)
        pieces = _stack_pieces(np.ascontiguousarray(lab))
        pops.append(_pieces_population(pieces, ph, lab, target_id=target_id, pixel_um=voxel_size_um))
    return Population(*(np.concatenate([getattr(p, f) for p in pops]) for f in
                        ("amount", "target", "exposure", "size_um", "group")))


def map_sections(ids: np.ndarray, *, pixel_size_um: float, target_id: int, group_offset: int = 0) -> Population:
    """Particle sections of an SEM mineral map: 8-connected regions that are not resin.

    Unclassified pixels join regions but count in no phase. Touching particles merge, as
    they do in a 2D analysis. ``group`` numbers the sections from ``group_offset``.
    """
    ids = np.asarray(ids, np.uint8)
    regions = cc3d.connected_components((ids != RESIN)[None], connectivity=26)[0:1]
    pop = _pieces_population(regions, ids[None], None, target_id=target_id, pixel_um=pixel_size_um)
    return Population(pop.amount, pop.target, pop.exposure, pop.size_um, pop.group + group_offset)

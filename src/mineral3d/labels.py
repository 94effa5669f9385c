"""Sparse 3D training labels from registered 2D mineral maps.

A registered map is an exact phase label on one plane through the CT volume. Each map
pixel centre is carried into the CT by the section's plane transform and falls in one
voxel; a voxel the plane passes through gets the phase held by the majority of its map
pixels (typically 4 at 0.5 voxels per pixel), and every other voxel gets no label.
Unclassified map pixels (255) vote for nothing. A voxel whose majority is weaker than
``min_fraction`` (a phase boundary crossing it) gets no label either.

The same per-voxel aggregation scores predictions against held-out maps on the CT
voxel grid (:func:`section_voxels` is used by both), so training labels and validation
see the map identically.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mineral3d.phase_table import UNCLASSIFIED
from mineral3d.plane import PlaneTransform

NO_LABEL = UNCLASSIFIED
"""Value of unlabelled voxels in a dense label volume (uint8)."""


@dataclass(frozen=True)
class SparseLabels:
    """Labelled voxels of a (Z, Y, X) volume.

    Attributes
    ----------
    shape : tuple of int
        Shape of the CT volume, voxels.
    index : (N,) int64 ndarray
        Flat (C-order) indices of the labelled voxels, sorted, unique.
    label : (N,) uint8 ndarray
        Phase id of each labelled voxel.
    fraction : (N,) float32 ndarray
        Share of the voxel's classified map pixels that hold ``label`` (0-1].
    pixels : (N,) int32 ndarray
        Number of classified map pixels that fell in the voxel.
    """

    shape: tuple[int, int, int]
    index: np.ndarray
    label: np.ndarray
    fraction: np.ndarray
    pixels: np.ndarray

    def __len__(self) -> int:
        return int(self.index.size)

    @property
    def zyx(self) -> np.ndarray:
        """(N, 3) int64 voxel coordinates."""
        return np.stack(np.unravel_index(self.index, self.shape), axis=1)

    def to_dense(self, *, fill: int = NO_LABEL) -> np.ndarray:
        """A (Z, Y, X) uint8 volume: phase ids where labelled, ``fill`` elsewhere."""
        out = np.full(self.shape, fill, dtype=np.uint8)
        out.reshape(-1)[self.index] = self.label
        return out

    def counts(self) -> dict[int, int]:
        """Labelled voxels per phase id."""
        ids, n = np.unique(self.label, return_counts=True)
        return {int(i): int(c) for i, c in zip(ids, n)}


def section_voxels(shape, ids: np.ndarray, transform: PlaneTransform, *,
                   min_fraction: float = 0.0) -> SparseLabels:
    """Aggregate a map's pixels into the CT voxels its plane passes through.

    Parameters
    ----------
    shape : (3,) tuple of int
        CT volume shape (Z, Y, X), voxels.
    ids : (H, W) uint8 ndarray
        Phase-id map (255 = unclassified).
    transform : PlaneTransform
        The section's ``map_to_ct``.
    min_fraction : float
        Keep only voxels whose majority phase holds more than this share of their
        classified pixels (0 keeps every voxel with a classified pixel; ties go to the
        lower id).

    Returns
    -------
    SparseLabels
    """
    ids = np.asarray(ids)
    if ids.ndim != 2 or ids.dtype != np.uint8:
        raise ValueError(f"ids must be a 2D uint8 phase-id map, got {ids.dtype} {ids.shape}")
    shape = tuple(int(s) for s in shape)
    zyx = np.floor(transform.grid(ids.shape) + 0.5).astype(np.int64).reshape(3, -1)  # voxel i: [i-0.5, i+0.5)
    cls = ids.reshape(-1)
    keep = cls != UNCLASSIFIED
    for a in range(3):
        keep &= (zyx[a] >= 0) & (zyx[a] < shape[a])
    flat = np.ravel_multi_index(tuple(zyx[:, keep]), shape)
    cls = cls[keep].astype(np.int64)
    empty = SparseLabels(shape, np.zeros(0, np.int64), np.zeros(0, np.uint8), np.zeros(0, np.float32),
                         np.zeros(0, np.int32))
    if flat.size == 0:
        return empty
    # votes per (voxel, phase): unique pairs, then the largest count per voxel
    pair, votes = np.unique(flat * 256 + cls, return_counts=True)
    vox, phase = pair // 256, pair % 256
    voxels, start = np.unique(vox, return_index=True)
    total = np.add.reduceat(votes, start)
    # best pair of each voxel: order by (voxel, -votes, phase) and take the first of each voxel
    order = np.lexsort((phase, -votes, vox))
    first = order[np.searchsorted(vox[order], voxels)]
    frac = votes[first] / total
    good = frac > min_fraction if min_fraction > 0 else np.ones(voxels.size, bool)
    return SparseLabels(shape, voxels[good], phase[first][good].astype(np.uint8), frac[good].astype(np.float32),
                        total[good].astype(np.int32))


def merge_labels(parts: list[SparseLabels]) -> SparseLabels:
    """Union of several sections' labels; a voxel labelled differently by two sections is dropped."""
    if not parts:
        raise ValueError("no labels to merge")
    shape = parts[0].shape
    if any(p.shape != shape for p in parts):
        raise ValueError("labels of different volume shapes")
    index = np.concatenate([p.index for p in parts])
    label = np.concatenate([p.label for p in parts])
    frac = np.concatenate([p.fraction for p in parts])
    pix = np.concatenate([p.pixels for p in parts])
    order = np.argsort(index, kind="stable")
    index, label, frac, pix = index[order], label[order], frac[order], pix[order]
    uniq, start, n = np.unique(index, return_index=True, return_counts=True)
    lo = np.minimum.reduceat(label, start)
    hi = np.maximum.reduceat(label, start)
    agree = lo == hi
    return SparseLabels(shape, uniq[agree], label[start][agree], np.maximum.reduceat(frac, start)[agree],
                        np.add.reduceat(pix, start)[agree].astype(np.int32))


def thicken(labels: SparseLabels, normal_zyx, slab: int) -> SparseLabels:
    """Copy each label to ``slab`` voxels on both sides of the plane (along the axis nearest its normal).

    A thin slab gives more labelled voxels per patch at the cost of wrong labels where a
    phase boundary crosses the slab obliquely; ``slab=0`` returns ``labels`` unchanged.
    """
    if slab <= 0 or len(labels) == 0:
        return labels
    axis = int(np.argmax(np.abs(np.asarray(normal_zyx, float))))
    zyx = labels.zyx
    parts = [labels]
    for d in [*range(-slab, 0), *range(1, slab + 1)]:
        moved = zyx.copy()
        moved[:, axis] += d
        ok = (moved[:, axis] >= 0) & (moved[:, axis] < labels.shape[axis])
        idx = np.ravel_multi_index(tuple(moved[ok].T), labels.shape)
        order = np.argsort(idx)
        parts.append(SparseLabels(labels.shape, idx[order], labels.label[ok][order], labels.fraction[ok][order],
                                  labels.pixels[ok][order]))
    return merge_labels(parts)


def with_corrections(labels: SparseLabels | None, index: np.ndarray, label: np.ndarray, *, shape=None,
                     weight: float = 2.0) -> tuple[SparseLabels, np.ndarray, np.ndarray]:
    """Section labels plus the user's painted corrections, with per-voxel loss weights.

    The user's word wins: where a correction and a section label disagree, the voxel takes
    the correction. Corrected voxels weigh ``weight`` in the loss (section voxels 1), and
    those that overrule a section label weigh twice that: the sections already taught the
    model the opposite there.

    Parameters
    ----------
    labels : SparseLabels or None
        Section labels (None: corrections only).
    index, label : (M,) ndarray
        Flat C-order indices (unique) and phase ids of the corrected voxels.
    shape : tuple of int, optional
        Volume shape, when ``labels`` is None.
    weight : float
        Loss weight of a corrected voxel.

    Returns
    -------
    labels : SparseLabels
        The union (sorted by index).
    voxel_weight : (N,) float32 ndarray
    corrected : (N,) bool ndarray
        Whether each voxel comes from the corrections.
    """
    index = np.asarray(index, np.int64)
    label = np.asarray(label, np.uint8)
    if labels is None:
        labels = SparseLabels(tuple(shape), np.zeros(0, np.int64), np.zeros(0, np.uint8), np.zeros(0, np.float32),
                              np.zeros(0, np.int32))
    if shape is not None and tuple(shape) != tuple(labels.shape):
        raise ValueError(f"corrections of shape {tuple(shape)} for labels of shape {labels.shape}")
    pos = np.searchsorted(labels.index, index)
    hit = pos < len(labels)
    hit[hit] = labels.index[pos[hit]] == index[hit]
    overruled = np.zeros(index.size, bool)
    overruled[hit] = labels.label[pos[hit]] != label[hit]
    keep = np.ones(len(labels), bool)
    keep[pos[hit]] = False  # section voxels that were painted over
    all_index = np.concatenate([labels.index[keep], index])
    order = np.argsort(all_index, kind="stable")
    merged = SparseLabels(labels.shape, all_index[order], np.concatenate([labels.label[keep], label])[order],
                          np.concatenate([labels.fraction[keep], np.ones(index.size, np.float32)])[order],
                          np.concatenate([labels.pixels[keep], np.zeros(index.size, np.int32)])[order])
    w = np.concatenate([np.ones(int(keep.sum()), np.float32),
                        np.where(overruled, 2 * weight, weight).astype(np.float32)])[order]
    corrected = np.concatenate([np.zeros(int(keep.sum()), bool), np.ones(index.size, bool)])[order]
    return merged, w, corrected

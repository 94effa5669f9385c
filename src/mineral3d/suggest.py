"""Where to cut the next SEM section: the planes whose map would teach the model most about the target phase.

A section labels the voxels its plane passes through. It teaches the model most where the
model is unsure, and for the liberation what matters is the target phase. Per voxel, the
*useful uncertainty* is the entropy of the class probabilities (normalised to 0-1 by
log K) where the target phase is plausible (its probability >= ``min_target_prob``), else 0.
A plane's score is the sum over its voxels; planes closer than ``min_gap`` voxels to a
section already cut score nothing (that material is labelled), and the suggestions are the
best planes at least ``min_gap`` apart (non-maximum suppression). Planes closer than
``max(smooth, min_gap // 2)`` to a face of the volume are not suggested either: there the
network sees padding, and its entropy is an artefact of the border, not of the material
(and a section there risks reaching outside the scanned field).

Assumptions (also in docs/suggest.md): planes are perpendicular to one volume axis (a
mount polished along z: a depth is how far to grind); the model's probabilities are
informative (an untrained model's entropy is high everywhere and the ranking then follows
the amount of target-bearing material, still a reasonable choice); one section labels one
voxel plane, and the network generalises a few voxels either side, so the score is
smoothed over ``smooth`` voxels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["useful_uncertainty", "plane_scores", "suggest_planes", "SuggestConfig"]


@dataclass(frozen=True)
class SuggestConfig:
    """Settings of :func:`suggest_planes`.

    Attributes
    ----------
    count : int
        Planes to suggest.
    min_gap : int
        Least distance between two suggestions and from a section already cut, voxels.
    smooth : int
        Half-width of the window a plane's score is averaged over, voxels.
    min_target_prob : float
        Voxels whose target probability is below this carry no useful uncertainty.
    """

    count: int = 3
    min_gap: int = 16
    smooth: int = 2
    min_target_prob: float = 0.1


def useful_uncertainty(prob: np.ndarray, target: int, *, min_target_prob: float = 0.1) -> np.ndarray:
    """Normalised entropy (0-1) of ``prob`` (K, ...) where class ``target`` is plausible, else 0.

    Parameters
    ----------
    prob : (K, ...) float ndarray
        Class probabilities (summing to 1 over axis 0; uint8 0-255 is accepted and rescaled).
    target : int
        Index of the target class along axis 0.
    """
    p = np.asarray(prob, np.float32)
    if prob.dtype == np.uint8:
        p = p / 255.0
    p = p / np.maximum(p.sum(axis=0, keepdims=True), 1e-6)
    k = p.shape[0]
    h = -(p * np.log(np.clip(p, 1e-6, 1.0))).sum(axis=0) / np.log(max(k, 2))
    return np.where(p[target] >= min_target_prob, np.clip(h, 0.0, 1.0), 0.0).astype(np.float32)


def plane_scores(uncertainty: np.ndarray, axis: int = 0) -> np.ndarray:
    """Sum of ``uncertainty`` over each plane perpendicular to ``axis``."""
    u = np.asarray(uncertainty, np.float64)
    return u.sum(axis=tuple(a for a in range(u.ndim) if a != axis))


def suggest_planes(scores: np.ndarray, *, taken: list[float] = (), config: SuggestConfig = SuggestConfig(),
                   voxel_size_um: float = 1.0) -> pd.DataFrame:
    """Rank plane positions by their (smoothed) score, away from sections already cut.

    Parameters
    ----------
    scores : (N,) ndarray
        Score of each plane (:func:`plane_scores`), plane index = voxel position along the axis.
    taken : list of float
        Positions (voxels) of the sections already cut.
    voxel_size_um : float
        For the µm columns.

    Returns
    -------
    DataFrame
        One row per suggestion, best first: ``rank``, ``position_voxel``, ``position_um``,
        ``score`` (smoothed), ``share`` (of the total score of the free planes),
        ``nearest_section_um`` (distance to the closest section already cut; NaN if none),
        ``beyond_last_um`` (position minus the deepest section's, µm: how far to grind
        past the last section when polishing towards larger positions; negative: already
        ground away in that direction).
    """
    s = np.asarray(scores, np.float64)
    n = s.size
    w = int(config.smooth)
    kernel = np.ones(2 * w + 1) / (2 * w + 1)
    smooth = np.convolve(np.pad(s, w, mode="edge"), kernel, mode="valid") if w > 0 else s.copy()
    pos = np.arange(n)
    free = np.ones(n, bool)
    taken = [float(t) for t in taken]
    for t in taken:
        free &= np.abs(pos - t) >= config.min_gap
    edge = max(w, config.min_gap // 2)  # near the faces the network sees padding: its entropy there is an artefact
    free[:edge] = False
    free[max(0, n - edge):] = False
    avail = np.where(free, smooth, -np.inf)
    total = float(smooth[free].sum()) if free.any() else 0.0
    rows = []
    for rank in range(1, config.count + 1):
        if not np.isfinite(avail).any() or np.max(avail) <= 0:
            break
        i = int(np.argmax(avail))
        near = min((abs(i - t) for t in taken), default=np.nan)
        rows.append({"rank": rank, "position_voxel": i, "position_um": i * voxel_size_um,
                     "score": float(smooth[i]), "share": float(smooth[i] / total) if total else np.nan,
                     "nearest_section_um": near * voxel_size_um,
                     "beyond_last_um": (i - max(taken)) * voxel_size_um if taken else np.nan})
        avail[max(0, i - config.min_gap + 1):i + config.min_gap] = -np.inf
    return pd.DataFrame(rows, columns=["rank", "position_voxel", "position_um", "score", "share",
                                       "nearest_section_um", "beyond_last_um"])

"""Scores of a phase segmentation against mineral maps (or any reference labels).

Scores are computed on the CT voxel grid: a held-out map is aggregated per voxel its
plane passes through (the majority of the voxel's classified pixels,
:func:`mineral3d.labels.section_voxels`, exactly as training labels are made) and
compared with the segmentation at those voxels. Comparing at map resolution instead
would charge the segmentation for detail a voxel cannot hold. That resolution mismatch
still caps any voxel segmentation's score; when the sample has a ground-truth volume the
cap is measured by scoring the truth the same way (``ceiling``).
"""

from __future__ import annotations

import numpy as np

from mineral3d.labels import section_voxels
from mineral3d.plane import PlaneTransform, sample_plane


def confusion_matrix(reference: np.ndarray, predicted: np.ndarray, classes) -> np.ndarray:
    """(K, K) int64 counts: rows reference class, columns predicted class (others ignored)."""
    classes = np.asarray(classes)
    lut = np.full(256, -1, np.int64)
    lut[classes] = np.arange(classes.size)
    r, p = lut[np.asarray(reference).reshape(-1)], lut[np.asarray(predicted).reshape(-1)]
    ok = (r >= 0) & (p >= 0)
    k = classes.size
    return np.bincount(r[ok] * k + p[ok], minlength=k * k).reshape(k, k)


def scores(confusion: np.ndarray, names: list[str]) -> dict:
    """Per-class IoU, Dice, precision, recall and area fractions from a confusion matrix.

    Classes absent from both reference and prediction get None scores.
    """
    c = np.asarray(confusion, float)
    tp = np.diag(c)
    ref, pred = c.sum(axis=1), c.sum(axis=0)
    total = c.sum()
    out = {}
    for i, name in enumerate(names):
        union = ref[i] + pred[i] - tp[i]
        out[name] = {
            "iou": float(tp[i] / union) if union else None,
            "dice": float(2 * tp[i] / (ref[i] + pred[i])) if ref[i] + pred[i] else None,
            "precision": float(tp[i] / pred[i]) if pred[i] else None,
            "recall": float(tp[i] / ref[i]) if ref[i] else None,
            "reference_fraction": float(ref[i] / total) if total else None,
            "predicted_fraction": float(pred[i] / total) if total else None,
            "reference_voxels": int(ref[i]),
        }
    return {"per_phase": out, "accuracy": float(tp.sum() / total) if total else None, "voxels": int(total)}


def _gather(volume, index: np.ndarray, shape) -> np.ndarray:
    """Values of a (possibly lazy) volume at flat ``index``: reads only the bounding box."""
    zyx = np.unravel_index(index, shape)
    lo = [int(a.min()) for a in zyx]
    hi = [int(a.max()) + 1 for a in zyx]
    box = np.asarray(volume[tuple(slice(a, b) for a, b in zip(lo, hi))])
    return box[tuple(a - o for a, o in zip(zyx, lo))]


def section_validation(segmentation, ids: np.ndarray, transform: PlaneTransform, classes, names: list[str], *,
                       truth=None) -> dict:
    """Score a segmentation (and a truth volume, if given) on one registered map.

    Parameters
    ----------
    segmentation : (Z, Y, X) array-like of phase ids
        ndarray or lazy (Zarr): only the voxels the plane passes through are read.
    ids : (H, W) uint8 ndarray
        The map (255 = unclassified).
    transform : PlaneTransform
    classes : sequence of int
        Phase ids to score (e.g. every id but 255).
    names : list of str
        Their names.
    truth : (Z, Y, X) array-like, optional
        Ground truth phases: adds ``ceiling`` (truth vs map, scored the same way) and
        ``truth_volume`` (segmentation vs truth on the same voxels).

    Returns
    -------
    dict with ``voxel_grid`` scores, the ``confusion`` matrix, the pixel-level modal
    mineralogy of map and segmentation (``modal``), and the optional truth entries.
    """
    shape = tuple(segmentation.shape)
    vox = section_voxels(shape, ids, transform)
    if len(vox) == 0:
        return {"voxels": 0}
    pred = _gather(segmentation, vox.index, shape)
    conf = confusion_matrix(vox.label, pred, classes)
    out = {"voxels": len(vox), "confusion": conf.tolist(), "voxel_grid": scores(conf, names)}
    on_plane = sample_plane(_plane_box(segmentation, vox, shape), _box_transform(transform, vox, shape), ids.shape,
                            order=0, cval=255)
    valid = (ids != 255) & (on_plane != 255)
    total = max(int(valid.sum()), 1)
    out["modal"] = {n: {"map": float(np.sum(valid & (ids == c)) / total),
                        "segmentation": float(np.sum(valid & (on_plane == c)) / total)} for c, n in zip(classes, names)}
    if truth is not None:
        t = _gather(truth, vox.index, shape)
        ceil = confusion_matrix(vox.label, t, classes)
        out["ceiling"] = {"confusion": ceil.tolist(), "voxel_grid": scores(ceil, names)}
        tv = confusion_matrix(t, pred, classes)
        out["truth_volume"] = {"confusion": tv.tolist(), "voxel_grid": scores(tv, names)}
    return out


def _plane_box(volume, vox, shape) -> np.ndarray:
    zyx = np.unravel_index(vox.index, shape)
    lo = [max(0, int(a.min()) - 1) for a in zyx]
    hi = [min(s, int(a.max()) + 2) for a, s in zip(zyx, shape)]
    return np.asarray(volume[tuple(slice(a, b) for a, b in zip(lo, hi))])


def _box_transform(transform: PlaneTransform, vox, shape) -> PlaneTransform:
    zyx = np.unravel_index(vox.index, shape)
    lo = [max(0, int(a.min()) - 1) for a in zyx]
    return transform.shifted([-v for v in lo])


def instance_scores(predicted: np.ndarray, truth: np.ndarray, *, min_voxels: int = 0, cover: float = 0.2) -> dict:
    """Instance segmentation scores of particle labels against true labels.

    A predicted and a true particle *match* when their IoU exceeds 0.5 (such matches are
    one-to-one). A true particle is *split* (over-segmented) when two or more predicted
    particles each cover at least ``cover`` of it; a predicted particle is a *merge*
    (under-segmentation) when it covers at least ``cover`` of each of two or more true
    particles. Particles smaller than ``min_voxels`` (e.g. slivers cut by the volume
    border) are left out on both sides.

    Returns
    -------
    dict: ``f1``, ``precision``, ``recall``, ``mean_iou_matched``, ``split_fraction`` and
    ``merge_fraction`` (both per true particle), and the counts.
    """
    p = np.asarray(predicted).reshape(-1).astype(np.int64)
    t = np.asarray(truth).reshape(-1).astype(np.int64)
    np_, nt = int(p.max()) + 1, int(t.max()) + 1
    size_p = np.bincount(p, minlength=np_)
    size_t = np.bincount(t, minlength=nt)
    both = (p > 0) & (t > 0)
    pair, inter = np.unique(p[both] * nt + t[both], return_counts=True)
    pp, tt = pair // nt, pair % nt
    keep_p = np.flatnonzero(size_p >= max(1, min_voxels))
    keep_p = keep_p[keep_p > 0]
    keep_t = np.flatnonzero(size_t >= max(1, min_voxels))
    keep_t = keep_t[keep_t > 0]
    ok = np.isin(pp, keep_p) & np.isin(tt, keep_t)
    pp, tt, inter = pp[ok], tt[ok], inter[ok]
    iou = inter / (size_p[pp] + size_t[tt] - inter)
    m = iou > 0.5
    n_match = int(m.sum())
    n_pred, n_true = keep_p.size, keep_t.size
    big_of_t = inter >= cover * size_t[tt]
    big_of_p = inter >= cover * size_p[pp]
    split = np.bincount(tt[big_of_t], minlength=nt) >= 2
    merged = np.bincount(pp[big_of_p], minlength=np_) >= 2
    return {"f1": 2 * n_match / (n_pred + n_true) if n_pred + n_true else None,
            "precision": n_match / n_pred if n_pred else None, "recall": n_match / n_true if n_true else None,
            "mean_iou_matched": float(iou[m].mean()) if n_match else None,
            "split_fraction": float(split.sum() / n_true) if n_true else None,
            "merge_fraction": float(merged.sum() / n_true) if n_true else None,
            "matched": n_match, "predicted": int(n_pred), "true": int(n_true),
            "split": int(split.sum()), "merges": int(merged.sum())}

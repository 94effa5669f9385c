"""Prior-shift correction of a phase classifier by Delesse's principle.

Area fractions of phases on random sections estimate their volume fractions without
bias (Delesse 1847). A network trained on few labelled voxels is biased towards the
phase it saw most where two phases look alike (LiAlO2 vs gehlenite), so its modal
mineralogy drifts from the sections'. :func:`fit_class_bias` finds one additive
log-probability offset per material phase such that, among the voxels predicted as
material, the predicted phase fractions equal the sections' area fractions.

Resin vs material is decided on the labelled voxels themselves (:func:`fit_background_offset`):
the loss weights that let the network see rare phases (count^-0.75) under-weight resin, so
material grows into the resin at particle surfaces (1.0-3.8% too much material volume on
the benchmark samples). One offset on the resin log-probability makes the predicted resin
share of the train sections' labelled voxels equal their labelled share. The sections'
resin share of the whole mount is not used (the maps may cover only part of it): only
the voxels the maps label.

The offsets are part of the model and are used wherever it is applied.
"""

from __future__ import annotations

import numpy as np


def fit_background_offset(prob: np.ndarray, is_background: np.ndarray, *, background: int = 0,
                          limit: float = 12.0) -> float:
    """Offset on the resin log-probability that gives labelled voxels their labelled resin share.

    A voxel is called resin when ``log p_resin + offset`` is at least the largest material
    log-probability (:func:`classify`); the offset is minus the (1 - share) quantile of
    ``log p_resin - max log p_material`` over the labelled voxels, so that the share of
    them called resin equals the share labelled resin. Clipped to ``[-limit, limit]``; 0
    when the labels hold no resin or only resin.

    Parameters
    ----------
    prob : (N, K) float ndarray
        Class probabilities of the labelled voxels.
    is_background : (N,) bool ndarray
        Whether each voxel is labelled resin.
    """
    prob = np.asarray(prob, np.float64)
    is_background = np.asarray(is_background, bool)
    share = float(is_background.mean()) if len(is_background) else 0.0
    if share <= 0.0 or share >= 1.0:
        return 0.0
    logp = np.log(prob + 1e-9)
    margin = logp[:, background] - np.delete(logp, background, axis=1).max(axis=1)
    return float(np.clip(-np.quantile(margin, 1.0 - share), -limit, limit))


def fit_class_bias(prob: np.ndarray, target: np.ndarray, *, background: int = 0, rounds: int = 8,
                   tol: float = 1e-3, limit: float = 12.0, background_offset: float = 0.0) -> np.ndarray:
    """Offsets (K,) added to log-probabilities so that material fractions match ``target``.

    Cyclic coordinate bisection: a class's predicted fraction never decreases when its own
    offset grows, so each offset is bisected (in [-limit, limit]) to its target with the
    others fixed, class after class, for ``rounds`` rounds or until every fraction is within
    ``tol``. Deterministic and bounded; a class the network never ranks first within the
    limit stays below its target instead of being forced.

    Parameters
    ----------
    prob : (N, K) float ndarray
        Class probabilities of a random sample of voxels.
    target : (K,) float ndarray
        Wanted fractions of each class among material voxels (``background`` ignored;
        classes with target 0 keep offset 0: a phase the sections did not show is not
        forced out).
    background : int
        Index of the resin class, left as the network predicts it.
    rounds : int
    tol : float
        Absolute tolerance on each fraction.
    limit : float
        Largest absolute offset (log units).
    background_offset : float
        The resin offset (:func:`fit_background_offset`): which voxels are material.

    Returns
    -------
    (K,) float64 ndarray; ``background_offset`` for the background class.
    """
    prob = np.asarray(prob, np.float64)
    k = prob.shape[1]
    logp = np.log(prob + 1e-9)
    shifted = logp.copy()
    shifted[:, background] += background_offset
    material = np.argmax(shifted, axis=1) != background
    bias = np.zeros(k)
    target = np.asarray(target, np.float64).copy()
    target[background] = 0
    active = np.flatnonzero(target > 0)
    if material.sum() == 0 or active.size < 2:
        return bias
    target = target / target[active].sum()
    cols = np.flatnonzero(np.arange(k) != background)
    sub = logp[material][:, cols].astype(np.float32)

    def fractions(b):
        pred = cols[np.argmax(sub + b[cols].astype(np.float32), axis=1)]
        return np.bincount(pred, minlength=k) / pred.size

    for _ in range(rounds):
        frac = fractions(bias)
        if np.all(np.abs(frac[active] - target[active]) < tol):
            break
        for c in active:
            lo, hi = -limit, limit
            for _ in range(30):
                mid = (lo + hi) / 2
                bias[c] = mid
                if fractions(bias)[c] < target[c]:
                    lo = mid
                else:
                    hi = mid
                if hi - lo < 1e-3:
                    break
            bias[c] = (lo + hi) / 2
    bias[background] = background_offset
    return bias


def classify(prob: np.ndarray, bias: np.ndarray | None, *, background: int = 0) -> np.ndarray:
    """Class index per voxel of probabilities (K, ...): resin where ``log p_resin + bias[resin]``
    is at least every material class's ``log p`` (with a zero resin offset: the network's
    argmax), else the material phase of the largest ``log p + bias``."""
    first = np.argmax(prob, axis=0)
    if bias is None or not np.any(bias):
        return first
    bias = np.asarray(bias, np.float64)
    cols = np.flatnonzero(np.arange(prob.shape[0]) != background)
    w = np.exp(bias[cols]).astype(np.float32).reshape((-1,) + (1,) * (prob.ndim - 1))
    phase = cols[np.argmax(prob[cols] * w, axis=0)]
    if bias[background] == 0:
        resin = first == background
    else:
        resin = prob[background] * np.float32(np.exp(bias[background])) >= prob[cols].max(axis=0)
    return np.where(resin, background, phase)

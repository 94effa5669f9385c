"""The grey-value baseline: what a threshold segmentation of the CT can do.

Each phase is modelled as a Gaussian of normalised grey values (mean, variance and
prior fitted to the same labelled voxels the CNN learns from); a voxel gets the phase
of highest posterior. This is the best any set of grey-value thresholds can do for
Gaussian classes, so it is the fair "no texture, no context" reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GreyClassifier:
    """Per-class Gaussian of grey values with priors (1D quadratic discriminant).

    Attributes
    ----------
    classes : (K,) int ndarray
        Label value of each class.
    mean, std, prior : (K,) float ndarray
    """

    classes: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    prior: np.ndarray

    @classmethod
    def fit(cls, values: np.ndarray, labels: np.ndarray) -> GreyClassifier:
        """Fit to grey ``values`` (N,) of voxels labelled ``labels`` (N,)."""
        values = np.asarray(values, float)
        labels = np.asarray(labels)
        classes = np.unique(labels)
        if classes.size == 0:
            raise ValueError("no labelled voxels")
        idx = np.searchsorted(classes, labels)
        n = np.bincount(idx, minlength=classes.size).astype(float)
        mean = np.bincount(idx, values, classes.size) / n
        var = np.bincount(idx, (values - mean[idx]) ** 2, classes.size) / n
        spread = np.std(values) if values.size > 1 else 1.0
        std = np.sqrt(np.maximum(var, (1e-3 * spread) ** 2 + 1e-12))
        return cls(classes, mean, std, n / n.sum())

    def predict(self, values: np.ndarray, *, priors: bool = True, chunk: int = 1 << 22) -> np.ndarray:
        """Most probable class label of each grey value (any shape), vectorised in chunks.

        ``priors=False`` drops the class frequencies (maximum likelihood): rare phases
        whose grey values overlap a common one are then predicted at all.
        """
        values = np.asarray(values)
        flat = values.reshape(-1)
        out = np.empty(flat.shape, dtype=self.classes.dtype)
        a = -0.5 / self.std ** 2
        b = (np.log(self.prior) if priors else 0.0) - np.log(self.std)
        for s in range(0, flat.size, chunk):
            v = flat[s:s + chunk].astype(np.float32)[:, None]
            score = a * (v - self.mean) ** 2 + b
            out[s:s + chunk] = self.classes[np.argmax(score, axis=1)]
        return out.reshape(values.shape)

    def to_dict(self) -> dict:
        return {k: np.asarray(getattr(self, k)).tolist() for k in ("classes", "mean", "std", "prior")}

    @classmethod
    def from_dict(cls, d: dict) -> GreyClassifier:
        return cls(np.asarray(d["classes"]), *(np.asarray(d[k], float) for k in ("mean", "std", "prior")))

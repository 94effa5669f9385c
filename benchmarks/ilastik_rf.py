"""An ilastik-style pixel classifier: a random forest on 3D filter features (benchmark baseline).

What a CT analyst would try first (ilastik "Pixel Classification"): the feature families
ilastik offers, each at the sigmas 0.7, 1.0, 1.6, 3.5 and 5.0 voxels, plus the raw grey
value (51 features):

- Gaussian smoothing, Laplacian of Gaussian, Gaussian gradient magnitude, difference of
  Gaussians (sigma and 0.66 sigma, as ilastik);
- structure-tensor eigenvalues (3; inner scale sigma, outer scale 2 sigma, as ilastik) and
  Hessian-of-Gaussian eigenvalues (3).

Features are computed with scipy.ndimage / scikit-image in float32 on the whole volume
(8 M voxels x 51 features = 1.6 GB), the forest is scikit-learn's
``RandomForestClassifier`` (60 trees, as in the issue's measurement) on exactly the same
sparse labels as the CNN (every labelled voxel, same label rules).
"""

from __future__ import annotations

import time

import numpy as np
import scipy.ndimage as ndi
from skimage.feature import hessian_matrix, hessian_matrix_eigvals, structure_tensor, structure_tensor_eigenvalues

SIGMAS = (0.7, 1.0, 1.6, 3.5, 5.0)


def features(image: np.ndarray, *, sigmas=SIGMAS) -> np.ndarray:
    """(N, F) float32 feature matrix of a (Z, Y, X) image (F = 1 + 10 per sigma)."""
    img = np.asarray(image, np.float32)
    feats = [img.reshape(-1)]
    for s in sigmas:
        g = ndi.gaussian_filter(img, s)
        feats.append(g.reshape(-1))
        feats.append(ndi.gaussian_laplace(img, s).reshape(-1))
        feats.append(ndi.gaussian_gradient_magnitude(img, s).reshape(-1))
        feats.append((g - ndi.gaussian_filter(img, 0.66 * s)).reshape(-1))
        # structure tensor of the image smoothed at the inner scale, averaged at the outer scale
        st = structure_tensor(ndi.gaussian_filter(img, s), sigma=2 * s, mode="reflect", order="rc")
        for e in structure_tensor_eigenvalues(st):
            feats.append(e.astype(np.float32).reshape(-1))
        del st
        h = hessian_matrix(img, sigma=s, mode="reflect", order="rc", use_gaussian_derivatives=True)
        for e in hessian_matrix_eigvals(h):
            feats.append(e.astype(np.float32).reshape(-1))
        del h, g
    return np.stack(feats, axis=1)


def fit_predict(image: np.ndarray, index: np.ndarray, label: np.ndarray, *, classes, n_trees: int = 60,
                seed: int = 0, n_jobs: int = 2, batch: int = 1 << 20) -> tuple[np.ndarray, dict]:
    """Train on the voxels ``index`` (flat) with ``label`` (phase ids) and predict every voxel.

    Returns (phase ids (Z, Y, X) uint8, timings in seconds).
    """
    from sklearn.ensemble import RandomForestClassifier

    t0 = time.perf_counter()
    f = features(image)
    t1 = time.perf_counter()
    rf = RandomForestClassifier(n_estimators=n_trees, n_jobs=n_jobs, random_state=seed, min_samples_leaf=1)
    rf.fit(f[index], label)
    t2 = time.perf_counter()
    out = np.empty(f.shape[0], np.uint8)
    for a in range(0, f.shape[0], batch):
        out[a:a + batch] = rf.classes_[np.argmax(rf.predict_proba(f[a:a + batch]), axis=1)]
    t3 = time.perf_counter()
    return out.reshape(image.shape), {"features_s": t1 - t0, "fit_s": t2 - t1, "predict_s": t3 - t2,
                                      "total_s": t3 - t0, "n_features": int(f.shape[1])}

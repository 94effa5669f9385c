"""SEM-EDS mineral maps and BSE images of polished sections through the phantom."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from mineral3d.phantom.microstructure import GEHLENITE, LIALO2, METAL, RESIN, SPINEL
from mineral3d.phase_table import UNCLASSIFIED
from mineral3d.plane import PlaneTransform

# Mean atomic number (mass-weighted) of each phase, from its formula:
# epoxy resin ~6.2; LiAlO2 9.5; Ca2Al2SiO7 13.1; MgAl2O4 10.6; Fe-Cu metal ~27.
MEAN_Z = {RESIN: 6.2, LIALO2: 9.5, GEHLENITE: 13.1, SPINEL: 10.6, METAL: 27.0}


def backscatter_coefficient(z: float) -> float:
    """Backscattered-electron coefficient for mean atomic number z (Reuter's fit)."""
    return -0.0254 + 0.016 * z - 1.86e-4 * z**2 + 8.3e-7 * z**3


def random_pose(rng: np.random.Generator, volume_shape, scale: float, depth_fraction: float,
                max_tilt_deg: float = 5.0) -> tuple[PlaneTransform, tuple[int, int]]:
    """A section plane a few degrees off z, any in-plane rotation, inside the volume.

    ``scale`` is CT voxels per map pixel (true, including any calibration error).
    Returns the true transform and the map shape (rows, cols).
    """
    z, y, x = volume_shape
    width = min(y, x)
    shape = (int(0.55 * width / scale), int(0.65 * width / scale))
    for _ in range(100):
        centre = np.array([depth_fraction * (z - 1) + rng.normal(0, 0.03 * z),
                           (y - 1) / 2 + rng.uniform(-0.04, 0.04) * y,
                           (x - 1) / 2 + rng.uniform(-0.04, 0.04) * x])
        t = PlaneTransform.from_pose(centre_zyx=centre, map_shape=shape, scale=scale,
                                     tilt_deg=rng.uniform(1.0, max_tilt_deg), azimuth_deg=rng.uniform(0, 360),
                                     rotation_deg=rng.uniform(0, 360))
        corners = t.apply([0, 0, shape[0] - 1, shape[0] - 1], [0, shape[1] - 1, 0, shape[1] - 1])
        if np.all(corners >= 1.0) and np.all(corners <= np.array(volume_shape) - 2.0):
            return t, shape
    raise ValueError(f"the volume {volume_shape} is too thin for a tilted section")


def unclassify_boundaries(ids: np.ndarray, rng: np.random.Generator, fraction: float) -> np.ndarray:
    """Mark ``fraction`` of all pixels unclassified (255), drawn from phase-boundary pixels.

    Real EDS maps leave mixed-spectrum pixels at boundaries unclassified.
    """
    pad = np.pad(ids, 1, mode="edge")
    boundary = ((pad[1:-1, 1:-1] != pad[:-2, 1:-1]) | (pad[1:-1, 1:-1] != pad[2:, 1:-1])
                | (pad[1:-1, 1:-1] != pad[1:-1, :-2]) | (pad[1:-1, 1:-1] != pad[1:-1, 2:]))
    idx = np.flatnonzero(boundary)
    n = min(len(idx), int(round(fraction * ids.size)))
    out = ids.copy()
    out.flat[rng.choice(idx, n, replace=False)] = UNCLASSIFIED
    return out


def bse_image(ids: np.ndarray, rng: np.random.Generator, *, noise: float = 6.0) -> np.ndarray:
    """A BSE image (uint8) with grey by mean atomic number, a slight blur and noise."""
    eta = np.zeros(256, np.float32)
    for pid, z in MEAN_Z.items():
        eta[pid] = backscatter_coefficient(z)
    eta[UNCLASSIFIED] = np.nan
    img = eta[ids]
    # unclassified pixels are mixtures: take the mean of their neighbours' grey
    bad = ~np.isfinite(img)
    if bad.any():
        filled = np.where(bad, 0, img)
        num = ndimage.uniform_filter(filled, 3)
        den = ndimage.uniform_filter((~bad).astype(np.float32), 3)
        img = np.where(bad, num / np.maximum(den, 1e-6), img)
    grey = 255.0 * img / 0.32
    grey = ndimage.gaussian_filter(grey, 0.6) + rng.normal(0, noise, grey.shape)
    return np.clip(np.rint(grey), 0, 255).astype(np.uint8)

"""Grey-value statistics of a CT volume: the two levels every intensity normalisation uses.

A CT of a particle sample in resin has two dominant populations, resin (dark) and
mineral (bright). Their levels are found by Otsu's threshold on a random subsample of
voxels (between the 0.5th and 99.5th percentiles, so that rare bright inclusions and
dead pixels do not move it), then the median of each side. Normalising with
``(grey - resin) / (mineral - resin)`` puts resin near 0 and mineral near 1 whatever the
dtype (uint8, uint16, float), the scanner's energy and the resin fraction of the volume,
which percentile scaling of the whole volume does not (it moves with the resin fraction).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


def otsu_threshold(values: np.ndarray, bins: int = 512) -> float:
    """Otsu's threshold of 1D ``values`` (maximises the between-class variance)."""
    hist, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist).astype(float)
    w1 = w0[-1] - w0
    s0 = np.cumsum(hist * centres)
    m0 = s0 / np.maximum(w0, 1)
    m1 = (s0[-1] - s0) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(centres[int(np.argmax(between))])


def random_voxels(volume, n: int, seed: int) -> np.ndarray:
    """Up to ``n`` random voxels of a (possibly lazy) volume, read slab by slab."""
    shape = volume.shape
    total = int(np.prod(shape))
    if total <= n or isinstance(volume, np.ndarray):
        flat = np.asarray(volume).reshape(-1)
        if total <= n:
            return flat.astype(np.float64)
        return flat[np.random.default_rng(seed).integers(0, total, n)].astype(np.float64)
    rng = np.random.default_rng(seed)
    step = max(1, shape[0] // 32)
    per = max(1, n // len(range(0, shape[0], step)))
    parts = []
    for z in range(0, shape[0], step):
        slab = np.asarray(volume[z:z + 1]).reshape(-1)
        parts.append(slab[rng.integers(0, slab.size, per)])
    return np.concatenate(parts).astype(np.float64)


@dataclass(frozen=True)
class GreyLevels:
    """Resin and mineral grey levels of a CT volume (in its own grey units).

    Attributes
    ----------
    resin, mineral : float
        Median grey value below and above the Otsu threshold.
    threshold : float
        The Otsu threshold between them.
    """

    resin: float
    mineral: float
    threshold: float

    @classmethod
    def from_volume(cls, volume, *, n_samples: int = 2_000_000, seed: int = 0) -> GreyLevels:
        """Measure the levels on a random subsample of ``volume`` (ndarray, or a Zarr/dask array)."""
        sample = random_voxels(volume, n_samples, seed)
        sample = sample[np.isfinite(sample)]
        lo, hi = np.percentile(sample, [0.5, 99.5])
        sample = sample[(sample >= lo) & (sample <= hi)]
        if sample.size < 2 or hi <= lo:
            return cls(float(lo), float(lo) + 1.0, float(lo) + 0.5)
        t = otsu_threshold(sample)
        below, above = sample[sample < t], sample[sample >= t]
        resin = float(np.median(below)) if below.size else float(lo)
        mineral = float(np.median(above)) if above.size else float(hi)
        if mineral <= resin:
            mineral = resin + 1.0
        return cls(resin, mineral, t)

    @classmethod
    def from_dict(cls, d: dict) -> GreyLevels:
        return cls(float(d["resin"]), float(d["mineral"]), float(d["threshold"]))

    def to_dict(self) -> dict:
        return asdict(self)

    def normalise(self, block: np.ndarray, *, out_dtype=np.float32) -> np.ndarray:
        """``(block - resin) / (mineral - resin)``: resin ~0, mineral ~1 (not clipped)."""
        out = np.asarray(block, dtype=out_dtype) - out_dtype(self.resin)
        out *= out_dtype(1.0 / (self.mineral - self.resin))
        return out


class NormalisedVolume:
    """A (possibly lazy) CT seen through :meth:`GreyLevels.normalise`: slicing reads and
    normalises only the part asked for (training on a CT that is not held in memory)."""

    def __init__(self, volume, levels: GreyLevels) -> None:
        self.volume, self.levels = volume, levels
        self.shape = tuple(int(n) for n in volume.shape)
        self.ndim, self.dtype = len(self.shape), np.dtype(np.float32)

    def __getitem__(self, key) -> np.ndarray:
        return self.levels.normalise(np.asarray(self.volume[key]))


def grey_foreground(volume: np.ndarray, *, levels: GreyLevels | None = None, median: int = 3) -> np.ndarray:
    """Particle voxels of a CT without a model: brighter than the Otsu threshold of its grey levels.

    A ``median``³ median filter first removes voxel noise (a CT's speckle would otherwise
    leave isolated voxels on both sides of the threshold); edges survive a median filter.
    Assumes particles are brighter than what surrounds them (minerals in resin or air).

    Returns
    -------
    (Z, Y, X) bool ndarray.
    """
    from scipy import ndimage as ndi

    levels = levels or GreyLevels.from_volume(volume)
    v = np.asarray(volume, np.float32)
    if median > 1:
        v = ndi.median_filter(v, size=median)
    return v >= levels.threshold


def edge_sigma_vox(volume, *, levels: GreyLevels | None = None, crop: int = 96, n_crops: int = 6,
                   derivative_sigma: float = 1.0, seed: int = 0) -> float:
    """Blur of the resin/mineral edges of a CT, as the sigma (voxels) of a Gaussian edge spread.

    Measured where the (lightly smoothed) normalised grey value crosses half-way between
    resin and mineral: there, across a straight edge blurred by a Gaussian of sigma ``s``,
    the gradient magnitude of the image smoothed by ``derivative_sigma`` is
    ``1 / (sqrt(2 pi) * sqrt(s² + derivative_sigma²))`` (in contrast units per voxel). The
    median over the half-way voxels of ``n_crops`` random ``crop``³ boxes gives ``s``: the
    point spread of the scanner and reconstruction plus the partial volume of the voxel,
    in this volume's voxels. A model sees images in voxel units, so two CTs whose edges
    are equally blurred in voxels look alike to it whatever their voxel sizes.

    Returns NaN when the volume shows no edge (no particle, or no resin).
    """
    from scipy import ndimage

    levels = levels or GreyLevels.from_volume(volume, seed=seed)
    rng = np.random.default_rng(seed)
    shape = np.array(volume.shape)
    box = np.minimum(shape, crop)
    d, m = derivative_sigma, int(np.ceil(3 * derivative_sigma))
    vals = []
    for _ in range(n_crops):
        lo = [int(rng.integers(0, s - b + 1)) for s, b in zip(shape, box)]
        u = levels.normalise(np.asarray(volume[tuple(slice(a, a + b) for a, b in zip(lo, box))]))
        grad = ndimage.gaussian_gradient_magnitude(u, d)
        half = np.abs(ndimage.gaussian_filter(u, d) - 0.5) < 0.1
        inner = tuple(slice(m, max(m, n - m)) for n in u.shape)  # away from the crop faces
        vals.append(grad[inner][half[inner]])
    g = np.concatenate(vals) if vals else np.zeros(0)
    if g.size < 100:
        return float("nan")
    s2 = 1.0 / (2 * np.pi * float(np.median(g)) ** 2) - d ** 2
    return float(np.sqrt(max(s2, 0.0)))

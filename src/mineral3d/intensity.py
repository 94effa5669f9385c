"""Grey-value statistics of a CT volume: the two levels every intensity normalisation uses.

A CT of a particle sample in resin has two dominant populations, resin (dark) and
mineral (bright). Their levels are found by Otsu's threshold on a random subsample of
voxels (between the 0.5th and 99.5th percentiles, so that rare bright inclusions and
dead pixels do not move it), then the median of each side. Normalising with
``(grey - resin) / (mineral - resin)`` puts resin near 0 and mineral near 1 whatever the
dtype (uint8, uint16, float), the scanner's energy and the resin fraction of the volume,
which percentile scaling of the whole volume does not (it moves with the resin fraction).

Lab CT is rarely flat: beam hardening darkens the centre of the field of view (cupping),
by a few percent of the mineral level, which is as much as two phases of similar
attenuation differ (LiAlO2 and gehlenite: ~7%). A :class:`RadialTrend` measures, on the
same subsample, how the resin and mineral levels change with the distance from the
rotation axis, and :meth:`GreyLevels.normalise` then maps resin to 0 and mineral to 1
*at every distance*, so a phase looks the same in the middle and at the rim of the field.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    """Up to ``n`` random voxels of a (possibly lazy) volume, read slab by slab (float64)."""
    return random_positions(volume, n, seed)[0]


def random_positions(volume, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``n`` random voxels of a (possibly lazy) volume with their flat indices, slab by slab.

    Returns (values float64, flat indices int64).
    """
    shape = tuple(int(v) for v in volume.shape)
    total = int(np.prod(shape))
    if total <= n:
        return np.asarray(volume).reshape(-1).astype(np.float64), np.arange(total, dtype=np.int64)
    rng = np.random.default_rng(seed)
    if isinstance(volume, np.ndarray):
        idx = rng.integers(0, total, n)
        return volume.reshape(-1)[idx].astype(np.float64), idx
    step = max(1, shape[0] // 32)
    per = max(1, n // len(range(0, shape[0], step)))
    plane = shape[1] * shape[2]
    vals, idx = [], []
    for z in range(0, shape[0], step):
        i = rng.integers(0, plane, per)
        vals.append(np.asarray(volume[z:z + 1]).reshape(-1)[i])
        idx.append(i + z * plane)
    return np.concatenate(vals).astype(np.float64), np.concatenate(idx)


def _trimmed_mean(v: np.ndarray, cut: float = 10.0) -> float:
    """Mean of the values between the ``cut`` and 100 - ``cut`` percentiles: a ring's mineral
    level. Not the median: a ring's mineral voxels mix phases of different grey, and the
    median of a two-phase mixture jumps from one phase's level to the other's as the
    mixture changes; the trimmed mean moves smoothly with it, and drops edge voxels and
    bright inclusions. (The resin, one phase, takes the median: its mean would follow the
    blurred halo around particles, and so the ring's particle density.)"""
    lo, hi = np.percentile(v, [cut, 100 - cut])
    return float(np.mean(v[(v >= lo) & (v <= hi)]))


TREND_BINS = 24
"""Bins of rho² (0-1) whose resin and mineral grey levels (trimmed means) the trend is fitted to."""

TREND_MIN_VOXELS = 200
"""Fewest sampled voxels of a side (resin or mineral) for a bin to enter the fit."""


AXIS_CELLS = 8
"""Cells per slice axis (a grid of columns through all z) on which the axis is looked for."""

AXIS_GAIN = 0.5
"""An axis off the slice centre is taken only where it halves the cell levels' residual."""

AXIS_MAX = 2.0
"""Farthest axis taken, in half diagonals of a slice from its centre (farther: a sub-volume far
from the axis, whose cupping is nearly a plane; the slice centre is kept)."""


def _axis_centre(y: np.ndarray, x: np.ndarray, values: np.ndarray, mineral: np.ndarray,
                 shape) -> tuple[float, float] | None:
    """Where the rotation axis is, when it is not the slice centre (None: keep the centre).

    The sampled voxels are grouped in ``AXIS_CELLS`` x ``AXIS_CELLS`` columns; the resin
    (median) and mineral (trimmed mean) level of each column is fitted by the paraboloid
    ``a + b u + c v + d (u² + v²)`` (u, v: position from the slice centre) and by the
    centred ``a + d (u² + v²)``. Where, for resin or mineral, the paraboloid halves the
    residual of the centred fit (``AXIS_GAIN``), its apex ``(-b / 2d, -c / 2d)`` is the axis
    (the series with the larger gain decides). A reconstruction written about its rotation
    axis, the usual case, keeps the slice centre: the centred fit explains its cells.
    """
    ny, nx = shape[1], shape[2]
    sy, sx = (ny - 1) / 2, (nx - 1) / 2
    half = 0.5 * float(np.hypot(ny, nx))
    cell = (y * AXIS_CELLS // ny) * AXIS_CELLS + (x * AXIS_CELLS // nx)
    best = None
    for side, estimate in ((~mineral, np.median), (mineral, _trimmed_mean)):
        c, yy, xx, vv = cell[side], y[side], x[side], values[side]
        order = np.argsort(c, kind="stable")
        c, yy, xx, vv = c[order], yy[order], xx[order], vv[order]
        starts = np.flatnonzero(np.r_[True, c[1:] != c[:-1]])
        rows = [(float(np.mean(yy[a:b])), float(np.mean(xx[a:b])), float(estimate(vv[a:b])), b - a)
                for a, b in zip(starts, np.r_[starts[1:], c.size]) if b - a >= TREND_MIN_VOXELS]
        if len(rows) < 12:
            continue
        cy, cx, level, n = (np.array(r, np.float64) for r in zip(*rows))
        u, v, w = (cy - sy) / half, (cx - sx) / half, np.sqrt(n)
        full = np.stack([np.ones_like(u), u, v, u * u + v * v], axis=1)
        rss = []
        for a in (full[:, [0, 3]], full):
            coef = np.linalg.lstsq(a * w[:, None], level * w, rcond=None)[0]
            rss.append(float(np.sum((w * (a @ coef - level)) ** 2)))
        gain = rss[1] / rss[0] if rss[0] > 0 else 1.0
        if gain < AXIS_GAIN and coef[3] != 0 and (best is None or gain < best[0]):
            u0, v0 = -coef[1] / (2 * coef[3]), -coef[2] / (2 * coef[3])
            if np.hypot(u0, v0) <= AXIS_MAX:
                best = (gain, (sy + u0 * half, sx + v0 * half))
    return None if best is None else best[1]


@dataclass(frozen=True)
class RadialTrend:
    """How the resin and mineral grey levels change with the distance from the rotation axis.

    Each level is ``c0 + c1 rho²`` with ``rho = distance from (centre_y, centre_x) /
    radius``: the leading, parabolic shape of beam-hardening cupping. Two coefficients per
    level, fitted to 24 rings: a higher order would follow the rings' sampling noise (a ring
    cuts few particles, whose mixture of phases differs from ring to ring).
    ``radius`` is the distance from the axis to the farthest corner of a z slice (voxels;
    half its diagonal for an axis at the slice centre), so rho <= 1 in the volume.

    Assumes the CT's rotation axis is parallel to the volume's z axis, through the middle of
    each slice (how reconstructions are written) unless the grey levels put it elsewhere (a
    volume cropped from a larger reconstruction: ``_axis_centre``), that the trend does not
    change along z, and that the
    particles' composition does not change with the distance from the axis (the mineral
    median of each ring mixes all phases of the particles it cuts; a random packing has
    the same mixture at every distance, a sample sorted by composition would not).

    Attributes
    ----------
    resin, mineral : (2,) tuple of float
        ``(c0, c1)``, grey units.
    centre_yx : (2,) tuple of float
        The axis, voxels.
    radius : float
        Voxels.
    rho2_range : (2,) tuple of float
        The rho² range of the bins the fit saw; outside it the levels are held at its ends
        (the polynomial is not extrapolated).
    """

    resin: tuple[float, float]
    mineral: tuple[float, float]
    centre_yx: tuple[float, float]
    radius: float
    rho2_range: tuple[float, float]

    @classmethod
    def fit(cls, values: np.ndarray, flat_index: np.ndarray, shape, threshold: float,
            levels: tuple[float, float] | None = None, find_axis: bool = True) -> RadialTrend | None:
        """Fit to sampled voxels (``values`` at ``flat_index`` of a volume of ``shape``).

        ``find_axis``: look for a rotation axis off the slice centre (a volume cropped from a
        larger reconstruction, an offset axis; see ``_axis_centre``); otherwise, and where
        none is found, the axis is the slice centre.

        ``levels`` (resin, mineral): the volume's overall levels; the fitted lines are moved
        to average them over the rings (the trend describes the change, the levels stay the
        volume's own).

        None when fewer than 6 bins hold enough resin and mineral voxels, or when the fitted
        mineral level is not above the resin level everywhere in the range.
        """
        shape = tuple(int(v) for v in shape)
        # voxels at the volume's extreme values are fill or clipping (e.g. the corners outside a
        # reconstruction's circular field of view, written as 0), not resin or mineral
        values, flat_index = np.asarray(values, np.float64), np.asarray(flat_index, np.int64)
        real = (values > values.min()) & (values < values.max())
        values, flat_index = values[real], flat_index[real]
        _, y, x = np.unravel_index(flat_index, shape)
        mineral = values >= threshold
        cy, cx = (shape[1] - 1) / 2, (shape[2] - 1) / 2
        radius = 0.5 * float(np.hypot(shape[1], shape[2]))
        axis = _axis_centre(y, x, values, mineral, shape) if find_axis else None
        if axis is not None:
            cy, cx = axis
            # the farthest corner of the slice (voxel edges) from the axis: rho <= 1 in the volume
            radius = float(max(np.hypot(yc - cy, xc - cx) for yc in (-0.5, shape[1] - 0.5)
                               for xc in (-0.5, shape[2] - 0.5)))
        rho2 = ((y - cy) ** 2 + (x - cx) ** 2) / radius ** 2
        b = np.minimum((rho2 * TREND_BINS).astype(np.int64), TREND_BINS - 1)
        rows = []
        for k in range(TREND_BINS):
            sel = b == k
            lo, hi = values[sel & ~mineral], values[sel & mineral]
            if lo.size >= TREND_MIN_VOXELS and hi.size >= TREND_MIN_VOXELS:
                rows.append((float(np.mean(rho2[sel])), float(np.median(lo)), _trimmed_mean(hi), int(sel.sum())))
        if len(rows) < 6:
            return None
        r2, lo, hi, n = (np.array(c) for c in zip(*rows))
        a = np.stack([np.ones_like(r2), r2], axis=1) * np.sqrt(n)[:, None]
        cr = np.linalg.lstsq(a, lo * np.sqrt(n), rcond=None)[0]
        cm = np.linalg.lstsq(a, hi * np.sqrt(n), rcond=None)[0]
        if levels is not None:
            cr[0] += levels[0] - np.average(cr[0] + cr[1] * r2, weights=n)
            cm[0] += levels[1] - np.average(cm[0] + cm[1] * r2, weights=n)
        trend = cls(resin=tuple(float(v) for v in cr), mineral=tuple(float(v) for v in cm), centre_yx=(cy, cx),
                    radius=radius, rho2_range=(float(r2.min()), float(r2.max())))
        grid = np.linspace(r2.min(), r2.max(), 64)
        r_, m_ = trend.levels_at(grid)
        return trend if np.all(m_ > r_) else None

    def levels_at(self, rho2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(resin, mineral) grey levels at ``rho2`` (float64)."""
        t = np.clip(np.asarray(rho2, np.float64), *self.rho2_range)
        return self.resin[0] + t * self.resin[1], self.mineral[0] + t * self.mineral[1]

    def rho2(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """rho² of voxel rows ``y`` and columns ``x`` (broadcast)."""
        return ((np.asarray(y, np.float64) - self.centre_yx[0]) ** 2
                + (np.asarray(x, np.float64) - self.centre_yx[1]) ** 2) / self.radius ** 2

    def describe(self) -> str:
        """The trend in words: how much the mineral level changes from the axis to the rim."""
        r, m = self.levels_at(np.array(self.rho2_range))
        change = (m[1] - m[0]) / float(np.mean(m - r))
        return (f"the mineral grey level is {100 * abs(change):.1f}% of the resin-mineral contrast "
                f"{'lower' if change > 0 else 'higher'} at the rotation axis than at the rim of the field of view "
                "(cupping); removed before segmenting")

    def to_dict(self) -> dict:
        return {"model": "radial, c0 + c1 rho^2", "resin": list(self.resin),
                "mineral": list(self.mineral), "centre_yx": list(self.centre_yx), "radius": self.radius,
                "rho2_range": list(self.rho2_range)}

    @classmethod
    def from_dict(cls, d: dict) -> RadialTrend:
        return cls(resin=tuple(float(v) for v in d["resin"]), mineral=tuple(float(v) for v in d["mineral"]),
                   centre_yx=tuple(float(v) for v in d["centre_yx"]), radius=float(d["radius"]),
                   rho2_range=tuple(float(v) for v in d["rho2_range"]))


@dataclass(frozen=True)
class GreyLevels:
    """Resin and mineral grey levels of a CT volume (in its own grey units).

    Attributes
    ----------
    resin, mineral : float
        Median grey value below and above the Otsu threshold.
    threshold : float
        The Otsu threshold between them.
    trend : RadialTrend or None
        The levels' change with the distance from the rotation axis; when present,
        :meth:`normalise` uses the levels of each voxel's distance instead of the two
        constants (which still give the threshold and the volume's typical levels).
    """

    resin: float
    mineral: float
    threshold: float
    trend: RadialTrend | None = None

    @classmethod
    def from_volume(cls, volume, *, n_samples: int = 2_000_000, seed: int = 0, trend: bool = False,
                    find_axis: bool = True) -> GreyLevels:
        """Measure the levels on a random subsample of ``volume`` (ndarray, or a Zarr/dask array).

        With ``trend``, also fit a :class:`RadialTrend` on the same subsample (None where the
        volume does not allow one: too small, too few resin or mineral voxels), about an axis
        found from the grey levels when ``find_axis`` (else the slice centre).
        """
        if trend:
            sample, index = random_positions(volume, n_samples, seed)
        else:
            sample, index = random_voxels(volume, n_samples, seed), None
        keep = np.isfinite(sample)
        sample = sample[keep]
        everything = sample
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
        fitted = None
        if trend and volume.ndim == 3:
            # all voxels: the brightest 0.5% left out above are the rim's mineral under cupping
            fitted = RadialTrend.fit(everything, index[keep], volume.shape, t, levels=(resin, mineral),
                                     find_axis=find_axis)
        return cls(resin, mineral, t, fitted)

    @classmethod
    def from_dict(cls, d: dict) -> GreyLevels:
        trend = d.get("trend")
        return cls(float(d["resin"]), float(d["mineral"]), float(d["threshold"]),
                   None if trend is None else RadialTrend.from_dict(trend))

    def to_dict(self) -> dict:
        d = {"resin": self.resin, "mineral": self.mineral, "threshold": self.threshold}
        if self.trend is not None:
            d["trend"] = self.trend.to_dict()
        return d

    def normalise(self, block: np.ndarray, *, out_dtype=np.float32, origin=(0, 0, 0)) -> np.ndarray:
        """``(block - resin) / (mineral - resin)``: resin ~0, mineral ~1 (not clipped).

        With a trend, the levels are those of each voxel's distance from the axis, for a
        (Z, Y, X) ``block`` whose first voxel is voxel ``origin`` (z, y, x) of the volume.
        """
        if self.trend is None:
            out = np.asarray(block, dtype=out_dtype) - out_dtype(self.resin)
            out *= out_dtype(1.0 / (self.mineral - self.resin))
            return out
        block = np.asarray(block)
        if block.ndim != 3:
            raise ValueError(f"a (Z, Y, X) block is needed with a radial trend, got shape {block.shape}")
        return self.normalise_rows_cols(block, np.arange(block.shape[1]) + int(origin[1]),
                                        np.arange(block.shape[2]) + int(origin[2]), out_dtype=out_dtype)

    def normalise_rows_cols(self, block: np.ndarray, y: np.ndarray, x: np.ndarray, *, out_dtype=np.float32
                            ) -> np.ndarray:
        """:meth:`normalise` of a (Z, Y, X) ``block`` whose rows are volume rows ``y`` and whose
        columns are volume columns ``x`` (e.g. a strided view)."""
        if self.trend is None:
            return self.normalise(block, out_dtype=out_dtype)
        r, m = self.trend.levels_at(self.trend.rho2(np.asarray(y)[:, None], np.asarray(x)[None, :]))
        out = np.asarray(block, dtype=out_dtype) - r.astype(out_dtype)
        out *= (1.0 / (m - r)).astype(out_dtype)
        return out

    def normalise_voxels(self, values: np.ndarray, flat_index: np.ndarray, shape, *, out_dtype=np.float32
                         ) -> np.ndarray:
        """:meth:`normalise` of single voxels (``values`` at ``flat_index`` of a volume of ``shape``)."""
        if self.trend is None:
            return self.normalise(values, out_dtype=out_dtype)
        _, y, x = np.unravel_index(np.asarray(flat_index, np.int64), tuple(int(v) for v in shape))
        r, m = self.trend.levels_at(self.trend.rho2(y, x))
        return ((np.asarray(values, np.float64) - r) / (m - r)).astype(out_dtype)


class NormalisedVolume:
    """A (possibly lazy) CT seen through :meth:`GreyLevels.normalise`: slicing reads and
    normalises only the part asked for (training on a CT that is not held in memory)."""

    def __init__(self, volume, levels: GreyLevels) -> None:
        self.volume, self.levels = volume, levels
        self.shape = tuple(int(n) for n in volume.shape)
        self.ndim, self.dtype = len(self.shape), np.dtype(np.float32)

    def __getitem__(self, key) -> np.ndarray:
        block = np.asarray(self.volume[key])
        if self.levels.trend is None:
            return self.levels.normalise(block)
        key = key if isinstance(key, tuple) else (key,)
        if len(key) != 3 or not all(isinstance(k, slice) for k in key):
            raise TypeError(f"a radial trend needs a (z, y, x) tuple of slices, got {key!r}")
        y, x = (np.arange(*k.indices(n)) for k, n in zip(key[1:], self.shape[1:]))
        return self.levels.normalise_rows_cols(block, y, x)


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
        u = levels.normalise(np.asarray(volume[tuple(slice(a, a + b) for a, b in zip(lo, box))]), origin=lo)
        grad = ndimage.gaussian_gradient_magnitude(u, d)
        half = np.abs(ndimage.gaussian_filter(u, d) - 0.5) < 0.1
        inner = tuple(slice(m, max(m, n - m)) for n in u.shape)  # away from the crop faces
        vals.append(grad[inner][half[inner]])
    g = np.concatenate(vals) if vals else np.zeros(0)
    if g.size < 100:
        return float("nan")
    s2 = 1.0 / (2 * np.pi * float(np.median(g)) ** 2) - d ** 2
    return float(np.sqrt(max(s2, 0.0)))

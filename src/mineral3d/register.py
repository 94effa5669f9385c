"""Slice-to-volume registration: where a 2D mineral map lies in the CT volume.

Both modalities show particles against resin clearly, so registration matches the map's
particle mask with a particle indicator derived from the CT grey values:

1. CT indicator: grey values scaled between the two Otsu class means (resin -> 0,
   particle -> 1, clipped), so that bright inclusions do not dominate. The map's
   unclassified pixels count only where the section's BSE image (if given) says particle
   or resin (:func:`bse_particles`).
2. Global search at a coarse level (``coarse_vox`` voxels per sample): for candidate
   z-planes every ``depth_step`` voxels, every in-plane rotation (``angle_step`` degrees,
   0-360) and both handednesses (a map seen from below is mirrored), the masked normalised
   cross-correlation (Padfield 2012, with both masks) over all shifts by FFT. It cannot be
   trapped: every depth, rotation and shift is scored. A map may reach beyond the CT: only
   the part inside counts, discounted by :func:`overlap_discount`, and at least
   ``min_overlap`` of it must be inside.
3. The best distinct peaks get a tilt grid (up to ``max_tilt_deg``) and a continuous
   refinement of all 7 parameters (centre, normal, rotation, scale) by Powell's method
   through a pyramid (coarse -> medium -> full resolution), with the map blurred and
   the CT smoothed to each level.
4. Confidence: the final NCC, and the runner-up, the best refined candidate that converged
   elsewhere (or, when all converge to one plane, the best coarse peak that is not a
   neighbour of the winner). The runner-up's misfit 1 - NCC must be ``min_ratio`` times the
   winner's. Before all this, the map must show at least ``min_anchors`` (3) separate
   particle regions not on one line: a plane needs three anchors, and with one or two
   particles its tilt is not fixed by the data. Any failed check is a
   :class:`RegistrationError` (exit code 3), never a transform that looks valid.

All thresholds are in NCC units and are documented in docs/registration.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from scipy import fft as sfft
from scipy import ndimage, optimize

from mineral3d.errors import MineralError, ParameterError
from mineral3d.intensity import otsu_threshold
from mineral3d.phase_table import RESIN, UNCLASSIFIED
from mineral3d.plane import PlaneTransform, fibonacci_hemisphere, rotation_taking


class RegistrationError(MineralError):
    """No confident registration: the map does not match this CT (exit code 3)."""

    exit_code = 3
    prefix = "not registered: "


@dataclass(frozen=True)
class RegisterConfig:
    """Search settings (lengths in CT voxels, angles in degrees).

    ``min_overlap`` is the share of the map's classified area that must lie inside the CT
    volume (a map may cover more than the CT's field of view); only that part is scored.
    """

    coarse_vox: float = 4.0
    depth_step: float = 3.0
    angle_step: float = 3.0
    max_tilt_deg: float = 10.0
    scale_range: float = 0.10
    n_candidates: int = 4
    min_score: float = 0.75
    min_ratio: float = 2.0
    min_anchors: int = 3
    min_anchor_area: float = 0.005
    min_anchor_spread: float = 0.05
    min_overlap: float = 0.75
    orientation: str = "near-z"

    @classmethod
    def for_orientation(cls, orientation: str, **kw) -> RegisterConfig:
        """Defaults per search: ``any`` scans ~80 plane normals, so its coarse level is coarser."""
        if orientation == "any":
            kw = {"coarse_vox": 8.0, "depth_step": 6.0, "angle_step": 6.0, **kw}
        return cls(orientation=orientation, **kw)


class Peak(NamedTuple):
    """A candidate plane from the coarse search: its NCC and pose (centre in CT voxels, degrees)."""

    score: float
    cz: float
    angle: float
    mirror: bool
    cy: float
    cx: float
    frame: int = 0
    """Index of the search frame (``near-z``: 0, the identity; ``any``: one per normal)."""


class Candidate(NamedTuple):
    """A refined candidate: final score, the 7 pose parameters of :func:`_pose`, handedness, frame."""

    score: float
    params: np.ndarray
    mirror: bool
    coarse_score: float
    frame: np.ndarray | None


@dataclass
class RegistrationResult:
    transform: PlaneTransform
    score: float
    coarse_score: float
    runner_up: float
    mirrored: bool
    settings: dict = field(default_factory=dict)
    overlap: float = 1.0

    def record(self) -> dict:
        return {"score": self.score, "coarse_score": self.coarse_score, "runner_up": self.runner_up,
                "mirrored": self.mirrored, "overlap": self.overlap, "search": self.settings}


# --- preparing both sides -------------------------------------------------------------------

def indicator_levels(ct: np.ndarray, *, seed: int = 0) -> tuple[float, float]:
    """Resin and particle grey levels (Otsu class means of up to 2 M voxels, 0.5-99.5 percentiles)."""
    flat = ct.reshape(-1)
    sample = flat[np.random.default_rng(seed).integers(0, flat.size, min(flat.size, 2_000_000))].astype(np.float64)
    lo, hi = np.percentile(sample, [0.5, 99.5])
    sample = sample[(sample >= lo) & (sample <= hi)]
    t = otsu_threshold(sample)
    return float(sample[sample < t].mean()), float(sample[sample >= t].mean())


def indicator_from_levels(ct: np.ndarray, levels: tuple[float, float]) -> np.ndarray:
    """Particle indicator of grey values ``ct``: (ct - resin) / (particle - resin), clipped to [0, 1], float32."""
    m0, m1 = levels
    out = (np.asarray(ct).astype(np.float32) - np.float32(m0)) / np.float32(m1 - m0)
    return np.clip(out, 0.0, 1.0, out=out)


def ct_indicator(ct: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """Particle indicator (float32, ~0 resin, ~1 particle) from CT grey values (Otsu class means)."""
    return indicator_from_levels(ct, indicator_levels(ct, seed=seed))


def bse_particles(bse: np.ndarray, ids: np.ndarray, *, min_agreement: float = 0.9) -> tuple[np.ndarray | None, float]:
    """Particle pixels of a BSE image, checked against the map's classified pixels.

    Resin (low mean atomic number) is dark in BSE, but so can a light phase be (LiAlO2), so
    the grey threshold is learnt from the map: the BSE image (smoothed by 1 px) is split
    where it best separates the map's resin pixels from its particle pixels (fewest
    disagreeing classified pixels). Returns the bool mask and the share of classified pixels
    on which it agrees with the map; the mask is None when that share is below
    ``min_agreement`` (then the BSE image is not used).
    """
    sm = ndimage.gaussian_filter(np.asarray(bse, np.float32), 1.0)
    classified = ids != UNCLASSIFIED
    if not classified.any():
        return None, 0.0
    edges = np.linspace(sm.min(), sm.max() + 1e-6, 257)
    is_particle = ids[classified] != RESIN
    h_par = np.histogram(sm[classified][is_particle], edges)[0]
    h_res = np.histogram(sm[classified][~is_particle], edges)[0]
    # threshold at edge k: particles below it and resin above it disagree
    wrong = np.concatenate([[0], np.cumsum(h_par)]) + (h_res.sum() - np.concatenate([[0], np.cumsum(h_res)]))
    particles = sm >= edges[int(np.argmin(wrong))]
    agree = float((particles == (ids != RESIN))[classified].mean())
    return (particles if agree >= min_agreement else None), agree


def map_layers(ids: np.ndarray, bse_mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Particle mask and weight of a map, float32.

    Unclassified pixels get zero weight, unless ``bse_mask`` (particle pixels of the BSE
    image, :func:`bse_particles`) says what they are: then they count with its value.
    """
    ids = np.asarray(ids)
    weight = (ids != UNCLASSIFIED).astype(np.float32)
    mask = ((ids != RESIN) & (ids != UNCLASSIFIED)).astype(np.float32)
    if bse_mask is not None:
        unclassified = ids == UNCLASSIFIED
        mask[unclassified] = bse_mask[unclassified]
        weight[:] = 1.0
    return mask, weight


def _level_map(mask, weight, factor_px: float, sigma_px: float):
    """Map mask and weight smoothed (sigma, px) then sampled every ``factor_px`` pixels."""
    num = ndimage.gaussian_filter(mask * weight, sigma_px) if sigma_px > 0 else mask * weight
    den = ndimage.gaussian_filter(weight, sigma_px) if sigma_px > 0 else weight
    h, w = mask.shape
    r = np.arange(0, h, factor_px)
    c = np.arange(0, w, factor_px)
    rr, cc = np.meshgrid(r, c, indexing="ij")
    n = ndimage.map_coordinates(num, [rr, cc], order=1)
    d = ndimage.map_coordinates(den, [rr, cc], order=1)
    val = np.divide(n, d, out=np.zeros_like(n), where=d > 1e-3)
    return rr, cc, val.astype(np.float32), np.clip(d, 0, 1).astype(np.float32)


def particle_anchors(ids: np.ndarray, *, min_area: float = 0.005) -> tuple[int, float]:
    """Separate particle regions of a map that can anchor a plane, and how far they spread.

    ``ids`` is a phase-id map, or a bool particle mask. Returns the number of 8-connected
    particle regions covering at least ``min_area`` of the map, and the smallest standard
    deviation of their centroids (over the principal axes) relative to sqrt(map area): 0 when
    fewer than three or when they lie on a line.
    """
    import cc3d

    particles = ids if ids.dtype == bool else (ids != RESIN) & (ids != UNCLASSIFIED)
    lab = cc3d.connected_components(particles[None].astype(np.uint8), connectivity=26)[0]
    sizes = np.bincount(lab.ravel())
    big = np.flatnonzero(sizes[1:] >= min_area * ids.size) + 1
    if len(big) < 3:
        return len(big), 0.0
    rows, cols = np.indices(ids.shape)
    keep = np.isin(lab, big)
    n = np.bincount(lab[keep], minlength=lab.max() + 1)[big]
    cents = np.stack([np.bincount(lab[keep], weights=rows[keep], minlength=lab.max() + 1)[big] / n,
                      np.bincount(lab[keep], weights=cols[keep], minlength=lab.max() + 1)[big] / n], axis=1)
    spread = np.sqrt(max(np.linalg.eigvalsh(np.cov(cents.T))[0], 0.0)) / np.sqrt(ids.size)
    return len(big), float(spread)


def _ncc(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> float:
    sw = w.sum()
    if sw <= 0:
        return -1.0
    ma, mb = (a * w).sum() / sw, (b * w).sum() / sw
    da, db = a - ma, b - mb
    va, vb = (w * da * da).sum(), (w * db * db).sum()
    if va <= 0 or vb <= 0:
        return -1.0
    return float((w * da * db).sum() / np.sqrt(va * vb))


def overlap_discount(ncc, overlap):
    """NCC over part of a map, discounted to the evidence it carries for the whole map.

    A correlation over a share ``overlap`` of the map is worth as much as one of
    ``tanh(atanh(ncc) * sqrt(overlap))`` over all of it (Fisher's z grows with the square
    root of the sample size). Equal to ``ncc`` at full overlap, so every threshold keeps
    its meaning; a partial overlap never scores higher than the same NCC over the whole map.
    """
    overlap = np.minimum(overlap, 1.0)
    out = np.tanh(np.arctanh(np.clip(ncc, -0.999999, 0.999999)) * np.sqrt(np.maximum(overlap, 0.0)))
    return np.where(overlap >= 1.0, ncc, out)


def _score_inside(vol, val, wgt, pts, min_overlap: float) -> float:
    """Weighted NCC of map values against ``vol`` at CT points (N, 3), on the points inside the volume.

    Discounted by :func:`overlap_discount` for the share of the map's weight outside; -1
    when less than ``min_overlap`` of it lies inside.
    """
    inside = np.all((pts >= -0.5) & (pts <= np.array(vol.shape) - 0.5), axis=1)
    w = wgt * inside
    share = w.sum() / max(wgt.sum(), 1e-12)
    if share < min_overlap:
        return -1.0
    return float(overlap_discount(_ncc(val, ndimage.map_coordinates(vol, pts.T, order=1, mode="nearest"), w), share))


# --- the global search ---------------------------------------------------------------------

def _templates(mask, weight, *, px_per_sample: float, angles, mirror: bool):
    """Rotated (and mirrored) map templates at the coarse level: values and support."""
    sigma = px_per_sample / 2
    num = ndimage.gaussian_filter(mask * weight, sigma)
    den = ndimage.gaussian_filter(weight, sigma)
    h, w = mask.shape
    out = []
    # template pixel (i, j) -> map position: centre + R(theta) [i - ci, j - cj] * px_per_sample
    radius = 0.5 * np.hypot(h, w) / px_per_sample
    n = int(np.ceil(2 * radius)) + 1
    ci = (n - 1) / 2
    ii, jj = np.meshgrid(np.arange(n) - ci, np.arange(n) - ci, indexing="ij")
    for a in angles:
        t = np.deg2rad(a)
        c, s = np.cos(t), np.sin(t)
        di, dj = ii * px_per_sample, jj * px_per_sample
        if mirror:
            dj = -dj
        rows = (h - 1) / 2 + c * di - s * dj
        cols = (w - 1) / 2 + s * di + c * dj
        inside = (rows >= 0) & (rows <= h - 1) & (cols >= 0) & (cols <= w - 1)
        nv = ndimage.map_coordinates(num, [rows, cols], order=1, cval=0)
        dv = ndimage.map_coordinates(den, [rows, cols], order=1, cval=0)
        sup = (inside & (dv > 0.5)).astype(np.float32)
        val = np.divide(nv, dv, out=np.zeros_like(nv), where=dv > 1e-3).astype(np.float32) * sup
        out.append((val, sup))
    return out, n


def _masked_ncc_fft(planes_f, planes2_f, valid_f, tpl, sup, shape, min_count, n_total):
    """Masked NCC maps of one template against a batch of planes (Padfield 2012, both masks).

    Only the overlap of the template's support with the planes' valid region counts, so a
    template that sticks out of the planes is scored on the part inside. Shifts whose
    overlap holds fewer than ``min_count`` template samples, or where the planes are
    nearly uniform there, score -1; partial overlaps are discounted (:func:`overlap_discount`)
    against ``n_total``, the template's whole support.
    """
    def corr(a_f, b):  # correlation = convolution with the flipped second argument
        return sfft.irfft2(a_f * sfft.rfft2(b[::-1, ::-1], s=shape, workers=-1), s=shape, workers=-1)

    n = corr(valid_f, sup)
    st = corr(valid_f, tpl)
    st2 = corr(valid_f, tpl * tpl)
    tf = sfft.rfft2(tpl[::-1, ::-1], s=shape, workers=-1)
    sf = sfft.rfft2(sup[::-1, ::-1], s=shape, workers=-1)
    num = sfft.irfft2(planes_f * tf, s=shape, workers=-1)
    s1 = sfft.irfft2(planes_f * sf, s=shape, workers=-1)
    s2 = sfft.irfft2(planes2_f * sf, s=shape, workers=-1)
    n_safe = np.maximum(n, 1.0)
    var_p = s2 - s1 * s1 / n_safe
    var_t = st2 - st * st / n_safe
    ncc = (num - s1 * st / n_safe) / np.sqrt(np.maximum(var_p, 1e-6) * np.maximum(var_t, 1e-6))
    ncc = overlap_discount(ncc, n / n_total)
    ncc[np.broadcast_to((n < min_count) | (var_t < 0.02 * n_safe), ncc.shape) | (var_p < 0.02 * n_safe)] = -1
    return ncc


def _z_planes(ind: np.ndarray, config: RegisterConfig):
    """Coarse z-planes of the smoothed indicator: (D, ny, nx), depths and grid steps (voxels)."""
    f = config.coarse_vox
    z, y, x = ind.shape
    sm = ndimage.gaussian_filter(ind, (1.0, f / 2, f / 2))
    depths = np.arange(0, z, config.depth_step)
    gy, gx = np.arange(0, y, f), np.arange(0, x, f)
    planes = ndimage.map_coordinates(sm, np.meshgrid(depths, gy, gx, indexing="ij"), order=1)
    return planes.astype(np.float32), depths


def coarse_search(planes: np.ndarray, depths: np.ndarray, mask, weight, *, scale: float, config: RegisterConfig):
    """Score every depth, rotation, handedness and shift of a stack of coarse planes.

    ``planes`` (D, ny, nx) are sampled every ``config.coarse_vox`` voxels in-plane, at
    ``depths`` (voxels). Returns :class:`Peak` s (``cz`` = depth, centre in voxels of the
    planes' frame), best first.
    """
    f = config.coarse_vox
    _, ny, nx = planes.shape
    px_per_sample = f / scale
    angles = np.arange(0, 360, config.angle_step)
    peaks = []
    for mirror in (False, True):
        tpls, n = _templates(mask, weight, px_per_sample=px_per_sample, angles=angles, mirror=mirror)
        shape = (ny + n, nx + n)
        pf = sfft.rfft2(planes, s=shape, workers=-1)
        pf2 = sfft.rfft2(planes * planes, s=shape, workers=-1)
        valid_f = sfft.rfft2(np.ones((ny, nx), np.float32), s=shape, workers=-1)
        for a, (val, sup) in zip(angles, tpls):
            n_sup = sup.sum()
            if n_sup < 16:
                continue
            t0 = (val - (val * sup).sum() / n_sup) * sup
            if float((t0 * t0).sum()) <= 0:
                continue
            ncc = _masked_ncc_fft(pf, pf2, valid_f, t0, sup, shape, min_count=config.min_overlap * n_sup,
                                  n_total=n_sup)
            # output index k <-> template top-left at k - (n - 1)
            best_per_depth = ncc.reshape(len(depths), -1).max(axis=1)
            for dd in np.argsort(best_per_depth)[-3:]:
                k = int(np.argmax(ncc[dd]))
                i, j = np.unravel_index(k, ncc[dd].shape)
                # template centre = top-left + (n - 1) / 2, in coarse samples -> voxels
                cy = (i - (n - 1) + (n - 1) / 2) * f
                cx = (j - (n - 1) + (n - 1) / 2) * f
                peaks.append(Peak(float(ncc[dd, i, j]), float(depths[dd]), float(a), mirror, cy, cx))
    peaks.sort(key=lambda p: -p.score)
    return peaks


def _distinct(p: Peak, q: Peak, *, radius_vox: float, angle_deg: float) -> bool:
    if p.mirror != q.mirror:
        return True
    da = abs((p.angle - q.angle + 180) % 360 - 180)
    dist = np.sqrt((p.cz - q.cz) ** 2 + (p.cy - q.cy) ** 2 + (p.cx - q.cx) ** 2)
    return dist > radius_vox or da > angle_deg


# --- refinement ----------------------------------------------------------------------------

def _frame(n0: np.ndarray) -> np.ndarray:
    """(3, 3) rotation whose columns are the frame axes (normal, row, col) of base normal n0."""
    return rotation_taking(np.array([1.0, 0.0, 0.0]), n0 / np.linalg.norm(n0))


def _pose(params, shape, scale0, mirror, frame=None):
    """Plane of parameters (centre z, y, x; normal offsets a, b; rotation; log scale).

    The normal is the frame's first axis tilted by (a, b) towards its other two axes; the
    rotation is measured in the frame (for the identity frame: tilts and rotation about z).
    """
    cz, cy, cx, a, b, rot, logs = params
    fr = np.eye(3) if frame is None else frame
    n = fr @ np.array([1.0, a, b])
    n /= np.linalg.norm(n)
    if frame is None:
        tilt = np.rad2deg(np.arcsin(min(1.0, np.hypot(a, b) / np.sqrt(1 + a * a + b * b))))
        t = PlaneTransform.from_pose(centre_zyx=(cz, cy, cx), map_shape=shape, scale=scale0 * np.exp(logs),
                                     tilt_deg=tilt, azimuth_deg=np.rad2deg(np.arctan2(a, b)), rotation_deg=rot,
                                     mirror=mirror)
        return t
    # in the frame, build the near-z pose, then rotate it into the CT
    local_n = fr.T @ n
    tilt = np.rad2deg(np.arccos(np.clip(local_n[0], -1, 1)))
    az = np.rad2deg(np.arctan2(local_n[1], local_n[2]))
    t = PlaneTransform.from_pose(centre_zyx=(0, 0, 0), map_shape=shape, scale=scale0 * np.exp(logs),
                                 tilt_deg=tilt, azimuth_deg=az, rotation_deg=rot, mirror=mirror)
    m = fr @ t.matrix
    m[:, 2] += np.array([cz, cy, cx])
    return PlaneTransform(m)


def _refine(vol, mask, weight, params, *, shape, scale0, mirror, level_vox, config, frame=None, maxiter=2000):
    sm = ndimage.gaussian_filter(vol, level_vox / 2) if level_vox > 0.6 else vol
    px = max(1.0, level_vox / scale0)
    rr, cc, val, wgt = _level_map(mask, weight, px, sigma_px=px / 2 if px > 1 else 0.5 / scale0)
    keep = wgt > 0.3
    rr, cc, val, wgt = rr[keep], cc[keep], val[keep], wgt[keep]
    lim = np.log(1 + config.scale_range)
    max_n = np.tan(np.deg2rad(config.max_tilt_deg + 1))

    def cost(p):
        if abs(p[6]) > lim or np.hypot(p[3], p[4]) > max_n:
            return 1.0
        t = _pose(p, shape, scale0, mirror, frame)
        return -_score_inside(sm, val, wgt, t.apply(rr, cc), config.min_overlap)

    scales = np.array([level_vox, level_vox, level_vox, 0.01 * level_vox, 0.01 * level_vox, 0.5 * level_vox, 0.01])
    res = optimize.minimize(lambda q: cost(params + q * scales), np.zeros(7), method="Powell",
                            options={"xtol": 0.05, "ftol": 1e-5, "maxfev": maxiter})
    return params + res.x * scales, -float(res.fun)


def search(ind: np.ndarray, mask, weight, *, scale: float, config: RegisterConfig) -> tuple[list[Peak], list]:
    """Coarse global search: candidate peaks (best first) and the search frames they refer to.

    ``near-z``: z-planes of the indicator (one frame, the identity, listed as None).
    ``any``: the same search in rotated frames whose normals cover the hemisphere
    (:func:`~mineral3d.plane.fibonacci_hemisphere`); peak centres are in CT voxels.
    """
    f = config.coarse_vox
    if config.orientation == "near-z":
        planes, depths = _z_planes(ind, config)
        return coarse_search(planes, depths, mask, weight, scale=scale, config=config), [None]
    sm = ndimage.gaussian_filter(ind, f / 2)
    centre = (np.array(ind.shape) - 1) / 2
    half = 0.5 * np.linalg.norm(ind.shape)
    dl = np.arange(-half, half + 1e-9, config.depth_step)
    gl = np.arange(-half, half + 1e-9, f)
    n_normals = int(np.ceil(2.4 / np.deg2rad(config.max_tilt_deg) ** 2))
    frames = [_frame(n) for n in fibonacci_hemisphere(n_normals)]
    local = np.stack(np.meshgrid(dl, gl, gl, indexing="ij"))  # (3, D, n, n) frame coordinates
    peaks = []
    for k, fr in enumerate(frames):
        pts = np.tensordot(fr, local, axes=1) + centre[:, None, None, None]
        planes = ndimage.map_coordinates(sm, pts, order=1, cval=0.0).astype(np.float32)
        for p in coarse_search(planes, dl - dl[0], mask, weight, scale=scale, config=config):
            loc = np.array([p.cz + dl[0], p.cy + gl[0], p.cx + gl[0]])
            cz, cy, cx = fr @ loc + centre
            peaks.append(Peak(p.score, cz, p.angle, p.mirror, cy, cx, k))
    peaks.sort(key=lambda p: -p.score)
    return peaks, frames


def refine(ind: np.ndarray, mask, weight, peaks: list[Peak], frames: list, *, shape, scale: float,
           config: RegisterConfig) -> list[Candidate]:
    """Tilt grid then Powell refinement through the pyramid for each peak; candidates best first."""
    f = config.coarse_vox
    results = []
    sm_c = ndimage.gaussian_filter(ind, f / 2)
    rr, cc, val, wgt = (a.ravel() for a in _level_map(mask, weight, f / scale, f / scale / 2))
    for p in peaks:
        frame = frames[p.frame]
        # template angle theta samples the map rotated by theta: the map's rows run at -theta
        # in the frame's (row, col) plane (at +theta for a mirrored map)
        base = np.array([p.cz, p.cy, p.cx, 0.0, 0.0, p.angle if p.mirror else -p.angle, 0.0])
        best_t, best_s = base, -2.0
        for tilt in np.arange(0, config.max_tilt_deg + 1e-9, 2.5):  # tilt grid at the coarse level
            for az in (np.arange(0, 360, 30) if tilt > 0 else [0.0]):
                trial = base.copy()
                trial[3], trial[4] = np.tan(np.deg2rad(tilt)) * np.sin(np.deg2rad(az)), \
                    np.tan(np.deg2rad(tilt)) * np.cos(np.deg2rad(az))
                t = _pose(trial, shape, scale, p.mirror, frame)
                sc = _score_inside(sm_c, val, wgt, t.apply(rr, cc), config.min_overlap)
                if sc > best_s:
                    best_t, best_s = trial, sc
        params = best_t
        for level in (f, f / 2, 1.0, 0.5):
            params, sc = _refine(ind, mask, weight, params, shape=shape, scale0=scale, mirror=p.mirror,
                                 level_vox=level, config=config, frame=frame)
        results.append(Candidate(sc, params, p.mirror, p.score, frame))
    results.sort(key=lambda r: -r.score)
    return results


def runner_up(results: list[Candidate], *, shape, scale: float, coarse_runner: float) -> float:
    """Score of the best refined candidate that converged elsewhere (or the other way up).

    When all converged to the winner's plane (corners within 3 voxels), ``coarse_runner``:
    the best coarse peak that is not the winner's neighbour.
    """
    best = results[0]
    h, w = shape
    corners = ([0, 0, h - 1, h - 1], [0, w - 1, 0, w - 1])
    ref = _pose(best.params, shape, scale, best.mirror, best.frame).apply(*corners)
    others = [r.score for r in results[1:]
              if r.mirror != best.mirror or np.linalg.norm(_pose(r.params, shape, scale, r.mirror, r.frame)
                                                            .apply(*corners) - ref, axis=1).max() > 3.0]
    return max(others) if others else coarse_runner


def _map_side(ids: np.ndarray, bse: np.ndarray | None, config: RegisterConfig):
    """The map's particle/resin layers (mask, weight) and what the BSE image did; refuses maps without outlines
    (and a search orientation that does not exist)."""
    if config.orientation not in ("near-z", "any"):
        raise ParameterError("orientation", f"must be near-z or any, got {config.orientation!r}")
    bse_mask, bse_note = None, "not given"
    if bse is not None:
        bse_mask, agree = bse_particles(bse, ids)
        bse_note = (f"fills {np.mean(ids == UNCLASSIFIED):.1%} unclassified pixels" if bse_mask is not None else
                    f"not used: its particle/resin split agrees with the map on {agree:.1%} of classified pixels")
    mask, weight = map_layers(ids, bse_mask)
    if mask.sum() < 0.005 * mask.size or mask.sum() > 0.995 * weight.sum():
        raise RegistrationError("the map shows no particle/resin outlines to register")
    anchors, spread = particle_anchors(ids if bse_mask is None else mask > 0.5, min_area=config.min_anchor_area)
    if anchors < config.min_anchors or spread < config.min_anchor_spread:
        raise RegistrationError(f"the map shows {anchors} separate particle region(s) of at least "
                                f"{config.min_anchor_area:.1%} of its area; {config.min_anchors} not on one line are "
                                "needed to fix the plane's tilt (a larger map, or lower --min-anchors at your risk)")
    return mask, weight, bse_note


def _candidates(ind: np.ndarray, mask, weight, *, shape, scale: float, config: RegisterConfig):
    """Coarse search then refinement: (candidates best first, best coarse score, runner-up score)."""
    peaks, frames = search(ind, mask, weight, scale=scale, config=config)
    if not peaks:
        raise RegistrationError("no candidate plane found")

    def distinct(p: Peak, q: Peak) -> bool:
        if p.frame != q.frame:
            n1 = frames[p.frame][:, 0] if frames[p.frame] is not None else np.array([1.0, 0, 0])
            n2 = frames[q.frame][:, 0] if frames[q.frame] is not None else np.array([1.0, 0, 0])
            if abs(float(np.dot(n1, n2))) < np.cos(np.deg2rad(2 * config.max_tilt_deg)):
                return True
        return _distinct(p, q, radius_vox=radius, angle_deg=20)

    best = peaks[0]
    radius = 0.25 * min(shape) * scale
    runner = next((p for p in peaks if distinct(best, p)), None)
    chosen: list[Peak] = []
    for p in peaks:
        if all(distinct(p, q) for q in chosen):
            chosen.append(p)
        if len(chosen) >= config.n_candidates:
            break
    results = refine(ind, mask, weight, chosen, frames, shape=shape, scale=scale, config=config)
    runner_score = runner_up(results, shape=shape, scale=scale, coarse_runner=runner.score if runner else -1.0)
    return results, float(best.score), float(runner_score)


def _settings(config: RegisterConfig, bse_note: str) -> dict:
    return {"coarse_vox": config.coarse_vox, "depth_step": config.depth_step, "angle_step": config.angle_step,
            "max_tilt_deg": config.max_tilt_deg, "scale_range": config.scale_range,
            "min_overlap": config.min_overlap, "orientation": config.orientation, "bse": bse_note}


def _accept(transform: PlaneTransform, s: float, coarse: float, runner_score: float, mirror: bool, settings: dict,
            *, weight, shape, volume_shape, config: RegisterConfig) -> RegistrationResult:
    """The result, or :class:`RegistrationError` when the match is weak or not distinct from the runner-up."""
    pts = transform.grid(shape).reshape(3, -1).T
    inside = np.all((pts >= -0.5) & (pts <= np.array(volume_shape) - 0.5), axis=1)
    overlap = float((weight.reshape(-1) * inside).sum() / max(weight.sum(), 1.0))
    result = RegistrationResult(transform, s, float(coarse), float(runner_score), bool(mirror), settings, overlap)
    if s < config.min_score:
        raise RegistrationError(f"best match is weak (NCC {s:.2f} < {config.min_score}): "
                                "is this map from this sample?")
    if (1 - runner_score) < config.min_ratio * (1 - s):
        raise RegistrationError(f"ambiguous: best NCC {s:.3f} vs runner-up {runner_score:.3f} (the runner-up "
                                f"must leave at least {config.min_ratio:g}x the misfit 1 - NCC of the best)")
    return result


def register_section(ct: np.ndarray, ids: np.ndarray, *, scale: float, config: RegisterConfig = RegisterConfig(),
                     indicator: np.ndarray | None = None, bse: np.ndarray | None = None) -> RegistrationResult:
    """Find the plane of a mineral map in a CT volume.

    The map's particle outlines (particle vs resin) are matched. Where the map is
    unclassified, the section's BSE image (when given and when it agrees with the map's
    classified pixels, :func:`bse_particles`) says particle or resin.

    Parameters
    ----------
    ct : (Z, Y, X) ndarray
        CT grey values.
    ids : (H, W) uint8 ndarray
        Mineral map phase ids (0 resin, 255 unclassified).
    scale : float
        Nominal CT voxels per map pixel (pixel_size_um / voxel_size_um); the true scale is
        searched within ``config.scale_range`` of it.
    config : RegisterConfig
    indicator : precomputed :func:`ct_indicator` (to register several maps against one CT).
    bse : (H, W) ndarray, optional
        The section's BSE image on the map's pixel grid.

    Raises
    ------
    RegistrationError
        The best match is weak or not distinct from the runner-up.
    """
    mask, weight, bse_note = _map_side(ids, bse, config)
    ind = ct_indicator(ct) if indicator is None else indicator
    shape = ids.shape
    results, coarse, runner_score = _candidates(ind, mask, weight, shape=shape, scale=scale, config=config)
    s, params, mirror, _, frame = results[0]
    transform = _pose(params, shape, scale, mirror, frame)
    return _accept(transform, s, coarse, runner_score, mirror, _settings(config, bse_note), weight=weight,
                   shape=shape, volume_shape=ind.shape, config=config)


# --- CT volumes larger than memory ------------------------------------------------------------

@dataclass(frozen=True)
class CoarseLevel:
    """A CT level for registering against a volume that is not read whole.

    Attributes
    ----------
    indicator : (z, y, x) float32 ndarray
        Particle indicator of the factor x factor x factor block means of the CT (level
        voxel k is centred on full-resolution voxel ``factor * k + (factor - 1) / 2``).
    factor : int
        Level voxel edge in CT voxels.
    levels : (float, float)
        Resin and particle grey levels (:func:`indicator_levels` of the block means), used
        for the full-resolution crops too.
    shape : tuple of int
        The full-resolution CT's shape.
    """

    indicator: np.ndarray
    factor: int
    levels: tuple[float, float]
    shape: tuple[int, int, int]


def coarse_level(block_means: np.ndarray, factor: int, shape, *, seed: int = 0) -> CoarseLevel:
    """:class:`CoarseLevel` from the CT's ``factor``-fold block means (a pyramid level)."""
    levels = indicator_levels(block_means, seed=seed)
    return CoarseLevel(indicator_from_levels(block_means, levels), int(factor), levels,
                       tuple(int(n) for n in shape))


def register_section_coarse_to_fine(ct, ids: np.ndarray, *, scale: float, level: CoarseLevel,
                                    config: RegisterConfig = RegisterConfig(),
                                    bse: np.ndarray | None = None) -> RegistrationResult:
    """:func:`register_section` for a CT that is not read whole: search on a coarse level, finish at full resolution.

    The search and the refinement of every candidate run on ``level`` (its indicator,
    map scale ``scale / factor``, coarse sampling and depth step divided by the factor, at
    least one level voxel), as does the runner-up test; the winner is then refined again
    through the full-resolution levels (``coarse_vox``, ``coarse_vox / 2``, 1 and 0.5
    voxel, as :func:`refine` does) on the indicator of the CT's voxels in the plane's box
    only (``ct[box]``: a lazy Zarr or memory-mapped CT reads just that), and its score
    there is the one ``config.min_score`` applies to.
    """
    from dataclasses import replace

    from mineral3d.plane import plane_box

    b = level.factor
    mask, weight, bse_note = _map_side(ids, bse, config)
    shape = ids.shape
    lcfg = replace(config, coarse_vox=max(1.0, config.coarse_vox / b), depth_step=max(1.0, config.depth_step / b))
    results, coarse, runner_score = _candidates(level.indicator, mask, weight, shape=shape, scale=scale / b,
                                                config=lcfg)
    _, params, mirror, _, frame = results[0]
    params = params.copy()
    params[:3] = b * params[:3] + (b - 1) / 2
    rough = _pose(params, shape, scale, mirror, frame)
    m = int(np.ceil(2 * b + 2 * config.coarse_vox)) + 2
    found = plane_box(rough, shape, level.shape, margin=(m, m))
    if found is None:
        raise RegistrationError("the best coarse plane lies outside the CT volume")
    lo, box = found
    crop = indicator_from_levels(ct[box], level.levels)
    params[:3] -= lo
    s = -1.0
    for lv in (config.coarse_vox, config.coarse_vox / 2, 1.0, 0.5):
        params, s = _refine(crop, mask, weight, params, shape=shape, scale0=scale, mirror=mirror, level_vox=lv,
                            config=config, frame=frame)
    params[:3] += lo
    transform = _pose(params, shape, scale, mirror, frame)
    settings = dict(_settings(config, bse_note), coarse_level_factor=b)
    return _accept(transform, s, coarse, runner_score, mirror, settings, weight=weight, shape=shape,
                   volume_shape=level.shape, config=config)

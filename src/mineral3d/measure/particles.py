"""The particle table: one row per particle. This module owns its schema.

Columns (lengths in µm, positions in voxels):

- ``particle``: the particle's label id;
- ``volume_um3``, ``esd_um`` = (6V/pi)^(1/3), ``surface_um2`` (weighted 2x2x2
  configurations, :mod:`mineral3d.measure.surface`), ``sphericity`` = pi^(1/3) (6V)^(2/3) / S;
- ``feret_max_um``, ``feret_min_um``: largest and smallest caliper width (voxel-centre
  extent + 1 voxel), searched over 77 directions and refined per particle to 0.25 degrees;
- ``centroid_z/y/x`` (voxels), ``bbox_z0, bbox_z1, ...`` (voxels, half-open), ``touches_border``;
- ``vol_<phase>``: volume fraction of each particle phase (resin and unclassified voxels
  inside a particle are ignored; the fractions sum to 1);
- ``surf_<phase>``: fraction of the particle's surface formed by each phase (exposure).

A run's table also has ``grade`` and ``grade_sd`` (the target grade calibrated against the
train sections and its spread: :func:`mineral3d.measure.grades.add_grade_columns`).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import cc3d
import fastremap
import numpy as np
import pandas as pd

from mineral3d.measure.surface import label_surfaces
from mineral3d.phase_table import PhaseTable
from mineral3d.plane import fibonacci_hemisphere


def _hull_candidates(labels: np.ndarray) -> np.ndarray:
    """Labelled voxels that can be vertices of their label's convex hull.

    A hull vertex is an extreme of its label along every line through it, so along each
    axis it has a neighbour of another label (or the volume edge) on at least one side.
    Keeping voxels for which that holds on all three axes is exact for calipers and keeps
    a small share of the surface voxels.
    """
    keep = labels > 0
    for axis in range(3):
        b = np.zeros(labels.shape, bool)
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        diff = labels[tuple(lo)] != labels[tuple(hi)]
        b[tuple(lo)] |= diff
        b[tuple(hi)] |= diff
        edge = [slice(None)] * 3
        for k in (0, -1):
            edge[axis] = k
            b[tuple(edge)] = True
        keep &= b
    return keep


def lattice_directions() -> np.ndarray:
    """The 13 directions of the voxel lattice (axes, face and body diagonals), unit (13, 3)."""
    d = np.array([v for v in np.ndindex(3, 3, 3)]) - 1
    d = d[np.any(d != 0, axis=1)]
    d = d[[tuple(v) > tuple(-v) for v in d]]  # one of each +-pair
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def _widths(pts, starts, dirs_per_point) -> np.ndarray:
    """Caliper widths (n_segments, K) for per-point direction sets (n_points, K, 3)."""
    proj = np.einsum("pj,pkj->pk", pts, dirs_per_point)
    return np.maximum.reduceat(proj, starts, axis=0) - np.minimum.reduceat(proj, starts, axis=0) + 1.0


def _refine(pts, starts, seg_of_point, best: np.ndarray, *, largest: bool, steps_deg=(4, 2, 1, 0.5, 0.25)):
    """Hill-climb each segment's direction over rings of 8 neighbours at shrinking angles."""
    phi = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    for step in np.tan(np.deg2rad(steps_deg)):
        helper = np.where(np.abs(best[:, :1]) < 0.9, np.array([[1.0, 0, 0]]), np.array([[0, 1.0, 0]]))
        e1 = np.cross(best, helper)
        e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
        e2 = np.cross(best, e1)
        ring = best[:, None] + step * (np.cos(phi)[None, :, None] * e1[:, None]
                                       + np.sin(phi)[None, :, None] * e2[:, None])
        cand = np.concatenate([best[:, None], ring], axis=1)
        cand /= np.linalg.norm(cand, axis=2, keepdims=True)
        w = _widths(pts, starts, cand[seg_of_point].astype(np.float32))
        pick = np.argmax(w, axis=1) if largest else np.argmin(w, axis=1)
        best = cand[np.arange(len(best)), pick]
    return best, (w.max(axis=1) if largest else w.min(axis=1))


def caliper_widths(labels: np.ndarray, n_labels: int, *, n_directions: int = 64, chunk: int = 8,
             block_points: int = 1_000_000):
    """Smallest and largest caliper width (voxels) of each label.

    The caliper of a voxel set along unit d is max(d.c) - min(d.c) + 1 over its voxel
    centres c: the object reaches about half a voxel beyond its extreme centres (exact
    for faces along the lattice, within ~0.6 voxel otherwise). A
    global search over ``n_directions`` nearly uniform directions plus the 13 lattice
    directions is refined per label by a hill climb down to 0.25 degrees. Only voxels that
    can be hull vertices are projected; per-label extremes come from ``reduceat``.
    """
    coords = np.nonzero(_hull_candidates(labels))
    return caliper_widths_of_points(np.stack(coords, axis=1), labels[coords], n_labels, n_directions=n_directions,
                                    chunk=chunk, block_points=block_points)


def _project(pts: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """(n, K) projections of float32 points on K directions, element by element (no BLAS: the
    value of a point does not depend on how many points are projected with it)."""
    return pts[:, :1] * dirs[:, 0] + pts[:, 1:2] * dirs[:, 1] + pts[:, 2:3] * dirs[:, 2]


def caliper_widths_of_points(points: np.ndarray, point_labels: np.ndarray, n_labels: int, *, n_directions: int = 64,
                             chunk: int = 4, block_points: int = 1_000_000):
    """:func:`caliper_widths` from the hull-candidate voxels ((m, 3) centres and their labels).

    Points are sorted by label (an index, not a copy of the points) and processed in blocks
    of whole labels of about ``block_points`` points, converted to float32 per block: memory
    is ~12 bytes per point beyond the inputs, and each label's result depends on its own
    points only.
    """
    lab = np.asarray(point_labels)
    order = np.argsort(lab, kind="stable")
    present, starts, sizes = np.unique(lab[order], return_index=True, return_counts=True)
    dirs = np.concatenate([lattice_directions(), fibonacci_hemisphere(n_directions)]).astype(np.float32)
    fmax = np.zeros(n_labels)
    fmin = np.zeros(n_labels)
    ends = starts + sizes
    b0 = 0
    while b0 < len(present):
        b1 = int(np.searchsorted(ends, starts[b0] + block_points, side="right"))
        b1 = max(b1, b0 + 1)
        p0, p1 = starts[b0], ends[b1 - 1]
        pts = np.asarray(points[order[p0:p1]], dtype=np.float32)
        sub_starts = starts[b0:b1] - p0
        n = b1 - b0
        # global search over the direction set, a few directions at a time
        best_max, best_min = np.zeros((n, 3)), np.zeros((n, 3))
        fmax_s, fmin_s = np.full(n, -np.inf), np.full(n, np.inf)
        for d0 in range(0, len(dirs), chunk):
            d = dirs[d0:d0 + chunk]
            proj = _project(pts, d)
            width = np.maximum.reduceat(proj, sub_starts, axis=0) - np.minimum.reduceat(proj, sub_starts, axis=0) + 1.0
            i_max, i_min = width.argmax(axis=1), width.argmin(axis=1)
            w_max, w_min = width[np.arange(n), i_max], width[np.arange(n), i_min]
            up, down = w_max > fmax_s, w_min < fmin_s
            best_max[up], fmax_s[up] = d[i_max[up]], w_max[up]
            best_min[down], fmin_s[down] = d[i_min[down]], w_min[down]
        # then a hill climb per label
        seg = np.repeat(np.arange(n), sizes[b0:b1])
        _, hi = _refine(pts, sub_starts, seg, best_max, largest=True)
        _, lo = _refine(pts, sub_starts, seg, best_min, largest=False)
        fmax[present[b0:b1]] = np.maximum(hi, fmax_s)
        fmin[present[b0:b1]] = np.minimum(lo, fmin_s)
        b0 = b1
    return fmin, fmax


def phase_counts(labels: np.ndarray, phases: np.ndarray, n_labels: int, *, slab: int = 16,
                 threads: int | None = None) -> np.ndarray:
    """Voxel count of each phase id in each label, (n_labels, 256), slab by slab along z in threads."""
    present = fastremap.unique(phases).astype(np.int64)  # compact bins: only the phases present
    lut = np.zeros(256, np.int64)
    lut[present] = np.arange(len(present))
    k = len(present)

    def one(z0):
        key = labels[z0:z0 + slab].astype(np.int64) * k + lut[phases[z0:z0 + slab]]
        return np.bincount(key.ravel(), minlength=n_labels * k)

    with ThreadPoolExecutor(threads or os.cpu_count() or 1) as pool:
        compact = sum(pool.map(one, range(0, labels.shape[0], slab)))
    out = np.zeros((n_labels, 256), np.int64)
    out[:, present] = np.asarray(compact).reshape(n_labels, k)
    return out


def particle_table(labels: np.ndarray, phases: np.ndarray, *, voxel_size_um: float, phase_table: PhaseTable,
                   n_directions: int = 64, calipers: bool = True, exposure: bool = True,
                   surfaces: bool = True) -> pd.DataFrame:
    """Measure every particle of a label volume.

    Parameters
    ----------
    labels : (Z, Y, X) integer ndarray
        Particle ids, 0 = no particle.
    phases : (Z, Y, X) uint8 ndarray
        Phase id of each voxel (ids of ``phase_table``).
    voxel_size_um : float
        Isotropic voxel edge, µm.
    phase_table : PhaseTable
    n_directions : int
        Directions of the global caliper search (plus the 13 lattice directions).
    calipers, exposure : bool
        Compute ``feret_*`` and ``surf_<phase>`` (the slowest columns); NaN when off.
    surfaces : bool
        Compute ``surface_um2`` and ``sphericity`` (NaN when off; off implies no exposure).

    Returns
    -------
    pandas.DataFrame, one row per particle (see the module docstring for the columns).
    """
    if labels.shape != phases.shape:
        raise ValueError(f"labels {labels.shape} and phases {phases.shape} differ in shape")
    v = float(voxel_size_um)
    labels = np.asarray(labels)
    if labels.dtype.kind not in "ui":
        raise ValueError(f"labels must be integers, got {labels.dtype}")
    ids = fastremap.unique(labels)
    ids = ids[ids != 0]
    if len(ids) == 0 or ids[-1] != len(ids):  # make ids consecutive 1..n
        remap = {int(k): i + 1 for i, k in enumerate(ids)}
        remap[0] = 0
        lab = fastremap.remap(labels, remap, preserve_missing_labels=False).astype(np.uint32, copy=False)
    else:
        lab = labels if labels.dtype == np.uint32 else labels.astype(np.uint32)
    n = len(ids) + 1
    phases = np.asarray(phases, np.uint8)
    with ThreadPoolExecutor(1) as pool:  # cc3d runs beside the (threaded) numpy passes
        future = pool.submit(cc3d.statistics, lab)
        pc = phase_counts(lab, phases, n)
        if surfaces:
            area, exp = label_surfaces(lab, phases if exposure else None, n_labels=n)
        else:
            area, exp = np.full(n, np.nan), None
        stats = future.result()
    counts = stats["voxel_counts"][:n].astype(np.int64)
    if calipers:
        fmin, fmax = caliper_widths(lab, n, n_directions=n_directions)
    else:
        fmin = fmax = np.full(n, np.nan)
    bbox = np.array([[b[0].start, b[1].start, b[2].start, b[0].stop, b[1].stop, b[2].stop]
                     for b in stats["bounding_boxes"][:n]])
    return assemble_table(np.arange(1, n), ids.astype(np.int64), counts=counts, centroids=stats["centroids"][:n],
                          bbox=bbox, phase_voxels=pc, area=area, exposure=exp, fmin=fmin, fmax=fmax,
                          shape=lab.shape, voxel_size_um=v, phase_table=phase_table)


def assemble_table(rows: np.ndarray, particle_ids: np.ndarray, *, counts, centroids, bbox, phase_voxels, area,
                   exposure, fmin, fmax, shape, voxel_size_um: float, phase_table: PhaseTable) -> pd.DataFrame:
    """The particle table from per-label sums (arrays indexed by label; ``rows`` the labels to report).

    ``bbox`` is (n, 6): z0, y0, x0 (inclusive) and z1, y1, x1 (exclusive), voxels; ``area``
    and ``exposure`` in voxel^2; ``fmin``/``fmax`` caliper widths in voxels.
    """
    v = float(voxel_size_um)
    shape = np.array(shape)
    bbox = np.asarray(bbox)[rows]
    touches = np.any(bbox[:, :3] == 0, axis=1) | np.any(bbox[:, 3:] == shape, axis=1)
    vol = np.asarray(counts)[rows] * v**3
    surface = np.asarray(area)[rows] * v**2
    cen = np.asarray(centroids)[rows]
    df = pd.DataFrame({
        "particle": np.asarray(particle_ids, np.int64),
        "volume_um3": vol,
        "esd_um": (6 * vol / np.pi) ** (1 / 3),
        "surface_um2": surface,
        "sphericity": np.pi ** (1 / 3) * (6 * vol) ** (2 / 3) / np.where(surface > 0, surface, np.nan),
        "feret_max_um": np.asarray(fmax)[rows] * v,
        "feret_min_um": np.asarray(fmin)[rows] * v,
        "centroid_z": cen[:, 0], "centroid_y": cen[:, 1], "centroid_x": cen[:, 2],
        "bbox_z0": bbox[:, 0], "bbox_z1": bbox[:, 3], "bbox_y0": bbox[:, 1], "bbox_y1": bbox[:, 4],
        "bbox_x0": bbox[:, 2], "bbox_x1": bbox[:, 5],
        "touches_border": touches,
    })
    material = phase_table.material
    mids = [p.id for p in material]
    mvox = np.asarray(phase_voxels)[rows][:, mids].astype(float)
    msum = mvox.sum(axis=1, keepdims=True)
    fractions = np.divide(mvox, msum, out=np.zeros_like(mvox), where=msum > 0)
    mexp = np.asarray(exposure)[rows][:, mids] if exposure is not None else np.full((len(rows), len(mids)), np.nan)
    esum = mexp.sum(axis=1, keepdims=True)
    efrac = np.divide(mexp, esum, out=np.zeros_like(mexp), where=esum > 0)
    for k, p in enumerate(material):
        df[f"vol_{p.name}"] = fractions[:, k]
    for k, p in enumerate(material):
        df[f"surf_{p.name}"] = efrac[:, k]
    df["material_um3"] = msum[:, 0] * v**3
    return df

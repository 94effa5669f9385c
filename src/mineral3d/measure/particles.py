"""The particle table: one row per particle. This module owns its schema.

Columns (lengths in µm, positions in voxels):

- ``particle``: the particle's label id;
- ``volume_um3``, ``esd_um`` = (6V/pi)^(1/3), ``surface_um2`` (weighted 2x2x2
  configurations, :mod:`mineral3d.measure.surface`), ``sphericity`` = pi^(1/3) (6V)^(2/3) / S;
- ``feret_max_um``, ``feret_min_um``: largest and smallest caliper width of the voxel set
  over a fixed set of directions (within ~1% of the true calipers);
- ``centroid_z/y/x`` (voxels), ``bbox_z0, bbox_z1, ...`` (voxels, half-open), ``touches_border``;
- ``vol_<phase>``: volume fraction of each particle phase (resin and unclassified voxels
  inside a particle are ignored; the fractions sum to 1);
- ``surf_<phase>``: fraction of the particle's surface formed by each phase (exposure).
"""

from __future__ import annotations

import cc3d
import fastremap
import numpy as np
import pandas as pd

from mineral3d.measure.surface import label_surfaces
from mineral3d.phases import PhaseTable


def fibonacci_hemisphere(n: int) -> np.ndarray:
    """n nearly uniform unit directions (n, 3) on the upper hemisphere (z, y, x), z >= 0."""
    i = np.arange(n) + 0.5
    z = 1 - i / n  # uniform in z on [0, 1)
    phi = np.pi * (1 + 5**0.5) * i
    r = np.sqrt(1 - z**2)
    return np.stack([z, r * np.sin(phi), r * np.cos(phi)], axis=1)


def _boundary_voxels(labels: np.ndarray) -> np.ndarray:
    """Mask of labelled voxels with a face neighbour of another label (or the volume edge)."""
    b = np.zeros(labels.shape, bool)
    for axis in range(3):
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
    return b & (labels > 0)


def calipers(labels: np.ndarray, n_labels: int, *, n_directions: int = 128, chunk: int = 8):
    """Smallest and largest caliper width (voxels) of each label over ``n_directions`` directions.

    The caliper of a voxel set along unit d is max(d.c) - min(d.c) + |d_z| + |d_y| + |d_x|
    over its voxel centres c (the extra term is the width of one voxel cube along d). Only
    boundary voxels are projected; per-label extremes come from ``reduceat`` on label-sorted
    voxels.
    """
    coords = np.nonzero(_boundary_voxels(labels))
    lab = labels[coords]
    order = np.argsort(lab, kind="stable")
    lab = lab[order]
    pts = np.stack(coords, axis=1)[order].astype(np.float32)
    present, starts = np.unique(lab, return_index=True)
    dirs = fibonacci_hemisphere(n_directions).astype(np.float32)
    fmax = np.zeros(n_labels)
    fmin = np.full(n_labels, np.inf)
    for d0 in range(0, n_directions, chunk):
        d = dirs[d0:d0 + chunk]
        proj = pts @ d.T
        width = (np.maximum.reduceat(proj, starts, axis=0) - np.minimum.reduceat(proj, starts, axis=0)
                 + np.abs(d).sum(axis=1))
        fmax[present] = np.maximum(fmax[present], width.max(axis=1))
        fmin[present] = np.minimum(fmin[present], width.min(axis=1))
    fmin[np.isinf(fmin)] = 0
    return fmin, fmax


def phase_counts(labels: np.ndarray, phases: np.ndarray, n_labels: int, *, slab: int = 16) -> np.ndarray:
    """Voxel count of each phase id in each label, (n_labels, 256), slab by slab along z."""
    out = np.zeros(n_labels * 256, np.int64)
    for z0 in range(0, labels.shape[0], slab):
        key = labels[z0:z0 + slab].astype(np.int64) * 256 + phases[z0:z0 + slab]
        out += np.bincount(key.ravel(), minlength=len(out))
    return out.reshape(n_labels, 256)


def particle_table(labels: np.ndarray, phases: np.ndarray, *, voxel_size_um: float, phase_table: PhaseTable,
                   n_directions: int = 128) -> pd.DataFrame:
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
        Directions for the calipers.

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
    stats = cc3d.statistics(lab)
    counts = stats["voxel_counts"][:n].astype(np.int64)
    phases = np.asarray(phases, np.uint8)
    pc = phase_counts(lab, phases, n)
    area, exposure = label_surfaces(lab, phases, n_labels=n)
    fmin, fmax = calipers(lab, n, n_directions=n_directions)

    bbox = np.array([[s.start for s in b] + [s.stop for s in b] if b is not None else [0] * 6
                     for b in stats["bounding_boxes"][:n]])
    shape = np.array(lab.shape)
    touches = np.any(bbox[:, :3] == 0, axis=1) | np.any(bbox[:, 3:] == shape, axis=1)

    vol = counts * v**3
    surface = area * v**2
    rows = slice(1, n)
    df = pd.DataFrame({
        "particle": ids.astype(np.int64),
        "volume_um3": vol[rows],
        "esd_um": (6 * vol[rows] / np.pi) ** (1 / 3),
        "surface_um2": surface[rows],
        "sphericity": np.pi ** (1 / 3) * (6 * vol[rows]) ** (2 / 3) / np.where(surface[rows] > 0, surface[rows], np.nan),
        "feret_max_um": fmax[rows] * v,
        "feret_min_um": fmin[rows] * v,
        "centroid_z": stats["centroids"][rows, 0], "centroid_y": stats["centroids"][rows, 1],
        "centroid_x": stats["centroids"][rows, 2],
        "bbox_z0": bbox[rows, 0], "bbox_z1": bbox[rows, 3], "bbox_y0": bbox[rows, 1], "bbox_y1": bbox[rows, 4],
        "bbox_x0": bbox[rows, 2], "bbox_x1": bbox[rows, 5],
        "touches_border": touches[rows],
    })
    material = phase_table.material
    mids = [p.id for p in material]
    mvox = pc[rows][:, mids].astype(float)
    msum = mvox.sum(axis=1, keepdims=True)
    fractions = np.divide(mvox, msum, out=np.zeros_like(mvox), where=msum > 0)
    mexp = exposure[rows][:, mids]
    esum = mexp.sum(axis=1, keepdims=True)
    efrac = np.divide(mexp, esum, out=np.zeros_like(mexp), where=esum > 0)
    for k, p in enumerate(material):
        df[f"vol_{p.name}"] = fractions[:, k]
    for k, p in enumerate(material):
        df[f"surf_{p.name}"] = efrac[:, k]
    df["material_um3"] = msum[:, 0] * v**3
    return df

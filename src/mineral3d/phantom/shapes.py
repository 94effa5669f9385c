"""Signed-distance bounds shared by every way the phantom is evaluated.

Each shape has a function returning, for coordinates relative to its centre (µm), a
value ``f`` with ``f <= 0`` exactly inside and ``|f|`` never larger than the true
distance to the surface (a conservative bound). "Inside" is *defined* as ``f <= 0``,
so the CT rasteriser (voxel grids) and the section renderer (points) describe one
geometry; the bound lets the rasteriser supersample only voxels near a surface.

Coordinates come either as broadcastable 1D grid axes (``dz[:, None, None]``,
``dy[None, :, None]``, ``dx[None, None, :]``) or as equal-length point arrays.
"""

from __future__ import annotations

import numpy as np

BOX, OCTAHEDRON, ELLIPSOID = 0, 1, 2


def primitive_sdf(axes: np.ndarray, half: np.ndarray, kind: int, dz, dy, dx) -> np.ndarray:
    """Signed distance bound (µm) of one oriented primitive.

    Parameters
    ----------
    axes : (3, 3) ndarray
        Rows are the primitive's unit local axes in world (z, y, x) components.
    half : (3,) ndarray
        Half extents along the local axes, µm.
    kind : int
        BOX, OCTAHEDRON or ELLIPSOID.
    dz, dy, dx : ndarray
        Broadcastable coordinates relative to the primitive centre, µm.
    """
    # Python floats keep float32 coordinates in float32
    a = [[float(v) for v in row] for row in axes]
    h = [float(v) for v in half]
    q = [a[j][0] * dz + a[j][1] * dy + a[j][2] * dx for j in range(3)]
    if kind == BOX:  # exact inside, a lower bound outside
        return np.maximum(np.maximum(np.abs(q[0]) - h[0], np.abs(q[1]) - h[1]), np.abs(q[2]) - h[2])
    if kind == OCTAHEDRON:  # the largest signed distance to its 8 face planes
        s = np.abs(q[0]) * (1 / h[0]) + np.abs(q[1]) * (1 / h[1]) + np.abs(q[2]) * (1 / h[2])
        return (s - 1.0) * float(1.0 / np.sqrt(np.sum(1.0 / np.asarray(h) ** 2)))
    r = np.sqrt((q[0] * (1 / h[0])) ** 2 + (q[1] * (1 / h[1])) ** 2 + (q[2] * (1 / h[2])) ** 2)
    return (r - 1.0) * min(h)


def primitive_half_extent(axes: np.ndarray, half: np.ndarray, kind: np.ndarray) -> np.ndarray:
    """Half extents (n, 3) of the world axis-aligned boxes of n primitives, µm."""
    scaled = np.abs(axes) * half[:, :, None]  # (n, j, a)
    box = scaled.sum(axis=1)
    octa = scaled.max(axis=1)
    ell = np.sqrt(((axes * half[:, :, None]) ** 2).sum(axis=1))
    return np.where((kind == BOX)[:, None], box, np.where((kind == OCTAHEDRON)[:, None], octa, ell))


def planes_sdf(normals: np.ndarray, offsets: np.ndarray, body: np.ndarray, dz, dy, dx) -> np.ndarray:
    """Signed distance bound (µm) of a union of convex polyhedra ``n . d <= offset``.

    Parameters
    ----------
    normals : (K, 3) ndarray
        Plane normals (z, y, x), any length.
    offsets : (K,) ndarray
    body : (K,) int ndarray
        Which convex body each plane bounds; the shape is the union of the bodies.
    dz, dy, dx : ndarray
        Broadcastable coordinates relative to the shape centre, µm.
    """
    norm = np.linalg.norm(normals, axis=1)
    out = None
    for b in np.unique(body):
        acc = None
        for k in np.flatnonzero(body == b):
            n0, n1, n2 = (float(v) for v in normals[k] / norm[k])
            term = n0 * dz + n1 * dy + n2 * dx - float(offsets[k] / norm[k])
            acc = term if acc is None else np.maximum(acc, term)
        out = acc if out is None else np.minimum(out, acc)
    return out


def random_rotations(rng: np.random.Generator, n: int) -> np.ndarray:
    """n uniformly random rotation matrices (n, 3, 3)."""
    q, r = np.linalg.qr(rng.standard_normal((n, 3, 3)))
    q = q * np.sign(np.diagonal(r, axis1=1, axis2=2))[:, None, :]
    q[np.linalg.det(q) < 0, :, 0] *= -1
    return q


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random rotation matrix (3, 3)."""
    return random_rotations(rng, 1)[0]


def unit_vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)

"""Particle fragments: irregular convex and non-convex polyhedra, and their placement.

A particle is a convex polyhedron (random planes at 0.75-1.0 of its radius around an
anisotropic core) or, for a share of them, the union of two (a body and an offset
lobe: non-convex). Each particle carries an offset into the bulk microstructure, so
every particle is a different fragment of the same slag.
"""

from __future__ import annotations

from dataclasses import dataclass

import edt
import numpy as np
from scipy.spatial import HalfspaceIntersection

from mineral3d.phantom.shapes import planes_sdf, random_rotation, unit_vectors

_BOUND = 1.3  # local bounding cube of each body, in units of its radius


@dataclass(frozen=True)
class ParticleShape:
    """One particle: half-spaces relative to its centre (µm) and its bulk offset (µm)."""

    centre: np.ndarray      # (3,) µm
    normals: np.ndarray     # (K, 3)
    offsets: np.ndarray     # (K,)
    body: np.ndarray        # (K,) body index
    extent: np.ndarray      # (3,) conservative half size of the axis-aligned box, µm
    bulk_offset: np.ndarray  # (3,) µm added to positions to find the particle's material

    def sdf(self, dz, dy, dx) -> np.ndarray:
        """Signed distance bound (µm) for coordinates relative to :attr:`centre` (µm)."""
        return planes_sdf(self.normals, self.offsets, self.body, dz, dy, dx)

    def inside(self, dz, dy, dx) -> np.ndarray:
        """Points inside, for coordinates relative to :attr:`centre` (µm)."""
        return self.sdf(dz, dy, dx) <= 0

    def moved(self, centre) -> ParticleShape:
        return ParticleShape(np.asarray(centre, float), self.normals, self.offsets, self.body, self.extent,
                             self.bulk_offset)


def _body(rng, radius: float, n_planes: int):
    """Half-spaces of one anisotropic convex body centred at 0, and its box half size."""
    rot = random_rotation(rng)
    scales = np.array([rng.uniform(1.0, 1.5), 1.0, rng.uniform(0.6, 1.0)]) * radius
    local = unit_vectors(rng, n_planes)
    local = np.concatenate([local, np.eye(3), -np.eye(3)])
    dist = np.concatenate([rng.uniform(0.75, 1.0, n_planes), np.full(6, _BOUND)])
    # plane n . q <= d with q = diag(1/s) rot^T x  ->  (rot diag(1/s) n) . x <= d
    normals = (local / scales) @ rot.T
    return normals, dist, _extent(normals, dist)


def _extent(normals: np.ndarray, offsets: np.ndarray, interior=np.zeros(3)) -> np.ndarray:
    """Half size (3,) about 0 of the box around the convex body ``normals . x <= offsets`` (its vertices)."""
    hs = HalfspaceIntersection(np.column_stack([normals, -offsets]), np.asarray(interior, float))
    return np.abs(hs.intersections).max(axis=0) * 1.0001 + 1e-6


def random_particle(rng: np.random.Generator, size_um: float, *, nonconvex: bool) -> ParticleShape:
    """A particle whose intermediate width is about ``size_um`` (the sieve size), centred at 0."""
    radius = size_um / 1.75
    n, d, ext = _body(rng, radius, int(rng.integers(8, 16)))
    normals, offsets, body, extent = [n], [d], [np.zeros(len(d), int)], ext
    if nonconvex:
        lobe_r = radius * rng.uniform(0.45, 0.7)
        shift = unit_vectors(rng, 1)[0] * radius * rng.uniform(0.7, 0.95)
        n2, d2, ext2 = _body(rng, lobe_r, int(rng.integers(7, 12)))
        normals.append(n2)
        offsets.append(d2 + n2 @ shift)  # n . (x - shift) <= d
        body.append(np.ones(len(d2), int))
        extent = np.maximum(extent, np.abs(shift) + ext2)
    return ParticleShape(np.zeros(3), np.concatenate(normals), np.concatenate(offsets), np.concatenate(body),
                         extent, rng.uniform(0, 1e5, 3))


def _clip(mask: np.ndarray, corner: np.ndarray, shape) -> tuple[tuple[slice, ...], np.ndarray]:
    """A local mask placed with its first voxel at ``corner``, clipped to a volume of ``shape``."""
    lo = np.maximum(corner, 0)
    hi = np.minimum(corner + mask.shape, shape)
    if np.any(hi <= lo):
        return (slice(0, 0),) * 3, mask[:0, :0, :0]
    inner = tuple(slice(int(a - c), int(b - c)) for a, b, c in zip(lo, hi, corner))
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi)), mask[inner]


def _gap(dist: np.ndarray, mask: np.ndarray, corner: np.ndarray) -> float | None:
    """Smallest distance (voxels, centre to centre) from the placed mask to earlier particles."""
    sl, m = _clip(mask, corner, dist.shape)
    if not m.any():
        return None
    return float(dist[sl][m].min())


def place_particles(rng: np.random.Generator, shape, voxel_um: float, sieve_um, *, packing: float = 0.25,
                    touching: float = 0.25, nonconvex: float = 0.3, min_gap_vox: float = 4.0,
                    max_failures: int = 200) -> list[ParticleShape]:
    """Place particles in a (Z, Y, X) volume without overlap.

    Random sequential placement until ``packing`` of the volume is particle or
    ``max_failures`` attempts in a row fail. Ordinary particles keep at least
    ``min_gap_vox`` voxels (centre to centre) from others; a share ``touching`` is pushed
    against an earlier particle to leave a gap of 1-2 voxels. Particles may be cut by
    the volume border. Centres are snapped to voxel centres.

    A distance field to the placed particles (capped a few voxels out) is kept up to
    date with ``edt`` on a crop around each new particle, so each trial is a lookup.
    """
    shape = np.asarray(shape)
    cap = int(np.ceil(min_gap_vox)) + 3
    dist = np.full(tuple(shape), np.inf, np.float32)
    placed: list[ParticleShape] = []
    filled, target, failures = 0, packing * dist.size, 0
    lo_um, hi_um = sieve_um
    while filled < target and failures < max_failures:
        size = float(np.exp(rng.uniform(np.log(lo_um), np.log(hi_um))))
        part = random_particle(rng, size, nonconvex=bool(rng.random() < nonconvex))
        touch = bool(placed) and rng.random() < touching
        if not touch:
            # cheap pre-check: the particle holds a ball of radius ~0.45 size/1.75 about its centre
            reach = 0.45 * size / 1.75 / voxel_um + min_gap_vox
            cands = np.rint(rng.uniform(0, 1, (20, 3)) * (shape - 1)).astype(int)
            ok = dist[cands[:, 0], cands[:, 1], cands[:, 2]] >= reach
            if not ok.any():
                failures += 1
                continue
            first_ok = cands[np.argmax(ok)]
        half = np.ceil(part.extent / voxel_um).astype(int)
        ax = [np.arange(-h, h + 1, dtype=np.float32) * np.float32(voxel_um) for h in half]
        mask = part.inside(ax[0][:, None, None], ax[1][None, :, None], ax[2][None, None, :])
        corner_of = lambda c: c - half  # noqa: E731  (mask voxel 0 for a centre at voxel c)
        centre = None
        if touch:
            for _ in range(6):  # a few directions from a few earlier particles
                other = np.rint(placed[int(rng.integers(len(placed)))].centre / voxel_um)
                u = unit_vectors(rng, 1)[0]
                t0, t1 = 0.0, float(np.abs(half).sum() * 2 + 3)
                for _ in range(14):  # bisect the distance along u to a gap of 1-2 empty voxels
                    t = (t0 + t1) / 2
                    c = np.rint(other + t * u).astype(int)
                    d = _gap(dist, mask, corner_of(c))
                    if d is None:
                        break
                    if d < 2.0:
                        t0 = t
                    elif d > 3.2:
                        t1 = t
                    else:
                        centre = c
                        break
                if centre is not None:
                    break
        else:
            c = first_ok
            d = _gap(dist, mask, corner_of(c))
            if d is not None and d >= min_gap_vox:
                centre = c
        if centre is None:
            failures += 1
            continue
        sl, m = _clip(mask, corner_of(centre), shape)
        if m.sum() < 27:
            failures += 1
            continue
        # distances to the new particle, within `cap` voxels of it
        lo = np.array([s.start for s in sl]) - cap
        hi = np.array([s.stop for s in sl]) + cap
        clo, chi = np.maximum(lo, 0), np.minimum(hi, shape)
        crop = tuple(slice(int(a), int(b)) for a, b in zip(clo, chi))
        free = np.ones(tuple(chi - clo), bool)
        free[tuple(slice(s.start - a, s.stop - a) for s, a in zip(sl, clo))] &= ~m
        dist[crop] = np.minimum(dist[crop], edt.edt(free, black_border=False, parallel=1))
        placed.append(part.moved(centre * voxel_um))
        filled += int(m.sum())
        failures = 0
    return placed

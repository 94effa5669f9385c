"""A procedural slag microstructure that can be evaluated at any point in µm.

Space is cut into cubic cells; each cell's crystals come from a random generator
seeded by (seed, cell index), so the microstructure is defined everywhere without
being stored, and any region can be evaluated alone. Phases:

- gehlenite (Ca2Al2SiO7): the matrix, everywhere not covered by a crystal;
- LiAlO2 (the target): fine elongated prismatic crystals, most of them dendritic (a trunk
  with pairs of perpendicular side branches), aligned within colonies (one preferred
  direction per cell, 25 degrees spread), widths 2.5-10 µm, lengths 12-70 µm; and sparse
  coarse primary prisms (40-150 µm wide, 80-300 µm long) on a coarser cell grid, so that
  particles of a sieve fraction range from barren to liberated;
- spinel (MgAl2O4): small octahedral grains, 1.5-5 µm;
- metal: rare spherical droplets, 2-7 µm radius (bright in CT and BSE).

Later phases are painted over earlier ones (LiAlO2, then spinel, then metal).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mineral3d.phantom.shapes import BOX, ELLIPSOID, OCTAHEDRON, primitive_half_extent, random_rotations, unit_vectors

RESIN, LIALO2, GEHLENITE, SPINEL, METAL = 0, 1, 2, 3, 4
_CELL_OFFSET = 1 << 24  # keeps cell indices non-negative for SeedSequence


@dataclass(frozen=True)
class SlagParams:
    """Microstructure settings; lengths in µm, counts per cell (``cell_um`` cubed)."""

    cell_um: float = 60.0
    dendrites_per_cell: float = 34.0
    trunk_length_um: tuple[float, float] = (12.0, 70.0)
    trunk_width_um: tuple[float, float] = (2.5, 10.0)
    dendritic_fraction: float = 0.65
    colony_spread_deg: float = 25.0
    spinel_per_cell: float = 40.0
    spinel_radius_um: tuple[float, float] = (1.5, 5.0)
    metal_per_cell: float = 0.5
    metal_radius_um: tuple[float, float] = (2.0, 7.0)
    coarse_cell_um: float = 240.0
    coarse_per_cell: float = 2.5
    coarse_length_um: tuple[float, float] = (80.0, 300.0)
    coarse_width_um: tuple[float, float] = (40.0, 150.0)

    @property
    def margin_um(self) -> float:
        """Farthest a crystal reaches from its centre (a branch: 0.4 L along, 0.5 L out, plus width)."""
        return 0.65 * self.trunk_length_um[1] + self.trunk_width_um[1] + self.metal_radius_um[1]


@dataclass(frozen=True)
class Primitives:
    """n oriented primitives (struct of arrays), in paint order.

    centre (n, 3) µm; axes (n, 3, 3) rows = local unit axes; half (n, 3) µm;
    kind (n,) BOX/OCTAHEDRON/ELLIPSOID; phase (n,) uint8; extent (n, 3) AABB half size µm.
    """

    centre: np.ndarray
    axes: np.ndarray
    half: np.ndarray
    kind: np.ndarray
    phase: np.ndarray
    extent: np.ndarray

    def __len__(self) -> int:
        return len(self.phase)

    @classmethod
    def concat(cls, parts: list[Primitives]) -> Primitives:
        if not parts:
            return cls(np.zeros((0, 3)), np.zeros((0, 3, 3)), np.ones((0, 3)), np.zeros(0, np.int8),
                       np.zeros(0, np.uint8), np.zeros((0, 3)))
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                     ("centre", "axes", "half", "kind", "phase", "extent")))

    def subset(self, idx) -> Primitives:
        return Primitives(self.centre[idx], self.axes[idx], self.half[idx], self.kind[idx], self.phase[idx],
                          self.extent[idx])


def _loguniform(rng, lo_hi, n):
    lo, hi = lo_hi
    return np.exp(rng.uniform(np.log(lo), np.log(hi), n))


def _frames(d: np.ndarray, rng) -> np.ndarray:
    """(n, 3, 3) orthonormal frames whose first row is d (n, 3), twisted at random about d."""
    n = len(d)
    helper = np.where(np.abs(d[:, :1]) < 0.9, np.array([[1.0, 0, 0]]), np.array([[0, 1.0, 0]]))
    e1 = np.cross(d, helper)
    e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
    e2 = np.cross(d, e1)
    t = rng.uniform(0, 2 * np.pi, (n, 1))
    f1 = np.cos(t) * e1 + np.sin(t) * e2
    f2 = np.cross(d, f1)
    return np.stack([d, f1, f2], axis=1)


def cell_primitives(params: SlagParams, seed: int, cell) -> Primitives:
    """The crystals whose centres lie in one cell (integer (iz, iy, ix)), vectorised."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed)] + [int(c) + _CELL_OFFSET for c in cell]))
    lo = np.asarray(cell, float) * params.cell_um
    centres, axes, halves, kinds, phases = [], [], [], [], []

    def add(c, a, h, kind, phase):
        centres.append(c)
        axes.append(a)
        halves.append(h)
        kinds.append(np.full(len(c), kind, np.int8))
        phases.append(np.full(len(c), phase, np.uint8))

    # LiAlO2 dendrites: trunks along a colony direction, pairs of perpendicular branches
    n = rng.poisson(params.dendrites_per_cell)
    if n:
        colony = unit_vectors(rng, 1)[0]
        d = colony + np.deg2rad(params.colony_spread_deg) * rng.standard_normal((n, 3))
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        frame = _frames(d, rng)
        length = _loguniform(rng, params.trunk_length_um, n)
        width = _loguniform(rng, params.trunk_width_um, n)
        aspect = rng.uniform(0.6, 1.0, n)  # prism cross-section: width x (aspect * width)
        c = lo + rng.uniform(0, params.cell_um, (n, 3))
        add(c, frame, np.stack([length / 2, width / 2, aspect * width / 2], axis=1), BOX, LIALO2)
        nodes = np.where(rng.random(n) < params.dendritic_fraction, rng.integers(1, 5, n), 0)
        owner = np.repeat(np.arange(n), nodes)
        m = len(owner)
        if m:
            t = rng.uniform(-0.4, 0.4, m) * length[owner]
            blen = rng.uniform(0.2, 0.5, m) * length[owner]
            bw = width[owner] * rng.uniform(0.5, 0.8, m)
            ang = rng.uniform(0, 2 * np.pi, m)[:, None]
            trunk = frame[owner, 0]
            b = np.cos(ang) * frame[owner, 1] + np.sin(ang) * frame[owner, 2]
            for bdir in (b, -b):  # a pair of opposite branches at each node
                add(c[owner] + t[:, None] * trunk + bdir * (blen[:, None] / 2),
                    np.stack([bdir, trunk, np.cross(bdir, trunk)], axis=1),
                    np.stack([blen / 2, bw / 2, bw / 2 * aspect[owner]], axis=1), BOX, LIALO2)

    # spinel octahedra
    n = rng.poisson(params.spinel_per_cell)
    if n:
        r = _loguniform(rng, params.spinel_radius_um, n)
        add(lo + rng.uniform(0, params.cell_um, (n, 3)), random_rotations(rng, n),
            r[:, None] * rng.uniform(0.85, 1.15, (n, 3)), OCTAHEDRON, SPINEL)

    # metal droplets
    n = rng.poisson(params.metal_per_cell)
    if n:
        r = rng.uniform(*params.metal_radius_um, n)
        add(lo + rng.uniform(0, params.cell_um, (n, 3)), np.repeat(np.eye(3)[None], n, axis=0),
            np.repeat(r[:, None], 3, axis=1), ELLIPSOID, METAL)

    if not centres:
        return Primitives.concat([])
    axes_a, half_a, kind_a = np.concatenate(axes), np.concatenate(halves), np.concatenate(kinds)
    return Primitives(np.concatenate(centres), axes_a, half_a, kind_a, np.concatenate(phases),
                      primitive_half_extent(axes_a, half_a, kind_a))


def coarse_cell_primitives(params: SlagParams, seed: int, cell) -> Primitives:
    """Coarse primary LiAlO2 prisms whose centres lie in one coarse cell."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 7] + [int(c) + _CELL_OFFSET for c in cell]))
    n = rng.poisson(params.coarse_per_cell)
    if not n:
        return Primitives.concat([])
    frame = _frames(unit_vectors(rng, n), rng)
    length = _loguniform(rng, params.coarse_length_um, n)
    width = _loguniform(rng, params.coarse_width_um, n)
    half = np.stack([length / 2, width / 2, width / 2 * rng.uniform(0.6, 1.0, n)], axis=1)
    kind = np.full(n, BOX, np.int8)
    centre = np.asarray(cell, float) * params.coarse_cell_um + rng.uniform(0, params.coarse_cell_um, (n, 3))
    return Primitives(centre, frame, half, kind, np.full(n, LIALO2, np.uint8), primitive_half_extent(frame, half, kind))


def _cells(lo_um, hi_um, cell_um: float, margin_um: float):
    c0 = np.floor((lo_um - margin_um) / cell_um).astype(int)
    c1 = np.floor((hi_um + margin_um) / cell_um).astype(int)
    return [(i, j, k) for i in range(c0[0], c1[0] + 1) for j in range(c0[1], c1[1] + 1)
            for k in range(c0[2], c1[2] + 1)]


def primitives_in_box(params: SlagParams, seed: int, lo_um, hi_um) -> Primitives:
    """All crystals that reach into the box [lo_um, hi_um] (z, y, x in µm), in paint order."""
    lo_um, hi_um = np.asarray(lo_um, float), np.asarray(hi_um, float)
    coarse_margin = 0.5 * np.sqrt(params.coarse_length_um[1] ** 2 + 2 * params.coarse_width_um[1] ** 2)
    parts = [coarse_cell_primitives(params, seed, c) for c in _cells(lo_um, hi_um, params.coarse_cell_um,
                                                                     coarse_margin)]
    parts += [cell_primitives(params, seed, c) for c in _cells(lo_um, hi_um, params.cell_um, params.margin_um)]
    prims = Primitives.concat(parts)
    keep = np.all((prims.centre + prims.extent >= lo_um) & (prims.centre - prims.extent <= hi_um), axis=1)
    prims = prims.subset(np.flatnonzero(keep))
    # paint order: LiAlO2 < spinel < metal
    priority = np.array([0, 1, 0, 2, 3], np.int8)[prims.phase]
    order = np.argsort(priority, kind="stable")
    return prims.subset(order)

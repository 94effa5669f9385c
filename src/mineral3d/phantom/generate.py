"""Generate a synthetic correlative sample: CT, mineral maps, BSE images, ground truth.

Pipeline: place particle fragments (``particles``) -> rasterise each with sub-voxel
supersampling against the bulk microstructure (``microstructure``) -> CT forward model
(``ct``) -> render tilted polished sections exactly at each pixel centre (``sections``).
Everything derives from one seed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from mineral3d.errors import InputError, ParameterError
from mineral3d.io.sample import SectionData, write_sample
from mineral3d.phantom import ct as ctm
from mineral3d.phantom.microstructure import (
    GEHLENITE,
    LIALO2,
    METAL,
    RESIN,
    SPINEL,
    Primitives,
    SlagParams,
    primitives_in_box,
)
from mineral3d.phantom.particles import ParticleShape, place_particles
from mineral3d.phantom.sections import bse_image, random_pose, unclassify_boundaries
from mineral3d.phantom.shapes import primitive_sdf
from mineral3d.phase_table import Phase, PhaseTable

SIEVES_UM = {"fine": (63.0, 100.0), "coarse": (100.0, 250.0)}
DEFAULT_VOXEL_UM = {"fine": 2.0, "coarse": 3.0}
MATERIAL = (LIALO2, GEHLENITE, SPINEL, METAL)

Progress = Callable[[str, int, int], None]


def slag_phase_table() -> PhaseTable:
    """The phase table of the synthetic slag (target LiAlO2)."""
    return PhaseTable((Phase(RESIN, "resin", (0, 0, 0)), Phase(LIALO2, "LiAlO2", (0x1F, 0x77, 0xB4)),
                       Phase(GEHLENITE, "gehlenite", (0xFF, 0x7F, 0x0E)), Phase(SPINEL, "spinel", (0x2C, 0xA0, 0x2C)),
                       Phase(METAL, "metal", (0xD6, 0x27, 0x28)), Phase(255, "unclassified", (255, 255, 255))),
                      target="LiAlO2", source="synthetic slag")


@dataclass(frozen=True)
class PhantomConfig:
    """Settings of a synthetic sample.

    Attributes
    ----------
    fraction : {"fine", "coarse"}
        Sieve fraction: fine 63-100 µm, coarse 100-250 µm.
    seed : int
    shape : (Z, Y, X) voxels
    voxel_um : float or None
        CT voxel size in µm; None: 2.0 for fine, 3.0 for coarse.
    sections : int
        Number of polished sections; the last is the validation section when there are two or more.
    pixel_ratio : float
        Declared map pixel size / voxel size (finer pixels than voxels).
    scale_error : float
        The true scale differs from the declared one by up to this fraction (SEM calibration).
    supersample : int
        Sub-samples per voxel edge for partial volume and majority truth.
    """

    fraction: str = "fine"
    seed: int = 0
    shape: tuple[int, int, int] = (160, 224, 224)
    voxel_um: float | None = None
    sections: int = 3
    pixel_ratio: float = 0.5
    scale_error: float = 0.02
    max_tilt_deg: float = 5.0
    supersample: int = 3
    packing: float = 0.3
    touching: float = 0.25
    nonconvex: float = 0.3
    unclassified: float = 0.01
    map_format: str = "ids"
    slag: SlagParams = field(default_factory=SlagParams)
    ct: ctm.CTModel = field(default_factory=ctm.CTModel)
    variant: str = "default"

    def __post_init__(self) -> None:
        if self.fraction not in SIEVES_UM:
            raise ParameterError("fraction", f"must be one of {', '.join(SIEVES_UM)}, got {self.fraction!r}")
        if len(self.shape) != 3 or min(self.shape) < 24:
            raise ParameterError("shape", f"needs three sizes of at least 24 voxels, got {tuple(self.shape)}")
        if self.voxel_um is not None and not self.voxel_um > 0:
            raise ParameterError("voxel_um", f"must be positive, got {self.voxel_um}")
        if self.sections < 0:
            raise ParameterError("sections", f"must be 0 or more, got {self.sections}")
        if self.map_format not in ("ids", "rgb"):
            raise ParameterError("map_format", f"must be 'ids' or 'rgb', got {self.map_format!r}")
        if self.supersample < 1:
            raise InputError("supersample", "must be at least 1")
        if self.variant not in VARIANTS:
            raise ParameterError("variant", f"must be one of {', '.join(VARIANTS)}, got {self.variant!r}")

    @property
    def voxel_size_um(self) -> float:
        return float(self.voxel_um if self.voxel_um is not None else DEFAULT_VOXEL_UM[self.fraction])

    @property
    def sieve_um(self) -> tuple[float, float]:
        return SIEVES_UM[self.fraction]


VARIANTS = ("default", "varied")
"""``default``: the microstructure and CT model every setting was developed on. ``varied``:
both drawn per seed (:func:`varied`), for checking that nothing is tuned to the default."""


def varied(config: PhantomConfig) -> PhantomConfig:
    """``config`` with its microstructure, CT forward model and map pixels drawn from wide ranges.

    Drawn from a generator seeded by ``config.seed`` (so a seed gives one sample): crystal
    density, sizes, dendritic share and colony alignment; the coarse primary crystals' density
    (few: clustered rich and barren regions; many: evenly rich); the LiAlO2 / gehlenite
    contrast; PSF blur, noise, cupping and ring artefacts; map pixels 1/3 to 1/2 of a voxel;
    tilts up to 3-10°. The ranges bracket the default on both sides; they are not fitted
    to anything.
    """
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 0x7A12]))
    u = rng.uniform
    w0 = u(1.5, 4.0)
    slag = SlagParams(cell_um=u(40, 90), dendrites_per_cell=u(15, 55), trunk_length_um=(u(8, 20), u(40, 110)),
                      trunk_width_um=(w0, w0 * u(2.0, 4.5)), dendritic_fraction=u(0.2, 0.95),
                      colony_spread_deg=u(8, 70), spinel_per_cell=u(15, 70), coarse_cell_um=u(160, 360),
                      coarse_per_cell=u(0.5, 5.0))
    base = ctm.CTModel()
    att = dict(base.attenuation)
    att[GEHLENITE] = att[LIALO2] + u(0.04, 0.12)
    ct = ctm.CTModel(attenuation=att, psf_sigma_vox=u(0.5, 1.3), noise_sigma=u(0.02, 0.05), cupping=u(0.0, 0.15),
                     ring_amplitude=u(0.0, 0.03), n_rings=int(rng.integers(4, 20)))
    return replace(config, slag=slag, ct=ct, pixel_ratio=u(1 / 3, 0.5), max_tilt_deg=u(3.0, 10.0),
                   variant="default")


@dataclass
class GeneratedSample:
    """A generated sample in memory."""

    name: str
    config: PhantomConfig
    ct: np.ndarray
    truth_phases: np.ndarray
    truth_particles: np.ndarray
    sections: list[SectionData]
    phase_table: PhaseTable
    particles: list[ParticleShape]


def _particle_box(part: ParticleShape, voxel_um: float, shape) -> tuple[np.ndarray, np.ndarray]:
    lo = np.maximum(np.floor((part.centre - part.extent) / voxel_um).astype(int), 0)
    hi = np.minimum(np.ceil((part.centre + part.extent) / voxel_um).astype(int) + 1, shape)
    return lo, hi


def supersample(sdf: Callable, vz: np.ndarray, vy: np.ndarray, vx: np.ndarray, s: int,
                voxel_um: float) -> np.ndarray:
    """Inside-ness at s**3 sub-samples of every voxel, evaluated exactly only near the surface.

    Parameters
    ----------
    sdf : callable
        ``sdf(z, y, x)`` on broadcastable world coordinates (µm): a signed distance bound.
    vz, vy, vx : 1D ndarray
        Voxel-centre coordinates of the box, µm.
    s : int
        Sub-samples per voxel edge.

    Returns
    -------
    (nz * s, ny * s, nx * s) bool ndarray.
    """
    f = sdf(vz[:, None, None], vy[None, :, None], vx[None, None, :])
    if s == 1:
        return f <= 0
    nz, ny, nx = f.shape
    h = 0.5 * np.sqrt(3.0) * voxel_um  # a voxel lies within h of its centre
    out = np.empty((nz, s, ny, s, nx, s), bool)
    out[...] = (f < -h)[:, None, :, None, :, None]
    iz, iy, ix = np.nonzero(np.abs(f) <= h)
    if len(iz):
        off = ((np.arange(s) + 0.5) / s - 0.5) * voxel_um
        res = sdf((vz[iz][:, None] + off)[:, :, None, None], (vy[iy][:, None] + off)[:, None, :, None],
                  (vx[ix][:, None] + off)[:, None, None, :]) <= 0
        a = np.arange(s)
        out[iz[:, None, None, None], a[None, :, None, None], iy[:, None, None, None], a[None, None, :, None],
            ix[:, None, None, None], a[None, None, None, :]] = res
    return out.reshape(nz * s, ny * s, nx * s)


def rasterize_particle(part: ParticleShape, prims: Primitives, voxel_um: float, lo, hi, s: int):
    """Supersampled particle mask and phases over voxels [lo, hi) (s**3 samples a voxel)."""
    v = voxel_um
    vz, vy, vx = (np.arange(lo[a], hi[a]) * v for a in range(3))
    c = part.centre
    mask = supersample(lambda z, y, x: part.sdf(z - c[0], y - c[1], x - c[2]), vz, vy, vx, s, v)
    phase = np.where(mask, np.uint8(GEHLENITE), np.uint8(RESIN))
    world = prims.centre - part.bulk_offset
    first = [np.searchsorted(ax + v / 2, world[:, a] - prims.extent[:, a]) for a, ax in enumerate((vz, vy, vx))]
    last = [np.searchsorted(ax - v / 2, world[:, a] + prims.extent[:, a], side="right")
            for a, ax in enumerate((vz, vy, vx))]
    for n in np.flatnonzero(np.all([b > a for a, b in zip(first, last)], axis=0)):
        (i0, j0, k0), (i1, j1, k1) = (f[n] for f in first), (t[n] for t in last)
        box = (slice(i0 * s, i1 * s), slice(j0 * s, j1 * s), slice(k0 * s, k1 * s))
        sub = mask[box]
        if not sub.any():
            continue
        w, axes, half, kind = world[n], prims.axes[n], prims.half[n], prims.kind[n]
        inside = supersample(lambda z, y, x: primitive_sdf(axes, half, kind, z - w[0], y - w[1], x - w[2]),
                             vz[i0:i1], vy[j0:j1], vx[k0:k1], s, v)
        phase[box][inside & sub] = prims.phase[n]
    return mask, phase


def classify_points(points_um: np.ndarray, particles: list[ParticleShape],
                    prims: list[Primitives]) -> tuple[np.ndarray, np.ndarray]:
    """Phase id and particle id (1-based, 0 = none) at arbitrary points (N, 3) in µm."""
    points_um = np.asarray(points_um, float)
    phase = np.zeros(len(points_um), np.uint8)
    pid = np.zeros(len(points_um), np.uint32)
    for i, (part, pr) in enumerate(zip(particles, prims)):
        idx = np.flatnonzero(np.all(np.abs(points_um - part.centre) <= part.extent, axis=1))
        if not len(idx):
            continue
        d = points_um[idx] - part.centre
        idx = idx[part.inside(d[:, 0], d[:, 1], d[:, 2])]
        if not len(idx):
            continue
        pts = points_um[idx]
        ph = np.full(len(idx), GEHLENITE, np.uint8)
        world = pr.centre - part.bulk_offset
        for n in range(len(pr)):
            near = np.flatnonzero(np.all(np.abs(pts - world[n]) <= pr.extent[n], axis=1))
            if not len(near):
                continue
            dd = pts[near] - world[n]
            inside = primitive_sdf(pr.axes[n], pr.half[n], pr.kind[n], dd[:, 0], dd[:, 1], dd[:, 2]) <= 0
            ph[near[inside]] = pr.phase[n]
        phase[idx] = ph
        pid[idx] = i + 1
    return phase, pid


def generate(config: PhantomConfig, *, progress: Progress | None = None) -> GeneratedSample:
    """Generate a sample in memory (deterministic for ``config.seed``)."""
    label = "" if config.variant == "default" else f"-{config.variant}"
    if config.variant == "varied":
        config = varied(config)
    report = progress or (lambda stage, done, total: None)
    root = np.random.SeedSequence(config.seed)
    rng_place, rng_ct, rng_sec = (np.random.default_rng(s) for s in root.spawn(3))
    shape = tuple(int(v) for v in config.shape)
    v = config.voxel_size_um
    s = config.supersample
    model = config.ct

    report("placing particles", 0, 1)
    parts = place_particles(rng_place, shape, v, config.sieve_um, packing=config.packing,
                            touching=config.touching, nonconvex=config.nonconvex)
    report("placing particles", 1, 1)

    mu = np.full(shape, model.mu(RESIN), np.float32)
    best = np.zeros(shape, np.int16)
    truth_particles = np.zeros(shape, np.uint32)
    truth_phases = np.zeros(shape, np.uint8)
    dmu = np.array([model.mu(p) - model.mu(RESIN) for p in MATERIAL], np.float32)
    material = np.array(MATERIAL, np.uint8)
    n3 = s**3
    prims_list = []
    for i, part in enumerate(parts):
        lo, hi = _particle_box(part, v, shape)
        prims = primitives_in_box(config.slag, config.seed, lo * v - v + part.bulk_offset,
                                  hi * v + part.bulk_offset)
        prims_list.append(prims)
        mask, phase = rasterize_particle(part, prims, v, lo, hi, s)
        nz, ny, nx = hi - lo
        occ = mask.reshape(nz, s, ny, s, nx, s).sum(axis=(1, 3, 5), dtype=np.int16)
        counts = np.stack([(phase == p).reshape(nz, s, ny, s, nx, s).sum(axis=(1, 3, 5), dtype=np.int16)
                           for p in MATERIAL])
        sl = tuple(slice(a, b) for a, b in zip(lo, hi))
        mu[sl] += np.tensordot(dmu, counts.astype(np.float32), axes=1) / np.float32(n3)
        assign = (2 * occ >= n3) & (occ > best[sl])
        best[sl][assign] = occ[assign]
        truth_particles[sl][assign] = i + 1
        truth_phases[sl][assign] = material[np.argmax(counts, axis=0)][assign]
        report("rasterising particles", i + 1, len(parts))
    del best

    report("CT forward model", 0, 1)
    ct = ctm.forward(mu, model, rng_ct)
    del mu
    report("CT forward model", 1, 1)

    table = slag_phase_table()
    sections = []
    n = config.sections
    for k in range(n):
        report("rendering sections", k, n)
        nominal = config.pixel_ratio
        true_scale = nominal * (1 + rng_sec.uniform(-config.scale_error, config.scale_error))
        depth = 0.2 + 0.6 * (k + 0.5) / n
        transform, mshape = random_pose(rng_sec, shape, true_scale, depth, config.max_tilt_deg)
        pts = transform.grid(mshape).reshape(3, -1).T * v
        ids, _ = classify_points(pts, parts, prims_list)
        ids = unclassify_boundaries(ids.reshape(mshape), rng_sec, config.unclassified)
        bse = bse_image(ids, rng_sec)
        m = table.encode_rgb(ids) if config.map_format == "rgb" else ids
        sections.append(SectionData(name=f"s{k + 1}", map=m, pixel_size_um=round(nominal * v, 6),
                                    role="validation" if (n >= 2 and k == n - 1) else "train", bse=bse,
                                    truth=transform))
    report("rendering sections", n, n)
    name = f"slag-{config.fraction}-{int(config.sieve_um[0])}-{int(config.sieve_um[1])}um-seed{config.seed}{label}"
    return GeneratedSample(name, config, ct, truth_phases, truth_particles, sections, table, parts)


def generate_sample(out: str | Path, config: PhantomConfig, *, overwrite: bool = False,
                    progress: Progress | None = None) -> GeneratedSample:
    """Generate a sample and write it to ``out`` (the folder appears only when complete)."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise InputError(out, "already exists (use --force to replace it)")
    g = generate(config, progress=progress)
    write_sample(out, name=g.name, ct=g.ct, voxel_size_um=config.voxel_size_um, phase_table=g.phase_table,
                 sections=g.sections, sieve_um=config.sieve_um, truth_phases=g.truth_phases,
                 truth_particles=g.truth_particles, overwrite=overwrite)
    return g

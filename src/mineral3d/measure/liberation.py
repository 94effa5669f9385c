"""Liberation of the target phase: the one place that defines it, for 3D and 2D alike.

A :class:`Population` is a set of particles (3D: volumes in µm^3) or particle sections
(2D: areas in µm^2). With ``amount`` the particle material and ``target`` its target
phase, the grade is g = target / amount. Over a population:

- liberation spectrum: the share of all target held by particles in each grade class
  0, (0,10%), [10,20%), ..., [80,90%), [90,95%), [95,100%), 100% (closed below, so that
  L(0.8), L(0.9) and L(0.95) are sums of whole classes);
- cumulative liberation L(t) = sum(target_i for g_i >= t) / sum(target_i);
- the same with surface exposure (the share of a particle's surface, or a section's
  perimeter, formed by the target) in place of the grade;
- theoretical grade-recovery: particles sorted by grade (highest first), cumulative
  recovery sum(target) / total target against cumulative grade sum(target) / sum(amount).

Amounts are volumes (areas): multiply by phase densities for mass-based figures.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

LOWER_EDGES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
"""Lower bounds of the interior grade classes: every threshold of :data:`THRESHOLDS` is one."""
GRADE_CLASSES = ["0", "(0,10)"] + [f"[{round(a * 100)},{round(b * 100)})" for a, b in
                                   zip(LOWER_EDGES[1:], LOWER_EDGES[2:] + (1.0,))] + ["100"]
CLASS_LOWER = (0.0, 0.0) + LOWER_EDGES[1:] + (1.0,)
"""Lower grade bound of each class: L(t) for a threshold in LOWER_EDGES is the sum of the
target shares of the classes whose lower bound is >= t."""
THRESHOLDS = (0.8, 0.9, 0.95)
GRADE_EPS = 1e-9
"""A grade within this of a threshold counts as reaching it (every module compares grades so)."""
_EPS = GRADE_EPS


@dataclass(frozen=True)
class Population:
    """Particles or particle sections to compute liberation over.

    Attributes
    ----------
    amount : (n,) ndarray
        Particle material, µm^3 (3D) or µm^2 (2D).
    target : (n,) ndarray
        Target phase amount, same unit.
    exposure : (n,) ndarray
        Share (0-1) of the particle's surface (3D) or perimeter (2D) formed by the target.
    size_um : (n,) ndarray
        Equivalent sphere (3D) or circle (2D) diameter, µm.
    group : (n,) int ndarray
        The resampling unit of the bootstrap (a particle id; a section's parent particle).
    """

    amount: np.ndarray
    target: np.ndarray
    exposure: np.ndarray
    size_um: np.ndarray
    group: np.ndarray

    def __post_init__(self) -> None:
        for f in ("amount", "target", "exposure", "size_um", "group"):
            object.__setattr__(self, f, np.asarray(getattr(self, f)))

    def __len__(self) -> int:
        return len(self.amount)

    @property
    def grade(self) -> np.ndarray:
        return np.divide(self.target, self.amount, out=np.zeros(len(self), float), where=self.amount > 0)

    def basis(self, name: str) -> np.ndarray:
        """The liberation variable: ``"grade"`` or ``"exposure"``."""
        if name == "grade":
            return self.grade
        if name == "exposure":
            return self.exposure.astype(float)
        raise ValueError(f"basis must be 'grade' or 'exposure', got {name!r}")

    @classmethod
    def concat(cls, pops) -> Population:
        """One population of several (their ``group`` values must already be distinct)."""
        pops = list(pops)
        if not pops:
            return cls(*(np.zeros(0) for _ in range(4)), np.zeros(0, np.int64))
        return cls(*(np.concatenate([getattr(p, f) for p in pops]) for f in
                     ("amount", "target", "exposure", "size_um", "group")))

    def subset(self, mask) -> Population:
        return Population(self.amount[mask], self.target[mask], self.exposure[mask], self.size_um[mask],
                          self.group[mask])


def grade_class(x: np.ndarray) -> np.ndarray:
    """Index into :data:`GRADE_CLASSES` of each grade (or exposure) in [0, 1].

    Classes are closed below: 0 exactly, (0, 0.1), [0.1, 0.2), ..., [0.9, 0.95), [0.95, 1), 1.
    """
    x = np.asarray(x, float)
    idx = np.clip(np.searchsorted(np.asarray(LOWER_EDGES), x + _EPS, side="right"), 1, len(GRADE_CLASSES) - 2)
    idx[x <= _EPS] = 0
    idx[x >= 1 - _EPS] = len(GRADE_CLASSES) - 1
    return idx


def liberation_spectrum(pop: Population, basis: str = "grade") -> pd.DataFrame:
    """Per grade class: particle count, amount, target amount and share of all target."""
    cls = grade_class(pop.basis(basis))
    k = len(GRADE_CLASSES)
    total = pop.target.sum()
    target = np.bincount(cls, weights=pop.target, minlength=k)
    return pd.DataFrame({"grade_class": GRADE_CLASSES, "particles": np.bincount(cls, minlength=k),
                         "amount": np.bincount(cls, weights=pop.amount, minlength=k), "target_amount": target,
                         "target_share": target / total if total > 0 else np.zeros(k)})


def cumulative_liberation(pop: Population, thresholds=THRESHOLDS, basis: str = "grade") -> np.ndarray:
    """L(t): share of all target in particles whose grade (or exposure) is at least t."""
    x = pop.basis(basis)
    t = np.atleast_1d(np.asarray(thresholds, float))
    total = pop.target.sum()
    if total <= 0:
        return np.full(t.shape, np.nan)
    return np.array([pop.target[x >= ti - _EPS].sum() for ti in t]) / total


def grade_recovery(pop: Population) -> pd.DataFrame:
    """Theoretical grade-recovery: particles by decreasing grade, cumulative recovery and grade."""
    order = np.argsort(-pop.grade, kind="stable")
    t, a = np.cumsum(pop.target[order]), np.cumsum(pop.amount[order])
    total = pop.target.sum()
    return pd.DataFrame({"particle_grade": pop.grade[order], "recovery": t / total if total > 0 else t * np.nan,
                         "cumulative_grade": np.divide(t, a, out=np.zeros_like(t, float), where=a > 0)})


def default_size_edges(sizes_um: np.ndarray) -> np.ndarray:
    """Size-class edges (µm): a sqrt(2) series (..., 32, 45, 64, 90, 128, ...) spanning the sizes."""
    s = np.asarray(sizes_um, float)
    s = s[s > 0]
    if not len(s):
        return np.array([0.0, np.inf])
    k0, k1 = int(np.floor(2 * np.log2(s.min()))), int(np.ceil(2 * np.log2(s.max()))) + 1
    return np.round(2.0 ** (np.arange(k0, max(k1, k0 + 1) + 1) / 2), 1)


def size_class_names(edges) -> list[str]:
    return [f"{a:g}-{b:g}" for a, b in zip(edges[:-1], edges[1:])]


def liberation_table(pop: Population, *, method: str, size_edges) -> pd.DataFrame:
    """Tidy table: method, basis, size class ("all" and each class), grade class, counts, shares."""
    frames = []
    cls = np.digitize(pop.size_um, size_edges[1:-1]) if len(size_edges) > 2 else np.zeros(len(pop), int)
    groups = [("all", np.ones(len(pop), bool))] + [(name, cls == i) for i, name in
                                                   enumerate(size_class_names(size_edges))]
    for basis in ("grade", "exposure"):
        for name, mask in groups:
            spec = liberation_spectrum(pop.subset(mask), basis)
            spec.insert(0, "size_class", name)
            spec.insert(0, "basis", basis)
            spec.insert(0, "method", method)
            frames.append(spec)
    return pd.concat(frames, ignore_index=True)


def liberation_curves(pop: Population, *, method: str, n: int = 101) -> pd.DataFrame:
    """Cumulative liberation L(t) for t in [0, 1] by grade and by exposure."""
    t = np.linspace(0, 1, n)
    return pd.concat([pd.DataFrame({"method": method, "basis": b, "t": t, "L": cumulative_liberation(pop, t, b)})
                      for b in ("grade", "exposure")], ignore_index=True)


def as_dict(values, thresholds=THRESHOLDS) -> dict[str, float]:
    return {f"{t:g}": (None if not np.isfinite(v) else float(v)) for t, v in zip(thresholds, values)}


def bootstrap_bias(pop3d: Population, pop2d: Population, *, thresholds=THRESHOLDS, basis: str = "grade",
                   n_boot: int = 1000, paired: bool = True, seed: int = 0) -> dict:
    """L2D(t) - L3D(t) with 95% bootstrap intervals, resampling particles.

    ``paired``: both populations are resampled through one draw of their ``group`` ids (2D
    sections of a particle go with it); otherwise each is resampled on its own.
    """
    rng = np.random.default_rng(seed)
    t = np.asarray(thresholds, float)

    def unit_sums(pop, units):
        idx = np.searchsorted(units, pop.group)
        x = pop.basis(basis)
        tgt = np.bincount(idx, weights=pop.target, minlength=len(units))
        lib = np.stack([np.bincount(idx, weights=pop.target * (x >= ti - _EPS), minlength=len(units))
                        for ti in t])
        return tgt, lib

    def draws(n_units):
        if n_units == 0:  # nothing to resample (e.g. no particles): every statistic is undefined
            return np.zeros((n_boot, 0))
        return rng.multinomial(n_units, np.full(n_units, 1.0 / n_units), size=n_boot).astype(np.float64)

    def boot(pop, units, weights):
        tgt, lib = unit_sums(pop, units)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (weights @ lib.T) / (weights @ tgt)[:, None]

    if paired:
        units = np.union1d(pop3d.group, pop2d.group)
        w = draws(len(units))
        b3, b2 = boot(pop3d, units, w), boot(pop2d, units, w)
    else:
        u3, u2 = np.unique(pop3d.group), np.unique(pop2d.group)
        b3, b2 = boot(pop3d, u3, draws(len(u3))), boot(pop2d, u2, draws(len(u2)))
    diff = b2 - b3
    l3, l2 = cumulative_liberation(pop3d, t, basis), cumulative_liberation(pop2d, t, basis)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: no target to liberate
        lo, hi = np.nanpercentile(diff, [2.5, 97.5], axis=0)

    def num(v):
        return float(v) if np.isfinite(v) else None

    return {f"{ti:g}": {"L3D": num(a), "L2D": num(b), "bias": num(b - a), "ci95": [num(x), num(y)]}
            for ti, a, b, x, y in zip(t, l3, l2, lo, hi)}


_DRAW_ELEMENTS = 4_000_000
"""Particle grades drawn at once by :func:`grade_interval` (32 MB of float64 per array)."""


def liberation_draws(pop: Population, grade_sd: np.ndarray, *, thresholds=THRESHOLDS, n_draws: int = 1000,
                     seed: int = 0, centres: Callable[[np.random.Generator, int], np.ndarray] | None = None
                     ) -> np.ndarray:
    """(n_draws, len(thresholds)) L(t) with every particle's grade drawn about its estimate.

    The draws of :func:`grade_interval` (same arguments, same random numbers): each draw
    perturbs every grade by a normal error of its ``grade_sd`` about ``pop.grade`` (or about
    ``centres(rng, n)``, one row per draw), clipped to [0, 1], the particle's material kept.
    """
    t = np.asarray(thresholds, float)
    sd = np.asarray(grade_sd, float)
    rng = np.random.default_rng(seed)
    block = max(1, _DRAW_ELEMENTS // max(len(pop), 1))  # draws per block: memory bounded for any particle count
    parts = []
    for b0 in range(0, n_draws, block):
        nb = min(block, n_draws - b0)
        centre = pop.grade[None, :] if centres is None else centres(rng, nb)
        g = np.clip(centre + sd[None, :] * rng.standard_normal((nb, len(pop))), 0.0, 1.0)
        target = pop.amount[None, :] * g
        total = target.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            parts.append(np.stack([(target * (g >= ti - _EPS)).sum(axis=1) / total for ti in t], axis=1))
    return np.concatenate(parts)


def grade_interval(pop: Population, grade_sd: np.ndarray, *, thresholds=THRESHOLDS, n_draws: int = 1000,
                   seed: int = 0, centres: Callable[[np.random.Generator, int], np.ndarray] | None = None) -> dict:
    """95% interval of L(t) from the uncertainty of each particle's grade (same particles).

    Each draw perturbs every grade by an independent normal error of its standard deviation
    ``grade_sd`` (clipped to [0, 1]; the particle's material is unchanged, its target
    follows its grade) and recomputes L(t); the interval is the 2.5-97.5 percentiles of
    ``n_draws`` draws. It answers how far the segmentation's per-particle grade errors can
    move L(t) for these particles, typically a particle or two near a threshold; not how far
    another sample of the same material could be (a bootstrap over particles).

    ``centres(rng, n)``: (n, len(pop)) grades to perturb instead of ``pop.grade``, one row
    per draw: an error shared by all particles, e.g. the grade calibration's own
    uncertainty (:meth:`mineral3d.measure.grades.GradeCalibration.draw_grades`).

    Returns
    -------
    dict per threshold ``{"L", "ci95"}``; ``ci95`` is None where ``grade_sd`` is not finite
    for some particle (the error could not be estimated).
    """
    t = np.asarray(thresholds, float)
    sd = np.asarray(grade_sd, float)
    lv = cumulative_liberation(pop, t)
    known = len(pop) > 0 and bool(np.isfinite(sd).all())
    if known:
        draws = liberation_draws(pop, sd, thresholds=t, n_draws=n_draws, seed=seed, centres=centres)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            lo, hi = np.nanpercentile(draws, [2.5, 97.5], axis=0)

    def num(v):
        return float(v) if np.isfinite(v) else None

    return {f"{ti:g}": {"L": num(lv[i]), "ci95": [num(lo[i]), num(hi[i])] if known else None}
            for i, ti in enumerate(t)}


NEAR_SD = 2.0
"""A particle within this many grade standard deviations of a threshold may lie on either side of it."""


def near_threshold(pop: Population, grade_sd: np.ndarray, *, thresholds=THRESHOLDS, k: float = NEAR_SD,
                   limit: int = 10) -> dict:
    """The particles that decide L(t): those whose grade lies within ``k`` ``grade_sd`` of t.

    Where the interval of :func:`grade_interval` is wide, it is these particles (their grade
    could be on either side of t) and the share of the target they hold: L(t) can move by up
    to that share. ``pop.group`` names the particles (the particle ids of a 3D population).

    Returns
    -------
    dict per threshold ``{"particles": ids, largest target first (at most ``limit``),
    "count": how many, "target_share": the share of all target they hold}``; None where
    ``grade_sd`` is not finite for some particle.
    """
    sd = np.asarray(grade_sd, float)
    if not (len(pop) > 0 and np.isfinite(sd).all()):
        return {f"{t:g}": None for t in thresholds}
    g, total = pop.grade, pop.target.sum()
    near = np.abs(g[None, :] - np.asarray(thresholds, float)[:, None]) <= k * sd[None, :] + _EPS
    out = {}
    for t, m in zip(thresholds, near):
        idx = np.flatnonzero(m)
        idx = idx[np.argsort(-pop.target[idx], kind="stable")]
        out[f"{t:g}"] = {"particles": [int(i) for i in pop.group[idx[:limit]]], "count": int(len(idx)),
                         "target_share": float(pop.target[idx].sum() / total) if total > 0 else None}
    return out


def modal_mineralogy(volume_fractions: pd.DataFrame, material_um3: np.ndarray) -> dict[str, float]:
    """Volume share of each phase in all particle material (columns ``vol_<phase>``)."""
    cols = [c for c in volume_fractions.columns if c.startswith("vol_")]
    amounts = (volume_fractions[cols].to_numpy() * np.asarray(material_um3)[:, None]).sum(axis=0)
    total = amounts.sum()
    return {c[4:]: float(a / total) if total > 0 else 0.0 for c, a in zip(cols, amounts)}


def association(phases: np.ndarray, target_id: int, phase_ids, *, slab: int = 32) -> dict[int, float]:
    """Share of the target's boundary (voxel faces) shared with each other phase id (0 = resin)."""
    counts = np.zeros(256, np.int64)
    z = phases.shape[0]
    for z0 in range(0, z, slab):
        z1 = min(z0 + slab, z)
        block, ext = phases[z0:z1], phases[z0:min(z1 + 1, z)]  # ext: one more layer for z faces
        for lo, hi in ((ext[:-1], ext[1:]), (block[:, :-1], block[:, 1:]), (block[:, :, :-1], block[:, :, 1:])):
            m1 = (lo == target_id) & (hi != target_id)
            m2 = (hi == target_id) & (lo != target_id)
            counts += np.bincount(hi[m1], minlength=256) + np.bincount(lo[m2], minlength=256)
    others = [int(p) for p in phase_ids if p != target_id]
    total = counts[others].sum()
    return {p: (float(counts[p] / total) if total else 0.0) for p in others}

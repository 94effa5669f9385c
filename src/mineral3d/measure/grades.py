"""Particle grades checked against the registered SEM sections: calibration and a trust signal.

A registered section is the truth on one plane: every particle section it shows has an
exact area grade (target area / classified material area). Cutting the predicted phase
volume on the same plane gives the predicted grade of the same section (the same pixels:
the map's section outline, so a predicted particle split or merge does not matter, only
the phases inside it). These *section grade pairs* serve twice:

- on the **train** sections they fit a :class:`GradeCalibration`: the line that relates
  predicted to true grade, inverted (the classical calibration estimator), checked by
  leave-one-section-out cross-validation and used only where that shows it helps;
- on the **validation** sections (never in the fit) they give :func:`liberation_agreement`:
  the predicted 2D liberation on that plane against the map's own, with a paired
  bootstrap interval; a disagreement beyond the interval means the segmentation, and so
  the 3D liberation built on it, cannot be trusted.

Grades here are shares of classified particle material (resin and unclassified pixels
excluded), the definition of :mod:`mineral3d.measure.liberation`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import numpy as np
import pandas as pd

from mineral3d.measure.liberation import GRADE_EPS, THRESHOLDS, Population
from mineral3d.measure.sections2d import map_section_table
from mineral3d.phase_table import RESIN, UNCLASSIFIED

__all__ = ["PAIR_COLUMNS", "GradeCalibration", "add_grade_columns", "calibrated_population", "fit_grade_error",
           "fit_grade_calibration", "liberation_agreement", "pairs_population", "section_grade_pairs"]

PAIR_COLUMNS = ("section", "cut", "ecd_um", "material_um2", "target_um2", "grade", "pred_material_um2",
                "pred_target_um2", "pred_grade")
"""Columns of a section-grade-pair table (areas µm^2; grades 0-1)."""


def section_grade_pairs(map_ids: np.ndarray, predicted: np.ndarray, *, pixel_size_um: float,
                        target_id: int) -> pd.DataFrame:
    """True and predicted grade of every whole particle section of one map.

    Parameters
    ----------
    map_ids : (H, W) uint8 ndarray
        The registered mineral map (0 resin, 255 unclassified).
    predicted : (H, W) uint8 ndarray
        Predicted phase ids cut on the map grid (:func:`mineral3d.plane.cut_volume`);
        255 where the map pixel lies outside the CT.
    pixel_size_um : float
        Map pixel edge, µm.
    target_id : int

    Returns
    -------
    DataFrame with :data:`PAIR_COLUMNS`, one row per particle section of the map (the
    sections of :func:`~mineral3d.measure.sections2d.map_section_table`, on the map pixels
    inside the CT) that holds classified material. ``cut``: the section touches the map's
    or the CT's edge. Cut sections are kept: map and prediction are compared on the same
    pixels, so a cut piece is as good a grade comparison as a whole one (it is only its
    particle's true extent that is unknown).
    """
    map_ids = np.asarray(map_ids, np.uint8)
    predicted = np.asarray(predicted, np.uint8)
    if map_ids.shape != predicted.shape:
        raise ValueError(f"predicted has shape {predicted.shape}, the map {map_ids.shape}")
    table, labels = map_section_table(map_ids, pixel_size_um=pixel_size_um, target_id=target_id,
                                      measured=predicted != UNCLASSIFIED)
    n = len(table) + 1
    flat = labels.ravel().astype(np.int64)
    p = predicted.ravel()
    a2 = pixel_size_um ** 2
    pm = np.bincount(flat, weights=((p != RESIN) & (p != UNCLASSIFIED)).astype(float), minlength=n)[1:] * a2
    pt = np.bincount(flat, weights=(p == target_id).astype(float), minlength=n)[1:] * a2
    out = pd.DataFrame({
        "section": table["section"].to_numpy(np.int64), "cut": table["cut"].to_numpy(bool),
        "ecd_um": table["ecd_um"].to_numpy(float),
        "material_um2": table["material_um2"].to_numpy(float), "target_um2": table["target_um2"].to_numpy(float),
        "grade": table["grade"].to_numpy(float), "pred_material_um2": pm, "pred_target_um2": pt,
        "pred_grade": np.divide(pt, pm, out=np.zeros_like(pt), where=pm > 0)})
    return out[out["material_um2"].to_numpy() > 0].reset_index(drop=True)


def pairs_population(pairs: pd.DataFrame, *, predicted: bool, calibration: GradeCalibration | None = None,
                     group_offset: int = 0) -> Population:
    """Liberation population of section grade pairs: the map's (``predicted=False``) or the
    prediction's own amounts and grades (optionally calibrated). Exposure is not compared (0)."""
    if predicted:
        amount = pairs["pred_material_um2"].to_numpy(float)
        grade = pairs["pred_grade"].to_numpy(float)
        if calibration is not None:
            grade = calibration.apply(grade)
        target = amount * grade
    else:
        amount, target = pairs["material_um2"].to_numpy(float), pairs["target_um2"].to_numpy(float)
    return Population(amount=amount, target=target, exposure=np.zeros(len(pairs)),
                      size_um=pairs["ecd_um"].to_numpy(float), group=np.arange(len(pairs)) + group_offset)


def _liberation(amount_target: np.ndarray, grade: np.ndarray, weights: np.ndarray, thresholds) -> np.ndarray:
    """L(t) of bootstrap weights (B, n) over sections with target amounts and grades (n,): (B, T)."""
    tot = weights @ amount_target
    lib = np.stack([weights @ (amount_target * (grade >= t - GRADE_EPS)) for t in thresholds], axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return lib / tot[..., None]


def liberation_agreement(pairs: pd.DataFrame, *, calibration: GradeCalibration | None = None,
                         thresholds=THRESHOLDS, n_boot: int = 1000, seed: int = 0, tolerance: float = 0.03,
                         grade_tolerance: float = 0.05, precision: float = 0.1,
                         min_target_sections: int = 10) -> dict:
    """Predicted vs mapped 2D liberation on the same particle sections, with a verdict.

    Both L(t) are computed over the same sections (the map's outlines, pieces cut by the
    map's or the CT's edge included: both sides see the same pixels), the map's with its
    own grades, the prediction's with its (calibrated, when ``calibration`` is given)
    grades. Sections are resampled together (paired bootstrap, ``n_boot`` draws), which
    gives a 95% interval of the difference predicted - map.

    Verdict (``status``):

    - ``"untrusted"``: for some threshold the interval excludes 0 and the difference is
      larger than ``tolerance``: the segmentation misjudges grades on a plane it was not
      trained on, so the 3D liberation computed from it is off by about as much; or the
      target's share of the sections' material differs by more than ``grade_tolerance``
      beyond its interval (a grade bias that moves particles across the thresholds);
    - ``"inconclusive"``: fewer than ``min_target_sections`` sections hold target in the
      map or the prediction, or no disagreement was found but the intervals are too wide
      to show agreement (L(t) difference wider than +-``precision``, target share wider
      than +-``grade_tolerance``): too few sections to tell;
    - ``"trusted"`` otherwise.

    Returns
    -------
    dict: ``status``, ``reason`` (plain words), ``sections``, ``target_sections``, and per
    threshold ``{"map", "predicted", "difference", "ci95", "ci95_map", "ci95_predicted"}``.
    """
    rng = np.random.default_rng(seed)
    n = len(pairs)
    t = tuple(float(x) for x in thresholds)
    tm = pairs["target_um2"].to_numpy(float)
    gm = pairs["grade"].to_numpy(float)
    pop_p = pairs_population(pairs, predicted=True, calibration=calibration)
    tp, gp = pop_p.target, pop_p.grade
    n_target = int(np.sum((tm > 0) | (tp > 0)))
    one = np.ones((1, n))
    lm, lp = _liberation(tm, gm, one, t)[0], _liberation(tp, gp, one, t)[0]
    if n:
        w = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)
        bm, bp = _liberation(tm, gm, w, t), _liberation(tp, gp, w, t)
    else:
        bm = bp = np.full((n_boot, len(t)), np.nan)
    d = bp - bm

    def ci(x):
        ok = np.isfinite(x).all(axis=1)
        if ok.sum() < 2:
            return [[None, None]] * len(t)
        lo, hi = np.percentile(x[ok], [2.5, 97.5], axis=0)
        return [[float(a), float(b)] for a, b in zip(lo, hi)]

    cd, cm, cp = ci(d), ci(bm), ci(bp)
    # the target's share of section material, map vs prediction (a grade bias, paired bootstrap)
    am, ap = pairs["material_um2"].to_numpy(float), pop_p.amount
    share_m = float(tm.sum() / am.sum()) if am.sum() > 0 else float("nan")
    share_p = float(tp.sum() / ap.sum()) if ap.sum() > 0 else float("nan")
    if n:
        with np.errstate(invalid="ignore", divide="ignore"):
            bs = (w @ tp) / (w @ ap) - (w @ tm) / (w @ am)
        bs = bs[np.isfinite(bs)]
    else:
        bs = np.zeros(0)
    share_ci = [float(v) for v in np.percentile(bs, [2.5, 97.5])] if len(bs) > 1 else [None, None]
    share_diff = share_p - share_m
    share_off = (np.isfinite(share_diff) and share_ci[0] is not None and (share_ci[0] > 0 or share_ci[1] < 0)
                 and abs(share_diff) > grade_tolerance)
    per = {}
    off = []
    for i, ti in enumerate(t):
        diff = float(lp[i] - lm[i]) if np.isfinite(lp[i] - lm[i]) else None
        per[f"{ti:g}"] = {"map": _num(lm[i]), "predicted": _num(lp[i]), "difference": diff, "ci95": cd[i],
                          "ci95_map": cm[i], "ci95_predicted": cp[i]}
        lo, hi = cd[i]
        if diff is not None and lo is not None and (lo > 0 or hi < 0) and abs(diff) > tolerance:
            off.append((ti, diff))
    l_widths = [hi - lo for lo, hi in cd if lo is not None]
    wide = (not l_widths or max(l_widths) > 2 * precision
            or share_ci[0] is None or share_ci[1] - share_ci[0] > 2 * grade_tolerance)
    if n_target < min_target_sections:
        status = "inconclusive"
        reason = (f"only {n_target} particle sections of the validation map(s) hold the target: too few to check "
                  "the liberation")
    elif off:
        worst = max(off, key=lambda x: abs(x[1]))
        status = "untrusted"
        reason = (f"on the held-out section(s) the segmentation gives a 2D liberation L({worst[0]:g}) "
                  f"{'higher' if worst[1] > 0 else 'lower'} than the SEM map by {abs(worst[1]):.2f} "
                  f"(beyond the 95% interval and the {tolerance:.2f} tolerance): it misjudges particle grades on a "
                  "plane it was not trained on, so the 3D liberation from it is likely off by a similar amount")
    elif share_off:
        status = "untrusted"
        reason = (f"on the held-out section(s) the segmentation puts {100 * share_p:.1f}% of particle material in "
                  f"the target against the SEM map's {100 * share_m:.1f}% (beyond the 95% interval and "
                  f"{100 * grade_tolerance:.0f} points): particle grades, and so the 3D liberation, are biased")
    elif wide:
        status = "inconclusive"
        reason = (f"the held-out section(s) hold too few particle sections ({n}) to check the liberation: the 95% "
                  f"interval of the difference is wider than +-{precision:.2f} (L) or +-{grade_tolerance:.2f} "
                  "(target share); treat the 3D liberation with caution or add a validation section")
    else:
        status = "trusted"
        reason = (f"on the held-out section(s) the segmentation's 2D liberation and target share agree with the "
                  f"SEM map's within the 95% interval or the tolerance ({tolerance:.2f}; "
                  f"{100 * grade_tolerance:.0f} points)")
        if all(per[k]["map"] == 0 and per[k]["predicted"] == 0 for k in per):
            reason += ("; the map holds no particle section of high grade, so this only shows that the "
                       "segmentation does not invent liberated particles")
    return {"status": status, "reason": reason, "sections": int(n), "target_sections": n_target,
            "calibrated": calibration is not None and calibration.applied, "tolerance": tolerance,
            "target_share": {"map": _num(share_m), "predicted": _num(share_p), "difference": _num(share_diff),
                             "ci95": share_ci, "tolerance": grade_tolerance},
            "thresholds": per}


def _num(v) -> float | None:
    return float(v) if np.isfinite(v) else None


@dataclass(frozen=True)
class GradeCalibration:
    """How the segmentation's grades relate to the true ones, and its inverse.

    The *classical* (inverse) calibration: on the train sections the predicted grade is
    regressed on the true (map) grade, ``pred = intercept + slope * true`` (weighted
    least squares, weights = section material area), and a particle's grade is estimated
    as ``(pred - intercept) / slope``, clipped to [0, 1]. Regressing the prediction on the
    truth, not the truth on the prediction, keeps the estimate unbiased for each particle
    (the truth is the regressor, so the section-to-section scatter of the prediction does
    not shrink the fit toward the mean): a pure particle whose voxels are called target at
    the rate ``intercept + slope`` gets grade 1 again, a barren one at ``intercept`` gets 0.

    Attributes
    ----------
    intercept, slope : float
        The fitted line (grades 0-1). Identity: 0 and 1.
    sd : float
        Residual scatter of the predicted section grades about the line, divided by the
        slope: the spread of one section's calibrated grade (a 2D spread, an upper bound
        for a whole particle, which averages many sections).
    applied : bool
        False when the fit is ill-determined or cross-validation showed no gain:
        :meth:`apply` is then the identity.
    note : str
        Why it was (not) applied, in words.
    cv : dict
        Leave-one-section-out errors on the held-out sections, uncalibrated and calibrated:
        the target share of the sections' material and the 2D L(t).
    sections : tuple of str
        The train sections the fit used.
    particle_sd, noise_um2 : float or None
        The error model of the grade estimate (:func:`fit_grade_error`): the sd of the
        part of a section's grade error that does not shrink with its area (0-1), and the
        variance x area (µm²) of the part that does. None: too few target-bearing train
        sections to tell (or a calibration stored before they existed).
    line_cov : tuple or None
        Covariance ((var, cov), (cov, var)) of (intercept, slope) over the bootstrap of
        the train sections' particle sections: how well the line itself is known. Shared
        by every particle, so it widens the interval of L3D (:meth:`draw_grades`), not
        ``grade_sd``. None where no line was fitted (or stored before it existed).
    """

    intercept: float = 0.0
    slope: float = 1.0
    sd: float = 0.0
    applied: bool = False
    note: str = "identity"
    cv: dict = field(default_factory=dict)
    sections: tuple[str, ...] = ()
    particle_sd: float | None = None
    noise_um2: float | None = None
    line_cov: tuple[tuple[float, float], tuple[float, float]] | None = None

    def apply(self, grade: np.ndarray) -> np.ndarray:
        """Calibrated grades (same shape), clipped to [0, 1]."""
        g = np.asarray(grade, float)
        if not self.applied:
            return g.copy()
        return np.clip((g - self.intercept) / self.slope, 0.0, 1.0)

    def particle_spread(self, esd_um: np.ndarray) -> np.ndarray:
        """Standard deviation (0-1) of each 3D particle's grade estimate, NaN when unknown.

        From the error model fitted on the train sections (:func:`fit_grade_error`):
        ``sqrt(particle_sd² + noise_um2 / A)``, ``A`` = π/4 ESD² (µm²), the particle's
        central section. A whole particle is taken to be as uncertain as that section: the
        errors of its sections are correlated (the same crystal faces, rims and grey shift
        run through it), so averaging over its planes is not counted on. Measured against
        the truth (docs/grades.md): (grade - truth) / grade_sd had rms 0.72 on fine 35 at
        2 µm, where assuming planes 2 voxels apart independent gave 2.7.
        """
        esd = np.asarray(esd_um, float)
        if self.particle_sd is None or self.noise_um2 is None:
            return np.full(esd.shape, np.nan)
        with np.errstate(divide="ignore"):
            return np.sqrt(self.particle_sd ** 2 + self.noise_um2 / (np.pi / 4 * esd ** 2))

    def draw_grades(self, grade: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
        """(n, len(grade)) calibrated grades, each row under a line drawn from the line's uncertainty.

        The line's (intercept, slope) is drawn from a normal with covariance
        :attr:`line_cov` about the line in use (the fitted one when applied, else the
        identity: not applying it is an estimate with the same uncertainty), slopes kept at
        :data:`MIN_SLOPE` or above; every particle of a row is calibrated with that row's
        line. Without :attr:`line_cov`, every row is :meth:`apply`.
        """
        g = np.asarray(grade, float)
        if self.line_cov is None:
            return np.broadcast_to(self.apply(g), (n, len(g))).copy()
        a0, b0 = (self.intercept, self.slope) if self.applied else (0.0, 1.0)
        d = rng.multivariate_normal(np.zeros(2), np.asarray(self.line_cov, float), size=n, method="eigh")
        a, b = a0 + d[:, :1], np.maximum(b0 + d[:, 1:], MIN_SLOPE)
        return np.clip((g[None, :] - a) / b, 0.0, 1.0)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["sections"] = list(self.sections)
        d["line_cov"] = None if self.line_cov is None else [list(r) for r in self.line_cov]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> GradeCalibration:
        opt = {k: (None if d.get(k) is None else float(d[k])) for k in ("particle_sd", "noise_um2")}
        cov = d.get("line_cov")
        return cls(intercept=float(d["intercept"]), slope=float(d["slope"]), sd=float(d["sd"]),
                   applied=bool(d["applied"]), note=str(d.get("note", "")), cv=dict(d.get("cv", {})),
                   sections=tuple(d.get("sections", ())),
                   line_cov=None if cov is None else tuple(tuple(float(v) for v in r) for r in cov), **opt)


MIN_ERROR_SECTIONS = 10
"""Fewer target-bearing train sections than this: the grade error is not estimated."""


def fit_grade_error(pairs: pd.DataFrame, calibration: GradeCalibration) -> tuple[float, float] | None:
    """(particle_sd, noise_um2): how the grade estimate's error depends on section area.

    On the target-bearing train sections (map or prediction holds target: barren sections
    predicted barren would only pull the spread toward 0), the error of the estimate the
    run uses (``calibration.apply(pred_grade) - grade``, so an unapplied calibration is
    judged as the identity it is) is modelled as ``e² = particle_sd² + noise_um2 / A``
    with ``A`` the section's material area (µm²), fitted by non-negative least squares,
    reweighted by the fitted variance (a squared error scatters in proportion to it):
    the first part (a crystal or a region mis-called as a whole, a particle-wide grey
    shift) stays in a whole particle, the second (partial volume at crystal faces, noise)
    averages out over a larger area. None when fewer than :data:`MIN_ERROR_SECTIONS`
    sections hold target.
    """
    from scipy.optimize import nnls

    tm, pm = pairs["target_um2"].to_numpy(float), pairs["pred_target_um2"].to_numpy(float)
    keep = (tm > 0) | (pm > 0)
    if keep.sum() < MIN_ERROR_SECTIONS:
        return None
    a = pairs["material_um2"].to_numpy(float)[keep]
    e = calibration.apply(pairs["pred_grade"].to_numpy(float)[keep]) - pairs["grade"].to_numpy(float)[keep]
    x, y = np.stack([np.ones_like(a), 1.0 / a], axis=1), e ** 2
    scale = np.ones_like(a)
    for _ in range(4):  # feasible GLS: e² of a section with variance v scatters with sd ~ v (sqrt(2) v if normal)
        (v0, k), _ = nnls(x / scale[:, None], y / scale)
        scale = np.maximum(v0 + k / a, 1e-6)
    return float(np.sqrt(v0)), float(k)


MIN_SLOPE = 0.25
"""A fitted slope below this means the segmentation hardly tells the target's share at all
(its predicted grade barely follows the true one): inverting it would amplify noise, so no
calibration is applied."""


def _fit_line(tg: np.ndarray, pg: np.ndarray, w: np.ndarray) -> tuple[float, float, float]:
    """(intercept, slope, residual sd) of the weighted regression of predicted on true grade."""
    sw = np.sqrt(w)
    a = np.stack([np.ones_like(tg), tg], axis=1) * sw[:, None]
    (c0, c1), *_ = np.linalg.lstsq(a, pg * sw, rcond=None)
    res = pg - (c0 + c1 * tg)
    sd = float(np.sqrt(np.average(res ** 2, weights=w))) if w.sum() > 0 else 0.0
    return float(c0), float(c1), sd


def _share(target: np.ndarray, amount: np.ndarray) -> float:
    return float(target.sum() / amount.sum()) if amount.sum() > 0 else float("nan")


def fit_grade_calibration(pairs: dict[str, pd.DataFrame], *, thresholds=THRESHOLDS,
                          min_sections: int = 20, n_boot: int = 500, seed: int = 0) -> GradeCalibration:
    """Fit the classical grade calibration on the train sections' grade pairs.

    Parameters
    ----------
    pairs : dict of section name -> DataFrame
        :func:`section_grade_pairs` of each train section (all of their particle sections,
        barren ones included: they pin the intercept).
    thresholds : sequence of float
        Liberation thresholds reported by the cross-validation.
    min_sections : int
        Fewer target-bearing particle sections than this in all: no calibration.

    n_boot, seed : int
        Bootstrap draws (particle sections resampled) for the line's 95% intervals.

    Returns
    -------
    GradeCalibration, ``applied`` when at least ``min_sections`` sections hold target, the
    slope is at least :data:`MIN_SLOPE`, and the line differs significantly from the
    identity: the 95% bootstrap interval of the predicted grade of a barren section
    (``intercept``) excludes 0 or that of a pure one (``intercept + slope``) excludes 1.
    Without such evidence of a bias, inverting the line would only add its noise.
    Leave-one-section-out cross-validation (fit on the other sections, applied to the
    held-out one; with a single train section, its particle sections in two alternating
    halves) is recorded in ``cv`` (target share and 2D L(t) errors), not used to decide:
    with two train sections of a few dozen particle sections each, a line fitted on one
    section is too noisy to judge the line fitted on all.
    """
    names = sorted(pairs)
    frames = [pairs[n].assign(_fold=k) for k, n in enumerate(names)]
    data = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*PAIR_COLUMNS, "_fold"])
    if len(names) == 1 and len(data):
        data["_fold"] = np.arange(len(data)) % 2
    pg, tg = data["pred_grade"].to_numpy(float), data["grade"].to_numpy(float)
    w = data["material_um2"].to_numpy(float)
    n_target = int(np.sum((data["target_um2"].to_numpy(float) > 0) | (data["pred_target_um2"].to_numpy(float) > 0)))
    if n_target < min_sections:
        return _with_error(GradeCalibration(note=f"not applied: {n_target} target-bearing particle sections on the "
                                                 f"train sections (at least {min_sections} needed)",
                                            sections=tuple(names)), data)
    c0, c1, sd = _fit_line(tg, pg, w)
    base = dict(intercept=c0, slope=c1, sd=sd / c1 if c1 > 0 else float("inf"), sections=tuple(names))
    if c1 < MIN_SLOPE:
        return _with_error(GradeCalibration(**{**base, "sd": 0.0},
                                            note=f"not applied: the predicted grade follows the true one with slope "
                                                 f"{c1:.2f} (< {MIN_SLOPE}): too weak to invert"), data)
    t = tuple(float(v) for v in thresholds)
    share_raw, share_cal, l_raw, l_cal = [], [], [], []
    fold = data["_fold"].to_numpy()
    for f in np.unique(fold):
        test, train = fold == f, fold != f
        if train.sum() < 5 or test.sum() < 5:
            continue
        f0, f1, _ = _fit_line(tg[train], pg[train], w[train])
        if f1 < MIN_SLOPE:
            continue
        held = data[test]
        cal = GradeCalibration(intercept=f0, slope=f1, applied=True)
        raw = pairs_population(held, predicted=True)
        fit = pairs_population(held, predicted=True, calibration=cal)
        tm, am = held["target_um2"].to_numpy(float), held["material_um2"].to_numpy(float)
        sm = _share(tm, am)
        share_raw.append(abs(_share(raw.target, raw.amount) - sm))
        share_cal.append(abs(_share(fit.target, fit.amount) - sm))
        one = np.ones((1, len(held)))
        lm = _liberation(tm, held["grade"].to_numpy(float), one, t)[0]
        l_raw.append(np.abs(_liberation(raw.target, raw.grade, one, t)[0] - lm))
        l_cal.append(np.abs(_liberation(fit.target, fit.grade, one, t)[0] - lm))
    cv = {"folds": len(share_raw), "thresholds": [f"{v:g}" for v in t],
          "share_error_raw": float(np.nanmean(share_raw)) if share_raw else None,
          "share_error_calibrated": float(np.nanmean(share_cal)) if share_cal else None,
          "liberation_error_raw": [float(v) for v in np.nanmean(l_raw, axis=0)] if l_raw else None,
          "liberation_error_calibrated": [float(v) for v in np.nanmean(l_cal, axis=0)] if l_cal else None}
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(n_boot):
        i = rng.integers(0, len(tg), len(tg))
        b0, b1, _ = _fit_line(tg[i], pg[i], w[i])
        lines.append((b0, b1))
    lines = np.asarray(lines)
    ends = np.stack([lines[:, 0], lines.sum(axis=1)], axis=1)
    lo, hi = np.percentile(ends, [2.5, 97.5], axis=0)
    cov = np.cov(lines, rowvar=False)
    base["line_cov"] = tuple(tuple(float(v) for v in r) for r in cov)
    cv["barren_ci95"] = [float(lo[0]), float(hi[0])]
    cv["pure_ci95"] = [float(lo[1]), float(hi[1])]
    line = (f"predicted grade = {c0:+.3f} + {c1:.3f} x true grade (barren sections predicted {c0:.3f}, 95% CI "
            f"{lo[0]:.3f} to {hi[0]:.3f}; pure ones {c0 + c1:.3f}, {lo[1]:.3f} to {hi[1]:.3f})")
    applied = bool(lo[0] > 0 or hi[0] < 0 or lo[1] > 1 or hi[1] < 1)
    rich = tg >= min(t) - 1e-9
    support = (f"; {int(rich.sum())} of the train particle sections hold at least {min(t):.0%} target "
               f"({w[rich].sum():.0f} µm²): the line's rich end rests on them")
    note = (f"{'applied' if applied else 'not applied'}: on the train sections {line}"
            + ("" if applied else ": no significant bias to correct") + support)
    return _with_error(GradeCalibration(**base, applied=applied, note=note, cv=cv), data)


def _with_error(calibration: GradeCalibration, data: pd.DataFrame) -> GradeCalibration:
    fit = fit_grade_error(data, calibration)
    if fit is None:
        return calibration
    return replace(calibration, particle_sd=fit[0], noise_um2=fit[1])


def add_grade_columns(table: pd.DataFrame, target: str, calibration: GradeCalibration) -> pd.DataFrame:
    """The particle table with ``grade`` (calibrated target grade, 0-1) and ``grade_sd`` columns.

    ``grade_sd``: the standard deviation of each particle's grade estimate
    (:meth:`GradeCalibration.particle_spread`; NaN when the train sections could not tell).
    ``vol_<target>`` (the segmented voxel fraction) is kept as it is.
    """
    g = table[f"vol_{target}"].to_numpy(float)
    sd = calibration.particle_spread(table["esd_um"].to_numpy(float))
    return table.assign(grade=calibration.apply(g), grade_sd=sd)


def calibrated_population(pop: Population, calibration: GradeCalibration | None) -> Population:
    """``pop`` with its grades calibrated (target = amount x calibrated grade); exposure unchanged."""
    if calibration is None or not calibration.applied:
        return pop
    return Population(amount=pop.amount, target=pop.amount * calibration.apply(pop.grade), exposure=pop.exposure,
                      size_um=pop.size_um, group=pop.group)

"""Particle grades checked against the registered SEM sections: calibration and a trust signal.

A registered section is the truth on one plane: every particle section it shows has an
exact area grade (target area / classified material area). Cutting the predicted phase
volume on the same plane gives the predicted grade of the same section (the same pixels:
the map's section outline, so a predicted particle split or merge does not matter, only
the phases inside it). These *section grade pairs* serve twice:

- on the **train** sections they fit a :class:`GradeCalibration`: a monotone map from
  predicted to true grade (isotonic regression weighted by section area), checked by
  leave-one-section-out cross-validation and used only where that shows it helps;
- on the **validation** sections (never in the fit) they give :func:`liberation_agreement`:
  the predicted 2D liberation on that plane against the map's own, with a paired
  bootstrap interval; a disagreement beyond the interval means the segmentation, and so
  the 3D liberation built on it, cannot be trusted.

Grades here are shares of classified particle material (resin and unclassified pixels
excluded), the definition of :mod:`mineral3d.measure.liberation`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from mineral3d.measure.liberation import THRESHOLDS, Population
from mineral3d.measure.sections2d import map_section_table
from mineral3d.phases import RESIN, UNCLASSIFIED

__all__ = ["PAIR_COLUMNS", "GradeCalibration", "add_grade_columns", "calibrated_population",
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
    lib = np.stack([weights @ (amount_target * (grade >= t - 1e-9)) for t in thresholds], axis=-1)
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
    """A monotone map from predicted to true particle grade, fitted on train-section pairs.

    Attributes
    ----------
    x, y : tuple of float
        Knots: predicted grade ``x`` (increasing, 0-1) maps to calibrated grade ``y``
        (non-decreasing), linear in between, constant beyond the ends. A predicted grade
        of exactly 0 or 1 maps to the value fitted for the sections predicted so.
    sd : tuple of float
        Spread (standard deviation) of the true section grade about ``y`` at each knot
        (a 2D spread: an upper bound for a whole particle, which averages many sections).
    applied : bool
        False when cross-validation showed no gain: :meth:`apply` is then the identity
        and :meth:`spread` still reports the uncalibrated residual spread.
    note : str
        Why it was (not) applied, in words.
    cv : dict
        Leave-one-section-out errors of the 2D L(t) (mean absolute over held-out
        sections), raw and calibrated.
    sections : tuple of str
        The train sections the fit used.
    """

    x: tuple[float, ...] = (0.0, 1.0)
    y: tuple[float, ...] = (0.0, 1.0)
    sd: tuple[float, ...] = (0.0, 0.0)
    applied: bool = False
    note: str = "identity"
    cv: dict = field(default_factory=dict)
    sections: tuple[str, ...] = ()

    def apply(self, grade: np.ndarray) -> np.ndarray:
        """Calibrated grades (same shape), clipped to [0, 1]."""
        g = np.asarray(grade, float)
        if not self.applied:
            return g.copy()
        return np.clip(np.interp(g, self.x, self.y), 0.0, 1.0)

    def spread(self, grade: np.ndarray) -> np.ndarray:
        """Standard deviation of the true grade at each predicted grade (a 2D spread)."""
        return np.interp(np.asarray(grade, float), self.x, self.sd)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(x=list(self.x), y=list(self.y), sd=list(self.sd), sections=list(self.sections))
        return d

    @classmethod
    def from_dict(cls, d: dict) -> GradeCalibration:
        return cls(x=tuple(float(v) for v in d["x"]), y=tuple(float(v) for v in d["y"]),
                   sd=tuple(float(v) for v in d["sd"]), applied=bool(d["applied"]), note=str(d.get("note", "")),
                   cv=dict(d.get("cv", {})), sections=tuple(d.get("sections", ())))


N_KNOTS = 21
"""The isotonic fit is evaluated on this many evenly spaced predicted grades (0, 0.05, ..., 1)."""


def _fit_curve(pg: np.ndarray, tg: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Knots (x, y, sd) of the weighted isotonic regression of true on predicted grade."""
    from scipy.optimize import isotonic_regression

    x = np.linspace(0.0, 1.0, N_KNOTS)
    ux, inv = np.unique(pg, return_inverse=True)  # ties pooled first: one fitted value per predicted grade
    uw = np.bincount(inv, weights=w, minlength=len(ux))
    uy = np.bincount(inv, weights=w * tg, minlength=len(ux)) / np.where(uw > 0, uw, 1.0)
    fitted = np.clip(isotonic_regression(uy, weights=np.maximum(uw, 1e-12), increasing=True).x, 0.0, 1.0)
    y = np.interp(x, ux, fitted)
    # beyond the predicted grades seen, no evidence: keep the prediction's own steps (slope 1)
    # from the nearest fitted value, rather than a flat line that would cap every grade there
    lo, hi = x < ux[0], x > ux[-1]
    y[lo] = np.clip(fitted[0] - (ux[0] - x[lo]), 0.0, fitted[0])
    y[hi] = np.clip(fitted[-1] + (x[hi] - ux[-1]), fitted[-1], 1.0)
    # residual spread per knot: weighted, in a window of +-1 knot spacing (all residuals if too few)
    res = tg - fitted[inv]
    sd = np.empty_like(x)
    for i, xi in enumerate(x):
        m = np.abs(pg - xi) <= 1.0 / (N_KNOTS - 1) + 1e-9
        if w[m].sum() <= 0 or m.sum() < 5:
            m = np.ones_like(pg, bool)
        sd[i] = np.sqrt(np.average(res[m] ** 2, weights=w[m])) if w[m].sum() > 0 else 0.0
    return x, y, sd


def fit_grade_calibration(pairs: dict[str, pd.DataFrame], *, thresholds=THRESHOLDS,
                          min_sections: int = 20) -> GradeCalibration:
    """Fit the predicted -> true grade map on the train sections' grade pairs.

    Parameters
    ----------
    pairs : dict of section name -> DataFrame
        :func:`section_grade_pairs` of each train section. Only sections with target in the
        map or the prediction inform the fit (barren sections say nothing about grades).
    thresholds : sequence of float
        Liberation thresholds scored by the cross-validation.
    min_sections : int
        Fewer target-bearing sections than this in all: no calibration (too little data).

    Returns
    -------
    GradeCalibration. It is ``applied`` only when, leaving each section out in turn and
    fitting on the others, the calibrated 2D L(t) of the held-out section is closer to the
    map's than the uncalibrated one (mean absolute error over sections and thresholds).
    With a single train section the cross-validation splits its particle sections in two
    halves (alternating) instead.
    """
    names = sorted(pairs)
    frames = []
    for k, name in enumerate(names):
        f = pairs[name]
        f = f[(f["target_um2"] > 0) | (f["pred_target_um2"] > 0)]
        frames.append(f.assign(_fold=k))
    data = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*PAIR_COLUMNS, "_fold"])
    if len(names) == 1 and len(data):
        data["_fold"] = np.arange(len(data)) % 2
    pg, tg = data["pred_grade"].to_numpy(float), data["grade"].to_numpy(float)
    w = data["material_um2"].to_numpy(float)
    if len(data) < min_sections:
        return GradeCalibration(note=f"not applied: {len(data)} target-bearing particle sections on the train "
                                     f"sections (at least {min_sections} needed)", sections=tuple(names))
    x, y, sd = _fit_curve(pg, tg, w)
    t = tuple(float(v) for v in thresholds)
    folds = np.unique(data["_fold"])
    err_raw, err_cal = [], []
    for f in folds:
        test, train = data["_fold"].to_numpy() == f, data["_fold"].to_numpy() != f
        if train.sum() < 5 or test.sum() < 5:
            continue
        cx, cy, _ = _fit_curve(pg[train], tg[train], w[train])
        held = data[test]
        cal = GradeCalibration(x=tuple(cx), y=tuple(cy), sd=tuple(np.zeros_like(cx)), applied=True)
        one = np.ones((1, len(held)))
        lm = _liberation(held["target_um2"].to_numpy(float), held["grade"].to_numpy(float), one, t)[0]
        raw = pairs_population(held, predicted=True)
        fit = pairs_population(held, predicted=True, calibration=cal)
        lr = _liberation(raw.target, raw.grade, one, t)[0]
        lc = _liberation(fit.target, fit.grade, one, t)[0]
        if np.all(np.isfinite([*lm, *lr, *lc])):
            err_raw.append(np.abs(lr - lm))
            err_cal.append(np.abs(lc - lm))
    cv = {"folds": len(err_raw), "thresholds": [f"{v:g}" for v in t],
          "mae_raw": [float(v) for v in np.mean(err_raw, axis=0)] if err_raw else None,
          "mae_calibrated": [float(v) for v in np.mean(err_cal, axis=0)] if err_cal else None}
    if not err_raw:
        note, applied = "not applied: no fold to cross-validate on", False
    else:
        a, b = float(np.mean(err_raw)), float(np.mean(err_cal))
        applied = b < a
        note = (f"{'applied' if applied else 'not applied'}: held-out-section 2D liberation error "
                f"{a:.3f} uncalibrated, {b:.3f} calibrated (mean over {len(err_raw)} folds and thresholds)")
    if not applied:  # the identity, with the uncalibrated residual spread
        x = np.linspace(0.0, 1.0, N_KNOTS)
        y = x.copy()
        res = tg - pg
        sd = np.array([np.sqrt(np.average(res[m] ** 2, weights=w[m])) if m.sum() >= 5 and w[m].sum() > 0
                       else np.sqrt(np.average(res ** 2, weights=w))
                       for m in (np.abs(pg - xi) <= 1.0 / (N_KNOTS - 1) + 1e-9 for xi in x)])
    return GradeCalibration(x=tuple(float(v) for v in x), y=tuple(float(v) for v in y),
                            sd=tuple(float(v) for v in sd), applied=applied, note=note, cv=cv,
                            sections=tuple(names))


def add_grade_columns(table: pd.DataFrame, target: str, calibration: GradeCalibration) -> pd.DataFrame:
    """The particle table with ``grade`` (calibrated target grade, 0-1) and ``grade_sd`` columns.

    ``vol_<target>`` (the segmented voxel fraction) is kept as it is.
    """
    g = table[f"vol_{target}"].to_numpy(float)
    return table.assign(grade=calibration.apply(g), grade_sd=calibration.spread(g))


def calibrated_population(pop: Population, calibration: GradeCalibration | None) -> Population:
    """``pop`` with its grades calibrated (target = amount x calibrated grade); exposure unchanged."""
    if calibration is None or not calibration.applied:
        return pop
    return Population(amount=pop.amount, target=pop.amount * calibration.apply(pop.grade), exposure=pop.exposure,
                      size_um=pop.size_um, group=pop.group)

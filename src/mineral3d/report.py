"""The HTML report of a run: one self-contained file, every figure inline (base64 PNG).

It reads only the run's outputs (``summary.json``, the CSV tables, ``validation.json``,
``registration/``, ``segmentation.zarr``) and the sample's CT, so it can be rebuilt
at any time (``mineral3d report OUT --sample SAMPLE``).
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from jinja2 import Environment  # noqa: E402
from scipy import ndimage  # noqa: E402

from mineral3d.intensity import RadialTrend, random_voxels  # noqa: E402
from mineral3d.io.layout import RunLayout  # noqa: E402
from mineral3d.io.sample import Sample  # noqa: E402

METHOD_LABEL = {"3d": "3D (particles)", "2d-virtual": "2D virtual sections", "2d-map": "2D SEM-EDS maps"}
METHOD_STYLE = {"3d": dict(color="k", lw=2), "2d-virtual": dict(color="tab:blue", ls="--"),
                "2d-map": dict(color="tab:red", ls=":")}


def _legend(ax) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _fmt_um(v) -> str:
    return "–" if v is None or not np.isfinite(v) else f"{v:+.0f}" if v < 0 else f"{v:.0f}"


def _file_png(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _colors(sample: Sample) -> dict[int, tuple]:
    return {p.id: tuple(c / 255 for c in p.color) for p in sample.phase_table.phases}


def fig_orthoslices(ct: np.ndarray, phases: np.ndarray, particles: np.ndarray | None, sample: Sample) -> str:
    """CT, phase overlay and particle outlines at the central z, y and x slices."""
    from skimage.segmentation import find_boundaries

    lut = sample.phase_table.color_lut() / 255.0
    centre = [s // 2 for s in ct.shape]
    views = [("z", (centre[0], slice(None), slice(None)), ("x (voxels)", "y (voxels)")),
             ("y", (slice(None), centre[1], slice(None)), ("x (voxels)", "z (voxels)")),
             ("x", (slice(None), slice(None), centre[2]), ("y (voxels)", "z (voxels)"))]
    fig, axes = plt.subplots(2, 3, figsize=(13, 8))
    lo, hi = np.percentile(random_voxels(ct, 500_000, 0), [0.5, 99.5])
    for j, (name, sl, (xl, yl)) in enumerate(views):
        g = np.clip((ct[sl].astype(float) - lo) / max(hi - lo, 1e-9), 0, 1)
        axes[0, j].imshow(g, cmap="gray", interpolation="nearest")
        axes[0, j].set_title(f"CT, {name} = {centre['zyx'.index(name)]}")
        rgb = np.repeat(g[..., None], 3, axis=2)
        ph = phases[sl]
        over = lut[ph]
        mat = ph != 0
        rgb[mat] = 0.35 * rgb[mat] + 0.65 * over[mat]
        if particles is not None:
            rgb[find_boundaries(particles[sl], mode="inner")] = (1.0, 1.0, 1.0)
        axes[1, j].imshow(rgb, interpolation="nearest")
        axes[1, j].set_title(f"phases + particle outlines (white), {name} slice")
        for a in (axes[0, j], axes[1, j]):
            a.set_xlabel(xl)
            a.set_ylabel(yl)
    handles = [plt.Rectangle((0, 0), 1, 1, color=np.array(p.color) / 255) for p in sample.phase_table.material]
    fig.legend(handles, [p.name for p in sample.phase_table.material], loc="lower center",
               ncol=len(handles), frameon=False)
    return _png(fig)


def fig_confusion(val: dict) -> str | None:
    a = val.get("all", {})
    if not a.get("confusion"):
        return None
    c = np.asarray(a["confusion"], float)
    names = val["phases"]
    norm = c / np.maximum(c.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(5.5, 4.8))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{norm[i, j]:.2f}\n({int(c[i, j])})", ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.6 else "black")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted phase (segmentation)")
    ax.set_ylabel("map phase (validation section, per voxel)")
    fig.colorbar(im, ax=ax, label="share of the map phase's voxels")
    ax.set_title("Confusion on validation sections")
    return _png(fig)


def fig_modal(summary: dict, val: dict, sample: Sample) -> str:
    names = [p.name for p in sample.phase_table.material]
    series = {"3D segmentation (volume %)": [100 * summary.get("modal_3d", {}).get(n, 0) for n in names]}
    a = val.get("all", {}).get("voxel_grid", {}).get("per_phase", {})
    if a:
        mat_ref = sum(a[n]["reference_fraction"] or 0 for n in names if n in a) or 1
        mat_pred = sum(a[n]["predicted_fraction"] or 0 for n in names if n in a) or 1
        series["validation maps (area %)"] = [100 * (a.get(n, {}).get("reference_fraction") or 0) / mat_ref
                                              for n in names]
        series["segmentation on those voxels (%)"] = [100 * (a.get(n, {}).get("predicted_fraction") or 0) / mat_pred
                                                      for n in names]
    fig, ax = plt.subplots(figsize=(7, 3.8))
    w = 0.8 / len(series)
    x = np.arange(len(names))
    for i, (k, v) in enumerate(series.items()):
        ax.bar(x + (i - (len(series) - 1) / 2) * w, v, w, label=k)
    ax.set_xticks(x, names)
    ax.set_ylabel("share of particle material (%)")
    ax.set_title("Modal mineralogy")
    _legend(ax)
    return _png(fig)


def fig_psd(particles: pd.DataFrame) -> str:
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for label, sel in (("all particles", np.ones(len(particles), bool)),
                       ("inside the volume", ~particles["touches_border"].to_numpy(bool))):
        d = np.sort(particles.loc[sel, "esd_um"].to_numpy())
        if d.size == 0:
            continue
        v = particles.loc[sel, "volume_um3"].to_numpy()[np.argsort(particles.loc[sel, "esd_um"].to_numpy())]
        ax.step(d, 100 * np.cumsum(v) / v.sum(), where="post", label=f"{label} (n={d.size})")
    ax.set_xscale("log")
    ax.set_xlabel("equivalent sphere diameter (µm)")
    ax.set_ylabel("cumulative volume passing (%)")
    ax.set_title("Particle size distribution")
    ax.grid(alpha=0.3, which="both")
    _legend(ax)
    return _png(fig)


def fig_spectrum_axes(ax, lib: pd.DataFrame, target: str) -> None:
    """Draw the grade liberation spectrum of every method in ``lib`` on ``ax``."""
    d = lib[(lib["size_class"] == "all") & (lib["basis"] == "grade")]
    classes = list(dict.fromkeys(d["grade_class"]))
    methods = [m for m in METHOD_LABEL if m in set(d["method"])]
    w = 0.8 / max(len(methods), 1)
    x = np.arange(len(classes))
    for i, m in enumerate(methods):
        v = d[d["method"] == m].set_index("grade_class").reindex(classes)["target_share"].fillna(0)
        ax.bar(x + (i - (len(methods) - 1) / 2) * w, 100 * v.to_numpy(), w, label=METHOD_LABEL[m],
               color=METHOD_STYLE[m]["color"])
    ax.set_xticks(x, classes, rotation=45)
    ax.set_xlabel(f"particle grade class ({target} % of particle)")
    ax.set_ylabel(f"share of all {target} (%)")
    ax.set_title(f"Liberation spectrum of {target}")
    _legend(ax)


def fig_spectrum(lib: pd.DataFrame, target: str) -> str:
    fig, ax = plt.subplots(figsize=(8, 3.8))
    fig_spectrum_axes(ax, lib, target)
    return _png(fig)


def fig_cumulative(curves: pd.DataFrame, particles: pd.DataFrame, target: str, *, seed: int = 0,
                   n_boot: int = 200) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for ax, basis in zip(axes, ("grade", "exposure")):
        for m in METHOD_LABEL:
            d = curves[(curves["method"] == m) & (curves["basis"] == basis)]
            if len(d):
                ax.plot(100 * d["t"], 100 * d["L"], label=METHOD_LABEL[m], **METHOD_STYLE[m])
        band = _bootstrap_band(particles, target, basis, seed=seed, n_boot=n_boot)
        if band is not None:
            t, lo, hi = band
            ax.fill_between(100 * t, 100 * lo, 100 * hi, color="k", alpha=0.15, label="3D, 95% bootstrap band")
        ax.set_xlabel(f"{target} {'grade' if basis == 'grade' else 'exposed surface share'} of particle, at least (%)")
        ax.set_ylabel(f"share of {target} in such particles (%)")
        ax.set_title(f"Cumulative liberation by {basis}")
        ax.grid(alpha=0.3)
        _legend(ax)
    return _png(fig)


def _bootstrap_band(particles: pd.DataFrame, target: str, basis: str, *, seed: int, n_boot: int):
    col_v, col_s = f"vol_{target}", f"surf_{target}"
    if col_v not in particles or len(particles) < 3:
        return None
    amount = particles["material_um3"].to_numpy(float)
    tgt = amount * particles[col_v].to_numpy(float)
    x = particles[col_v if basis == "grade" else col_s].to_numpy(float)
    t = np.linspace(0, 1, 101)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), (n_boot, len(x)))
    num = np.stack([(tgt[idx] * (x[idx] >= ti - 1e-9)).sum(axis=1) for ti in t], axis=1)
    den = np.maximum(tgt[idx].sum(axis=1, keepdims=True), 1e-12)
    L = num / den
    return t, np.percentile(L, 2.5, axis=0), np.percentile(L, 97.5, axis=0)


def fig_grade_recovery(gr: pd.DataFrame, target: str) -> str:
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for m in METHOD_LABEL:
        d = gr[gr["method"] == m]
        if len(d):
            ax.plot(100 * d["recovery"], 100 * d["cumulative_grade"], label=METHOD_LABEL[m], **METHOD_STYLE[m])
    ax.set_xlabel(f"{target} recovery (%)")
    ax.set_ylabel(f"cumulative {target} grade of concentrate (%)")
    ax.set_title("Grade-recovery (ideal separation by particle grade)")
    ax.grid(alpha=0.3)
    _legend(ax)
    return _png(fig)


def fig_by_size(lib: pd.DataFrame, target: str, threshold: str = "[80,90)") -> str | None:
    d = lib[(lib["size_class"] != "all") & (lib["basis"] == "grade")]
    if not len(d):
        return None
    order = list(dict.fromkeys(d["grade_class"]))
    high = order[order.index(threshold):] if threshold in order else order[-3:]
    fig, ax = plt.subplots(figsize=(8, 3.8))
    sizes = sorted(set(d["size_class"]), key=lambda s: float(s.split("-")[0]))
    x = np.arange(len(sizes))
    methods = [m for m in METHOD_LABEL if m in set(d["method"])]
    w = 0.8 / max(len(methods), 1)
    for i, m in enumerate(methods):
        dm = d[d["method"] == m]
        tot = dm.groupby("size_class")["target_amount"].sum()
        lib_ = dm[dm["grade_class"].isin(high)].groupby("size_class")["target_amount"].sum()
        v = [100 * lib_.get(s, 0) / tot.get(s, 1) if tot.get(s, 0) > 0 else np.nan for s in sizes]
        ax.bar(x + (i - (len(methods) - 1) / 2) * w, v, w, label=METHOD_LABEL[m], color=METHOD_STYLE[m]["color"])
    ax.set_xticks(x, sizes, rotation=45)
    ax.set_xlabel("size class (µm, ESD in 3D, equivalent circle diameter in 2D)")
    ax.set_ylabel(f"{target} in particles ≥ 80% grade (%)")
    ax.set_title("Liberation by size class")
    _legend(ax)
    return _png(fig)


def fig_particles_3d(phases: np.ndarray, particles: np.ndarray, table: pd.DataFrame, sample: Sample,
                     n: int = 3) -> str | None:
    """Surface renderings of a few typical particles (inside the volume, median size), coloured by phase."""
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection
    from skimage.measure import marching_cubes

    inside = table[~table["touches_border"].astype(bool)]
    pool = inside if len(inside) >= n else table
    if not len(pool):
        return None
    med = pool["volume_um3"].median()
    pick = pool.iloc[np.argsort(np.abs(pool["volume_um3"].to_numpy() - med))[:n]]
    colors = _colors(sample)
    fig = plt.figure(figsize=(4.2 * len(pick), 4.2))
    for i, (_, row) in enumerate(pick.iterrows()):
        ax = fig.add_subplot(1, len(pick), i + 1, projection="3d")
        box = tuple(slice(max(0, int(row[f"bbox_{a}0"]) - 1), int(row[f"bbox_{a}1"]) + 1) for a in "zyx")
        lab = particles[box] == int(row["particle"])
        ph = np.where(lab, phases[box], 0)
        step = max(1, int(round(max(lab.shape) / 48)))
        m = np.pad(lab, 1)
        try:
            v, f, _, _ = marching_cubes(m.astype(np.float32), 0.5, step_size=step)
        except (ValueError, RuntimeError):
            continue
        # colour each face by the phase of the nearest particle voxel (one mesh: correct depth order)
        _, near = ndimage.distance_transform_edt(~m, return_indices=True)
        phase_pad = np.pad(ph, 1)
        c = np.clip(np.rint(v[f].mean(axis=1)).astype(int), 0, np.array(m.shape) - 1)
        nz, ny, nx = (near[a][c[:, 0], c[:, 1], c[:, 2]] for a in range(3))
        face_phase = phase_pad[nz, ny, nx]
        lut = np.array([colors.get(int(i), (0.5, 0.5, 0.5)) for i in range(256)])
        shade = 0.55 + 0.45 * np.abs(np.cross(v[f][:, 1] - v[f][:, 0], v[f][:, 2] - v[f][:, 0])
                                     @ np.array([0.3, 0.5, 0.8])) / np.maximum(
            np.linalg.norm(np.cross(v[f][:, 1] - v[f][:, 0], v[f][:, 2] - v[f][:, 0]), axis=1), 1e-9)
        fc = np.clip(lut[face_phase][:, :3] * shade[:, None], 0, 1)
        ax.add_collection3d(Poly3DCollection(v[f], facecolors=fc, edgecolor="none"))
        ext = max(m.shape)
        ax.set_xlim(0, ext)
        ax.set_ylim(0, ext)
        ax.set_zlim(0, ext)
        ax.set_title(f"particle {int(row['particle'])}: ESD {row['esd_um']:.0f} µm", fontsize=9)
        ax.set_xlabel("z (voxels)", fontsize=7)
        ax.set_ylabel("y (voxels)", fontsize=7)
        ax.set_zlabel("x (voxels)", fontsize=7)
        ax.tick_params(labelsize=6)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[p.id]) for p in sample.phase_table.material]
    fig.legend(handles, [p.name for p in sample.phase_table.material], loc="lower center",
               ncol=len(handles), frameon=False)
    return _png(fig)


TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>mineral3d report: {{ name }}</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; color: #222; }
h1, h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .5em 0 1.5em; font-size: 14px; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
figure { margin: 1em 0 2em; } figcaption { font-size: 13px; color: #555; max-width: 1000px; }
img { max-width: 100%; }
.note { background: #fff8e0; padding: .5em 1em; border-left: 4px solid #e0b000; }
.untrusted { background: #fde8e8; padding: .5em 1em; border-left: 6px solid #c00000; font-size: 16px; }
.trusted { background: #e8f6e8; padding: .5em 1em; border-left: 6px solid #2a8a2a; }
</style></head><body>
<h1>mineral3d report: {{ name }}</h1>
{% if trust %}<div class="{{ trust.css }}" id="liberation-trust"><b>{{ trust.headline }}</b> {{ trust.text }}</div>{% endif %}
<h2>Sample and run</h2>
<table>{% for k, v in facts %}<tr><th>{{ k }}</th><td>{{ v }}</td></tr>{% endfor %}</table>
{% if timings %}<table><tr><th>step</th><th>time (s)</th><th>peak memory so far (MB)</th><th></th></tr>
{% for k, v in timings %}<tr><td>{{ k }}</td><td>{{ "%.1f"|format(v.seconds) }}</td>
<td>{{ v.peak_rss_mb if v.peak_rss_mb is defined else "" }}</td>
<td>{{ "skipped (up to date)" if v.skipped else "" }}</td></tr>{% endfor %}</table>{% endif %}
<h2>Key results</h2>
<table><tr><th>{{ target }} liberation, share of {{ target }} in particles of grade at least</th>
{% for t in thresholds %}<th>{{ t }}</th>{% endfor %}</tr>
{% for label, row in liberation_rows %}<tr><td>{{ label }}</td>{% for v in row %}<td>{{ v }}</td>{% endfor %}</tr>{% endfor %}
</table>
{% for f in figures %}
<h2>{{ f.title }}</h2>
{% if f.html %}{{ f.html }}{% endif %}
{% for img in f.images %}<figure><img alt="{{ f.title }}" src="{{ img }}"></figure>{% endfor %}
<figure><figcaption>{{ f.caption }}</figcaption></figure>
{% endfor %}
<p style="font-size:12px;color:#777">mineral3d {{ version }}</p>
</body></html>
"""


def fig_correction(corr: dict, summary: dict, target: str) -> str:
    """Uncorrected 2D, kernel-corrected 2D and measured 3D liberation side by side, with 95% intervals."""
    ts = list(corr["liberation_3d_corrected"])
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    x = np.arange(len(ts))
    series = [("2D SEM maps, uncorrected", corr["liberation_2d"], corr.get("ci95_2d"), "tab:red"),
              ("2D SEM maps, corrected to 3D", corr["liberation_3d_corrected"], corr.get("ci95"), "tab:green"),
              ("3D measured", summary.get("liberation_3d", {}), None, "k")]
    for i, (label, vals, ci, colour) in enumerate(series):
        v = np.array([np.nan if vals.get(t) is None else 100 * vals[t] for t in ts])
        err = None
        if ci:
            lo = np.array([100 * ci[t][0] for t in ts])
            hi = np.array([100 * ci[t][1] for t in ts])
            err = np.vstack([np.clip(v - lo, 0, None), np.clip(hi - v, 0, None)])
        ax.bar(x + (i - 1) * 0.27, v, 0.27, yerr=err, capsize=3, label=label, color=colour, alpha=0.85)
    ax.set_xticks(x, [f"L({float(t):.0%})" for t in ts])
    ax.set_ylabel(f"share of {target} in particles ≥ threshold (%)")
    ax.set_ylim(0, 105)
    ax.set_title("2D liberation corrected to 3D with the measured kernel")
    _legend(ax)
    return _png(fig)


def _fmt(v, pct=True) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "-"
    return f"{100 * v:.1f}%" if pct else f"{v:.3f}"


TRUST_HEADLINES = {
    "untrusted": ("untrusted", "Do not trust the 3D liberation of this run."),
    "trusted": ("trusted", "3D liberation checked against the held-out SEM section(s)."),
    "inconclusive": ("note", "3D liberation could not be checked reliably."),
    "unchecked": ("note", "3D liberation unchecked."),
}


def _trust_banner(summary: dict) -> dict | None:
    """The banner at the top of the report: the held-out sections' verdict on the liberation."""
    trust = summary.get("liberation_trust")
    if not trust:
        return None
    css, headline = TRUST_HEADLINES.get(trust.get("status"), ("note", ""))
    text = html.escape(trust.get("reason", "")[:1].upper() + trust.get("reason", "")[1:]) + "."
    rows = trust.get("thresholds") or {}
    if rows:
        parts = []
        for t, r in rows.items():
            if r.get("map") is None or r.get("predicted") is None or None in (r.get("ci95") or [None]):
                continue
            parts.append(f"L({t}) map {100 * r['map']:.1f}%, segmentation {100 * r['predicted']:.1f}% "
                         f"(difference {100 * r['difference']:+.1f}, 95% CI {100 * r['ci95'][0]:+.1f} to "
                         f"{100 * r['ci95'][1]:+.1f} points)")
        if parts:
            text += (f" On {trust.get('sections')} particle sections of {', '.join(trust.get('sections_used', []))}: "
                     + "; ".join(parts) + ".")
    text += _interval_words(summary)
    return {"css": css, "headline": headline, "text": text}


def _l3d_intervals(summary: dict) -> dict[str, list[float]]:
    """``liberation_3d_ci95`` of the thresholds that have one (both ends known)."""
    return {t: v for t, v in (summary.get("liberation_3d_ci95") or {}).items() if v and None not in v}


def _interval_words(summary: dict) -> str:
    """The 3D liberation with its interval from the particles' grade uncertainty, in words ("" if none)."""
    l3 = summary.get("liberation_3d") or {}
    ci = {t: v for t, v in _l3d_intervals(summary).items() if l3.get(t) is not None}
    if not ci:
        return ""
    parts = [f"L({t}) {100 * l3[t]:.1f}% ({100 * v[0]:.1f} to {100 * v[1]:.1f}%)" for t, v in ci.items()]
    widest = max(ci, key=lambda t: ci[t][1] - ci[t][0])
    wide = ci[widest][1] - ci[widest][0] > 0.06
    return (f" 3D liberation of the {summary.get('particles_inside')} particles inside the volume, with the 95% "
            f"interval that their grade uncertainty allows: {'; '.join(parts)}."
            + (" A few particles near a threshold decide it" + _near_words(summary, widest)
               + ": where the interval is wide, read the range, not the value." if wide else ""))


def _near_words(summary: dict, t: str) -> str:
    """Which particles lie near threshold ``t`` (``liberation_3d_near_threshold``), in words ("" if unknown)."""
    near = (summary.get("liberation_3d_near_threshold") or {}).get(t)
    if not near or not near.get("count") or near.get("target_share") is None:
        return ""
    ids = near["particles"][:5]
    more = near["count"] - len(ids)
    named = ", ".join(str(i) for i in ids) + (f" and {more} more" if more > 0 else "")
    return (f" (at {100 * float(t):g}%: particle{'s' if near['count'] > 1 else ''} {named}, holding "
            f"{100 * near['target_share']:.0f}% of the {html.escape(str(summary.get('target_phase', 'target')))}, "
            f"lie{'' if near['count'] > 1 else 's'} within two standard deviations of it)")


def _label_fact(model_json: Path, sample: Sample) -> str | None:
    """The phase model's training labels in words: voxels per phase, and the table's phases it
    never saw (it cannot predict those; their voxels are called the nearest phase it learned)."""
    if not model_json.is_file():
        return None
    counts = json.loads(model_json.read_text()).get("info", {}).get("labels", {}).get("per_phase")
    if not counts:
        return None
    table = sample.phase_table
    missing = [table.name_of(k) for k in table.ids if k != 255 and counts.get(table.name_of(k), 0) == 0]
    text = ", ".join(f"{html.escape(n)} {int(v):,}" for n, v in counts.items())
    if missing:
        text += (f"; not in the train sections: {html.escape(', '.join(missing))} (the model cannot predict "
                 f"{'it' if len(missing) == 1 else 'them'}: such voxels are called the nearest phase it learned)")
    return text


def build_report(out: str | Path, sample: Sample) -> str:
    """The report of run folder ``out`` as an HTML string (figures inline)."""
    import zarr

    import mineral3d

    out = Path(out)
    layout = RunLayout(out)
    summary = json.loads(layout.summary.read_text())
    val = json.loads(layout.validation.read_text()) if layout.validation.exists() else {}
    run = json.loads(layout.run_record.read_text()) if layout.run_record.exists() else {}
    particles = pd.read_csv(layout.particles_csv)
    lib = pd.read_csv(layout.liberation_csv, dtype={"grade_class": str})
    curves = pd.read_csv(layout.liberation_curves)
    gr = pd.read_csv(layout.grade_recovery)
    target = summary["target_phase"]
    phases = zarr.open_array(store=str(layout.phases), mode="r")
    parts = zarr.open_array(store=str(layout.particle_labels), mode="r") if layout.particle_labels.exists() else None
    ct = sample.ct()
    figures = []
    regdir = layout.registration
    reg = json.loads(layout.registration_record.read_text()) if layout.registration_record.exists() else {}
    overlays = sorted(regdir.glob("*_overlay.png")) if regdir.exists() else []
    if reg or overlays:
        rows = "".join(f"<tr><td>{html.escape(n)}</td><td>{r['role']}</td><td>"
                       + (f"{r['score']:.3f}</td><td>{r['runner_up']:.3f}</td><td>{r['tilt_deg']:.2f}</td><td>"
                          f"{'yes' if r['mirrored'] else 'no'}" if r["registered"] else
                          f"not registered</td><td colspan=3>{html.escape(r['reason'])}") + "</td></tr>"
                       for n, r in reg.get("sections", {}).items())
        figures.append({"title": "Registered sections", "images": [_file_png(p) for p in overlays],
                        "html": "<table><tr><th>section</th><th>role</th><th>score (NCC)</th><th>runner-up</th>"
                                "<th>tilt (°)</th><th>mirrored</th></tr>" + rows + "</table>",
                        "caption": "Each map's phase outlines over the CT resampled on the plane found (left) and "
                                   "a checkerboard of map and CT (right). Score: normalised cross-correlation of "
                                   "particle masks; the runner-up is the best distinct other plane."})
    ph, pa = phases, parts  # lazy Zarr arrays: the figures read the slices and boxes they show
    trend = phases.attrs.get("grey_levels", {}).get("trend")
    trend_note = f" Grey trend: {RadialTrend.from_dict(trend).describe()}." if trend else ""
    figures.append({"title": "CT with phases and particles", "images": [fig_orthoslices(ct, ph, pa, sample)],
                    "caption": "Central slices in three orthogonal views: CT grey values (top), phase segmentation "
                               "with particle outlines (bottom)." + trend_note})
    if val.get("all", {}).get("voxel_grid"):
        a = val["all"]
        keys = [k for k in ("baseline", "ceiling", "truth_volume") if k in a]
        head = "".join(f"<th>{h}</th>" for h in ["phase", "IoU", "Dice", "precision", "recall", "map %",
                                                 "predicted %"] + [f"{k.replace('_', ' ')} IoU" for k in keys])
        body = ""
        for n, s in a["voxel_grid"]["per_phase"].items():
            cells = [_fmt(s["iou"], False), _fmt(s["dice"], False), _fmt(s["precision"], False),
                     _fmt(s["recall"], False), _fmt(s["reference_fraction"]), _fmt(s["predicted_fraction"])]
            cells += [_fmt(a[k]["voxel_grid"]["per_phase"][n]["iou"], False) for k in keys]
            body += f"<tr><td>{html.escape(n)}</td>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"
        conf = fig_confusion(val)
        figures.append({"title": "Validation against held-out sections",
                        "html": f"<table><tr>{head}</tr>{body}</table>", "images": [conf] if conf else [],
                        "caption": f"Sections {', '.join(val['sections'])}: map pixels aggregated per CT voxel the "
                                   "plane passes through (majority), compared with the segmentation there. Baseline: "
                                   "per-phase Gaussians of grey values fitted to the training labels. Ceiling: the "
                                   "ground-truth volume scored the same way (resolution limit); truth volume: the "
                                   "segmentation against the ground truth on the same voxels (synthetic samples)."})
    figures.append({"title": "Modal mineralogy", "images": [fig_modal(summary, val, sample)],
                    "caption": "Phase shares of particle material in 3D, and on the validation sections (map vs "
                               "segmentation on the same voxels)."})
    figures.append({"title": "Particle size distribution", "images": [fig_psd(particles)],
                    "caption": "Cumulative volume passing by equivalent sphere diameter; particles cut by the volume "
                               "border are smaller than they are."})
    figures.append({"title": "Liberation spectrum", "images": [fig_spectrum(lib, target)],
                    "caption": f"Distribution of {target} over particle grade classes, in 3D and from 2D sections "
                               "(virtual sections of the segmentation, and the SEM-EDS validation maps)."})
    figures.append({"title": "Cumulative liberation, 3D vs 2D", "images": [fig_cumulative(curves, particles, target)],
                    "caption": "Share of the target in particles whose grade (left) or exposed surface share (right) "
                               "is at least the abscissa. 2D curves above 3D show the stereological bias of "
                               "section-based liberation. Band: bootstrap over particles (3D)."})
    figures.append({"title": "Grade-recovery", "images": [fig_grade_recovery(gr, target)],
                    "caption": "Ideal concentrate built from the richest particles first."})
    by_size = fig_by_size(lib, target)
    if by_size:
        figures.append({"title": "Liberation by size class", "images": [by_size],
                        "caption": "Share of the target in particles of at least 80% grade, per size class."})
    if pa is not None:
        img = fig_particles_3d(ph, pa, particles, sample)
        if img:
            figures.append({"title": "Typical particles in 3D", "images": [img],
                            "caption": "Surface renderings (marching cubes) of particles of median volume that lie "
                                       "inside the volume, coloured by phase."})
    corr_path = layout.corrected
    if corr_path.is_file():
        corr = json.loads(corr_path.read_text())
        status_path = layout.kernel_status
        status = json.loads(status_path.read_text()) if status_path.is_file() else {}
        prov = corr.get("kernel", {})
        figures.append({"title": "2D liberation corrected to 3D", "images": [fig_correction(corr, summary, target)],
                        "caption": f"The SEM maps' 2D liberation ({corr['n_sections']} particle sections) corrected "
                                   f"with the kernel measured on this run's 3D particles ({prov.get('particles')} "
                                   f"particles, {prov.get('sections')} random virtual sections in "
                                   f"{prov.get('n_directions')} orientations; penalty {corr['lambda']:g} by "
                                   f"cross-validation). Bars: 95% bootstrap intervals. {status.get('note', '')}: "
                                   "apply `mineral3d correct OUT/kernel --maps ...` to 2D data of other samples of "
                                   "the same material and size fraction."})
    sug = layout.suggestions / "suggestions.json"
    if sug.is_file() and (layout.suggestions / "suggestions.png").is_file():
        rec = json.loads(sug.read_text())
        rows = "".join(f"<tr><td>{r['rank']}</td><td>{r['position_um']:.0f}</td><td>{100 * r['share']:.0f}%</td>"
                       f"<td>{_fmt_um(r['nearest_section_um'])}</td><td>{_fmt_um(r['beyond_last_um'])}</td></tr>"
                       for r in rec["suggestions"])
        figures.append({"title": "Where to cut the next section", "images": [_file_png(layout.suggestions /
                                                                                       "suggestions.png")],
                        "html": f"<table><tr><th>rank</th><th>{rec['normal']} (µm)</th><th>share of the useful "
                                "uncertainty</th><th>nearest section (µm)</th><th>past the last section (µm)</th>"
                                f"</tr>{rows}</table>",
                        "caption": f"From `mineral3d suggest-section`: planes perpendicular to {rec['normal']} "
                                   f"where the model is least sure about {html.escape(rec['target'])} (entropy of its "
                                   "class probabilities where the target is plausible), away from the sections "
                                   f"already cut. Assumes: {html.escape(rec['assumes'])}."})
    ts = summary.get("liberation_3d", {})
    thresholds = list(ts)
    ci3 = _l3d_intervals(summary)
    rows = [("3D (95% interval from the particles' grade uncertainty)" if ci3 else "3D",
             [_fmt(ts.get(t)) + (f" ({_fmt(ci3[t][0])} to {_fmt(ci3[t][1])})" if t in ci3 else "")
              for t in thresholds])]
    for m, b in summary.get("bias_2d_minus_3d", {}).items():
        g = b.get("grade", {})
        rows.append((f"{METHOD_LABEL.get(m, m)} (2D − 3D bias, 95% CI)",
                     [f"{_fmt(g[t]['L2D'])} ({100 * g[t]['bias']:+.1f}, {100 * g[t]['ci95'][0]:+.1f} to "
                      f"{100 * g[t]['ci95'][1]:+.1f} pts)"
                      if t in g and None not in (g[t]["L2D"], g[t]["bias"], *g[t]["ci95"]) else "-"
                      for t in thresholds]))
    facts = [("sample", sample.config.name), ("CT", f"{' × '.join(map(str, ct.shape))} voxels at "
                                                   f"{sample.voxel_size_um:g} µm"),
             ("sections", ", ".join(f"{c.name} ({c.role})" for c in sample.config.sections)),
             ("target phase", target), ("particles", f"{summary['particles']} ({summary['particles_inside']} "
                                                     "inside the volume)")]
    labels = _label_fact(layout.model / "model.json", sample)
    if labels:
        facts.append(("labelled voxels the phase model was trained on", labels))
    env = Environment(autoescape=False)
    return env.from_string(TEMPLATE).render(trust=_trust_banner(summary),
        name=html.escape(sample.config.name), facts=facts, target=html.escape(target),
        timings=list(run.get("timings", {}).items()), thresholds=[f"{float(t):.0%}" for t in thresholds],
        liberation_rows=rows, figures=figures, version=getattr(mineral3d, "__version__", ""))

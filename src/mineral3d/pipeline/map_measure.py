"""2D characterization of a mineral map: particle-section table, modal mineralogy, liberation.

Definitions are those of :mod:`mineral3d.measure` (sections, grade, exposure, spectrum,
L(t)), so a real map and a virtual section of a 3D result are measured alike. Outputs
(each written atomically; ``map_summary.json`` last, marking completion):

- ``sections.csv`` / ``sections.parquet``: one row per particle section (cut ones flagged);
- ``modal.csv``: pixels and area % of every phase (a direct pixel count over the measured
  particle material; unclassified pixels reported apart);
- ``liberation.csv`` / ``liberation_curves.csv``: as ``mineral3d measure`` writes them,
  method ``2d-map``, over the sections not cut;
- ``map_outlines.png``, ``liberation_spectrum.png``: the figures;
- ``map_summary.json``: counts, target, L(0.8/0.9/0.95), pixel size, settings.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mineral3d.errors import InputError
from mineral3d.figures import map_outlines
from mineral3d.io.atomic import atomic_file, write_json
from mineral3d.io.mineral_maps import MineralMap
from mineral3d.measure import liberation as lib
from mineral3d.measure.sections2d import map_section_table, min_section_px, table_population
from mineral3d.phase_table import RESIN, UNCLASSIFIED


def modal_table(m: MineralMap) -> pd.DataFrame:
    """Pixel count and area share of each phase over the measured, non-resin pixels."""
    counts = np.bincount(m.ids[m.measured].ravel(), minlength=256)
    classified = int(counts.sum() - counts[RESIN] - counts[UNCLASSIFIED])
    in_particles = int(counts.sum() - counts[RESIN])
    rows = []
    for p in m.phase_table.phases:
        if p.id == RESIN:
            continue
        n = int(counts[p.id])
        rows.append({"id": p.id, "phase": p.name, "pixels": n,
                     "area_um2": n * (m.pixel_size_um or 1.0) ** 2,
                     "percent_of_classified": 100 * n / classified if classified and p.id != UNCLASSIFIED else np.nan,
                     "percent_of_particles": 100 * n / in_particles if in_particles else np.nan})
    return pd.DataFrame(rows).sort_values("pixels", ascending=False, kind="stable").reset_index(drop=True)


def measure_map(m: MineralMap, *, target: str | None = None, min_size_px: int | None = None) -> dict:
    """All 2D measurements of a map, in memory."""
    if m.pixel_size_um is None:
        raise InputError(m.info.get("path", m.name), "the pixel size is unknown: give --pixel-um")
    target = target or m.phase_table.target
    if target is None:
        modal = modal_table(m)
        top = ", ".join(modal[modal["id"] != UNCLASSIFIED]["phase"].head(6))
        raise InputError(m.info.get("path", m.name), f"no target phase: give --target (most abundant: {top})")
    table = m.phase_table.with_target(target)
    min_px = min_section_px() if min_size_px is None else int(min_size_px)
    sections, labels = map_section_table(m.ids, pixel_size_um=m.pixel_size_um, target_id=table.target_id,
                                         phase_table=table, measured=m.measured, min_size_px=min_px)
    pop = table_population(sections)
    edges = lib.default_size_edges(pop.size_um)
    libtab = lib.liberation_table(pop, method="2d-map", size_edges=edges)
    curves = lib.liberation_curves(pop, method="2d-map")
    regions = int(np.bincount(labels.ravel()).size - 1)
    non_resin = (m.ids != RESIN) & m.measured
    import cc3d

    _, n_regions = cc3d.connected_components(non_resin, connectivity=8, return_N=True)
    summary = {
        "map": m.name, "source": m.info, "pixel_size_um": m.pixel_size_um, "shape_px": list(m.ids.shape),
        "measured_area_mm2": float(m.measured.sum() * m.pixel_size_um ** 2 / 1e6),
        "target_phase": target,
        "sections": int(len(sections)), "sections_cut": int(sections["cut"].sum()),
        "sections_used": int(len(pop)),
        "specks": {"min_section_px": min_px, "count": int(n_regions) - regions,
                   "pixels": int(non_resin.sum() - (labels > 0).sum())},
        "target_area_percent": float(100 * pop.target.sum() / pop.amount.sum()) if len(pop) else None,
        "liberation_2d": lib.as_dict(lib.cumulative_liberation(pop)),
        "liberation_2d_exposure": lib.as_dict(lib.cumulative_liberation(pop, basis="exposure")),
        "size_edges_um": [float(e) for e in edges],
    }
    cut = np.zeros(int(labels.max()) + 1, bool)
    cut[sections["section"].to_numpy()] = sections["cut"].to_numpy()
    return {"sections": sections, "labels": labels, "cut": cut, "modal": modal_table(m), "liberation": libtab,
            "curves": curves, "summary": summary, "table": table}


def write_map_measurements(out_dir: str | Path, m: MineralMap, result: dict) -> None:
    """Write the outputs of :func:`measure_map` (see the module docstring)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    from mineral3d.report import fig_spectrum_axes

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    done = out / "map_summary.json"
    if done.exists():
        done.unlink()
    for name in ("sections", "modal", "liberation", "curves"):
        fname = "liberation_curves" if name == "curves" else name
        with atomic_file(out / f"{fname}.csv") as tmp:
            result[name].to_csv(tmp, index=False)
    with atomic_file(out / "sections.parquet") as tmp:
        result["sections"].to_parquet(tmp, index=False)
    rgb = map_outlines(m.ids, result["labels"], result["cut"], result["table"], measured=m.measured,
                       thickness=max(1, round(max(m.ids.shape) / 1000)))
    with atomic_file(out / "map_outlines.png") as tmp:
        Image.fromarray(rgb).save(tmp, format="png")
    target = result["summary"]["target_phase"]
    fig, ax = plt.subplots(figsize=(8, 3.8))
    fig_spectrum_axes(ax, result["liberation"], target)
    with atomic_file(out / "liberation_spectrum.png") as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    write_json(done, result["summary"])

"""`mineral3d suggest-section`: rank the planes whose SEM map would teach the model most (files in, files out).

Reads a run output (its sample, registration and model), computes the model's class
probabilities over the volume (block by block, resumable, :func:`segment_phases` with
``probabilities=True``, into ``OUT/suggest/probabilities.zarr``), turns them slab by slab into
the useful uncertainty of :mod:`mineral3d.suggest` (stored as ``OUT/suggest/uncertainty``,
uint8 0-255 = 0-1, which ``mineral3d view`` shows), and writes ``suggestions.csv``,
``plane_scores.csv``, ``suggestions.png`` and ``suggestions.json`` (settings, assumptions).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from mineral3d.errors import InputError
from mineral3d.io.atomic import atomic_dir, atomic_file, read_json, write_json
from mineral3d.io.layout import RunLayout
from mineral3d.suggest import SuggestConfig, plane_scores, suggest_planes, useful_uncertainty

AXES = {"z": 0, "y": 1, "x": 2}

ASSUMES = ("planes perpendicular to one volume axis (a mount polished along that axis); the model's class "
           "probabilities are informative; a section labels one voxel plane and the network generalises a few "
           "voxels either side (scores smoothed over 2*smooth+1 planes); sections closer than min_gap voxels to "
           "one already cut teach little new (min_gap: half the sieve's lower size, else 16 voxels)")


def default_min_gap(sample) -> int:
    """Half the smallest sieve size in voxels (planes this far apart cut mostly different particles), else 16."""
    sieve = getattr(sample.config, "sieve_um", None)
    if sieve:
        return max(3, int(round(min(sieve) / 2 / sample.voxel_size_um)))
    return 16


def section_positions(layout: RunLayout, sample, axis: int) -> dict[str, float]:
    """Position (voxels along ``axis``) of each registered section's map centre."""
    from mineral3d.io.transforms import read_transform

    if not layout.registration_record.is_file():
        return {}
    rec = read_json(layout.registration_record)["sections"]
    out = {}
    for name, r in rec.items():
        p = layout.registration / f"{name}.json"
        if r.get("registered") and p.is_file():
            h, w = sample.section_map(name).shape
            out[name] = float(read_transform(p)[0].apply((h - 1) / 2, (w - 1) / 2)[axis])
    return out


def suggest_sections(out: str | os.PathLike, *, sample=None, model_dir: str | os.PathLike | None = None,
                     axis: str = "z", config: SuggestConfig | None = None, device: str = "auto",
                     progress=None) -> dict:
    """Write ``OUT/suggest/`` for run output ``out``; returns the record written to suggestions.json."""
    import pandas as pd
    import zarr

    from mineral3d.io.volumes import open_volume
    from mineral3d.nn import load_model
    from mineral3d.pipeline.segment_phases import check_model, segment_phases

    layout = RunLayout(Path(out))
    if sample is None:
        from mineral3d.pipeline.run import recorded_sample

        sample = recorded_sample(layout.root, need="suggest-section")
    if axis not in AXES:
        raise InputError("suggest-section", f"normal must be one of z, y, x, got {axis!r}")
    ax = AXES[axis]
    if model_dir is None:
        model_dir = layout.segmenting_model()
    model = load_model(model_dir)
    table = sample.phase_table
    if table.target_id not in model.classes:
        raise InputError(model_dir, f"the model has no class for the target {table.target}")
    config = config or SuggestConfig(min_gap=default_min_gap(sample))
    vol, _ = open_volume(sample.config.ct)
    zoom = check_model(model, voxel_size_um=sample.voxel_size_um, phase_table=table, allow_resample=True,
                       source=str(sample.root), ct=vol)
    folder = layout.suggestions
    folder.mkdir(parents=True, exist_ok=True)
    probs_path = folder / "probabilities.zarr"
    segment_phases(vol, voxel_size_um=sample.voxel_size_um, model=model, out=probs_path, probabilities=True,
                   device=device, zoom=zoom, progress=progress, volume_path=sample.config.ct)
    probs = zarr.open_array(store=str(probs_path / "probabilities"), mode="r")
    k_target = model.classes.index(table.target_id)
    shape = tuple(int(s) for s in vol.shape)
    scores = np.zeros(shape[ax])
    with atomic_dir(folder / "uncertainty", overwrite=True) as tmp:
        unc = zarr.create_array(store=str(tmp), shape=shape, chunks=(64, 64, 64), dtype=np.uint8, zarr_format=3,
                                attributes={"voxel_size_um": float(sample.voxel_size_um),
                                            "doc": "useful uncertainty (mineral3d.suggest), 0-255 = 0-1"})
        for z0 in range(0, shape[0], 64):
            u = useful_uncertainty(probs[:, z0:z0 + 64], k_target, min_target_prob=config.min_target_prob)
            unc[z0:z0 + u.shape[0]] = np.round(u * 255).astype(np.uint8)
            if ax == 0:
                scores[z0:z0 + u.shape[0]] += plane_scores(u, 0)
            else:
                scores += plane_scores(u, ax)
    shutil.rmtree(probs_path, ignore_errors=True)  # K bytes per voxel: kept only while needed
    taken = section_positions(layout, sample, ax)
    result = suggest_planes(scores, taken=list(taken.values()), config=config, voxel_size_um=sample.voxel_size_um)
    profile = pd.DataFrame({"position_voxel": np.arange(shape[ax]),
                            "position_um": np.arange(shape[ax]) * sample.voxel_size_um, "score": scores})
    with atomic_file(folder / "plane_scores.csv") as tmp:
        profile.to_csv(tmp, index=False)
    _figure(folder / "suggestions.png", scores, result, taken, axis, sample.voxel_size_um, table.target)
    with atomic_file(folder / "suggestions.csv") as tmp:
        result.to_csv(tmp, index=False)
    record = {"normal": axis, "target": table.target, "model": str(model_dir), "sections": taken,
              "settings": {"count": config.count, "min_gap_voxels": config.min_gap, "smooth_voxels": config.smooth,
                           "min_target_prob": config.min_target_prob},
              "assumes": ASSUMES, "suggestions": result.to_dict(orient="records")}
    write_json(folder / "suggestions.json", record)
    return record


def _figure(path: Path, scores, table, taken: dict, axis: str, voxel_um: float, target: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.4))
    pos = np.arange(len(scores)) * voxel_um
    ax.plot(pos, scores, color="0.3", lw=1.2, label="useful uncertainty per plane")
    for i, (name, t) in enumerate(taken.items()):
        ax.axvline(t * voxel_um, color="tab:blue", ls="--", lw=1, label="sections cut" if i == 0 else None)
        ax.text(t * voxel_um, ax.get_ylim()[1] * 0.97, f" {name}", color="tab:blue", va="top", fontsize=8)
    for _, r in table.iterrows():
        ax.plot(r["position_um"], r["score"], "o", color="tab:red", ms=7)
        ax.annotate(f"#{int(r['rank'])}", (r["position_um"], r["score"]), textcoords="offset points",
                    xytext=(4, 4), color="tab:red")
    ax.plot([], [], "o", color="tab:red", label="suggested")
    ax.set_xlabel(f"plane position along {axis} (µm)")
    ax.set_ylabel(f"entropy where {target} is plausible")
    ax.set_title("Where the next section would teach the model most")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)

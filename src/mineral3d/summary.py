"""What `mineral3d info` reports about a sample: pure functions over its arrays."""

from __future__ import annotations

import numpy as np

from mineral3d.io.sample import Sample


def grey_statistics(volume: np.ndarray, *, max_samples: int = 4_000_000, seed: int = 0) -> dict:
    """Grey-value statistics of a volume (on a fixed random subset when it is large; min and max of that
    subset for a lazy volume)."""
    from mineral3d.intensity import random_voxels

    flat = random_voxels(volume, max_samples, seed)
    p = np.percentile(flat, [1, 50, 99])
    lo, hi = (volume.min(), volume.max()) if isinstance(volume, np.ndarray) else (flat.min(), flat.max())
    return {"min": float(lo), "max": float(hi), "mean": float(flat.mean()),
            "std": float(flat.std()), "p1": float(p[0]), "median": float(p[1]), "p99": float(p[2])}


def sample_summary(sample: Sample) -> dict:
    """Read and validate every file of ``sample`` and summarise it (a JSON-ready dict)."""
    cfg = sample.config
    ct = sample.ct()
    table = sample.phase_table
    sections = []
    for s in cfg.sections:
        ids = sample.section_map(s.name)
        bse = sample.section_bse(s.name)
        sections.append({
            "name": s.name, "role": s.role, "shape": list(ids.shape), "pixel_size_um": s.pixel_size_um,
            "nominal_scale_vox_per_px": sample.nominal_scale(s.name),
            "extent_um": [round(n * s.pixel_size_um, 3) for n in ids.shape],
            "bse": None if bse is None else {"dtype": str(bse.dtype), "mean": float(bse.mean())},
            "unclassified_fraction": float(np.mean(ids == 255)),
            "area_fractions": table.area_fractions(ids),
        })
    return {
        "name": cfg.name, "root": str(cfg.root), "sieve_um": list(cfg.sieve_um) if cfg.sieve_um else None,
        "ct": {"path": str(cfg.ct), "shape": list(ct.shape), "dtype": str(ct.dtype),
               "voxel_size_um": cfg.voxel_size_um,
               "extent_um": [round(n * cfg.voxel_size_um, 3) for n in ct.shape], "grey": grey_statistics(ct)},
        "phases": [{"id": p.id, "name": p.name, "color": p.hex} for p in table.phases],
        "target": table.target, "sections": sections, "has_truth": sample.has_truth,
    }

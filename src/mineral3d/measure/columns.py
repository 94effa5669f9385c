"""The particle table's columns: names, dtypes, units and meanings, in one place.

:func:`mineral3d.measure.particles.particle_table` writes these columns (``grade`` and
``grade_sd`` are added by a run's grade calibration, :mod:`mineral3d.measure.grades`);
``docs/measure.md`` shows :func:`markdown_table` verbatim (a test keeps them equal).
Print it with ``python -m mineral3d.measure.columns``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    """One column (or a family of columns, ``<phase>`` standing for each particle phase)."""

    name: str
    dtype: str
    """numpy kind: ``i`` integer, ``f`` float, ``b`` bool."""
    unit: str
    description: str

    def matches(self, column: str) -> bool:
        return re.fullmatch(re.escape(self.name).replace(re.escape("<phase>"), r"[^\s]+"), column) is not None


PARTICLE_COLUMNS: tuple[Column, ...] = (
    Column("particle", "i", "", "particle id (label in `segmentation.zarr/particles`)"),
    Column("volume_um3", "f", "µm³", "voxel count x voxel volume"),
    Column("esd_um", "f", "µm", "equivalent sphere diameter (6V/π)^(1/3)"),
    Column("surface_um2", "f", "µm²", "surface area from weighted local 2x2x2 configurations (`measure/surface.py`)"),
    Column("sphericity", "f", "", "π^(1/3) (6V)^(2/3) / S"),
    Column("feret_max_um", "f", "µm", "largest caliper: extent of the voxel centres along a direction + 1 voxel "
                                      "(13 lattice + 64 uniform directions, refined by hill climbing to 0.25°)"),
    Column("feret_min_um", "f", "µm", "smallest caliper, as `feret_max_um`"),
    Column("centroid_z", "f", "voxels", "centroid"),
    Column("centroid_y", "f", "voxels", "centroid"),
    Column("centroid_x", "f", "voxels", "centroid"),
    Column("bbox_z0", "i", "voxels", "bounding box start (half-open)"),
    Column("bbox_z1", "i", "voxels", "bounding box end (half-open)"),
    Column("bbox_y0", "i", "voxels", "bounding box start (half-open)"),
    Column("bbox_y1", "i", "voxels", "bounding box end (half-open)"),
    Column("bbox_x0", "i", "voxels", "bounding box start (half-open)"),
    Column("bbox_x1", "i", "voxels", "bounding box end (half-open)"),
    Column("touches_border", "b", "", "the bounding box touches a face of the volume (left out of liberation)"),
    Column("vol_<phase>", "f", "0-1", "volume fraction of each particle phase; voxels labelled resin (0) or "
                                      "unclassified (255) inside a particle are ignored, so they sum to 1"),
    Column("surf_<phase>", "f", "0-1", "share of the particle's surface formed by each phase (exposure); each "
                                       "surface cube's area is split equally among the particle's corners in it"),
    Column("material_um3", "f", "µm³", "volume of the particle's classified material (the denominator of `vol_`)"),
    Column("grade", "f", "0-1", "a run's table only: the target grade calibrated against the train sections "
                                "(`vol_<target>` when the calibration is not applied); liberation uses it "
                                "([grades.md](grades.md))"),
    Column("grade_sd", "f", "0-1", "a run's table only: standard deviation of the particle's `grade` from the "
                                   "error model fitted on the train sections (NaN where too few sections hold "
                                   "the target; [grades.md](grades.md))"),
)


def column(name: str) -> Column:
    """The :class:`Column` that describes particle-table column ``name`` (KeyError if none)."""
    for c in PARTICLE_COLUMNS:
        if c.matches(name):
            return c
    raise KeyError(f"{name!r} is not a particle-table column")


def markdown_table() -> str:
    """The column table as ``docs/measure.md`` shows it."""
    lines = ["| column | dtype | unit | definition |", "|---|---|---|---|"]
    kinds = {"i": "int", "f": "float", "b": "bool"}
    lines += [f"| `{c.name}` | {kinds[c.dtype]} | {c.unit} | {c.description} |" for c in PARTICLE_COLUMNS]
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())

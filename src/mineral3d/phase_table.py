"""The phase table: the one place that knows phase ids, names and colours.

A phase table is read from ``phases.csv`` (columns ``id,name,color``). Id 0 is
everything that is not particle material (resin, air, pores); id 255 means
unclassified and carries no label. Mineral maps are decoded to uint8 ids here,
whether they come as ids or as RGB colours from the table.
"""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass

import numpy as np

from mineral3d.errors import InputError, read_text

RESIN = 0
UNCLASSIFIED = 255
_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")


@dataclass(frozen=True)
class Phase:
    """One phase: integer id (0-255), unique name, display colour (r, g, b) in 0-255."""

    id: int
    name: str
    color: tuple[int, int, int]

    @property
    def hex(self) -> str:
        return "#{:02x}{:02x}{:02x}".format(*self.color)


def _parse_color(text: str, source: str, line: int) -> tuple[int, int, int]:
    text = text.strip()
    if not _COLOR.match(text):
        raise InputError(source, f"line {line}: colour {text!r} is not of the form #rrggbb")
    return (int(text[1:3], 16), int(text[3:5], 16), int(text[5:7], 16))


@dataclass(frozen=True)
class PhaseTable:
    """An ordered, validated set of phases and the target phase.

    Parameters
    ----------
    phases : tuple of Phase
        Unique ids and names; id 0 (non-particle) must be present.
    target : str or None
        Name of the phase whose liberation is reported; must be in the table.
    source : str
        Where the table came from, used in error messages.
    """

    phases: tuple[Phase, ...]
    target: str | None = None
    source: str = "phase table"

    def __post_init__(self) -> None:
        ids = [p.id for p in self.phases]
        names = [p.name for p in self.phases]
        if not self.phases:
            raise InputError(self.source, "the phase table has no phases")
        for p in self.phases:
            if not 0 <= p.id <= 255:
                raise InputError(self.source, f"phase id {p.id} is outside 0-255")
            if not p.name:
                raise InputError(self.source, f"phase id {p.id} has an empty name")
        for i, name in enumerate(names):
            if name in names[:i]:
                raise InputError(self.source, f"duplicate phase name {name!r}")
        for i, pid in enumerate(ids):
            if pid in ids[:i]:
                raise InputError(self.source, f"duplicate phase id {pid}")
        if RESIN not in ids:
            raise InputError(self.source, "no phase with id 0 (everything that is not particle material)")
        if self.target is not None and self.target not in names:
            raise InputError(self.source, f"target phase {self.target!r} is not in the table "
                             f"(phases: {', '.join(names)})")

    # --- reading and writing -------------------------------------------------------------
    @classmethod
    def from_csv(cls, path: str | os.PathLike, *, target: str | None = None) -> PhaseTable:
        """Read and validate ``phases.csv`` (columns id,name,color)."""
        source = os.fspath(path)
        return cls.from_text(read_text(source, what="phase table"), target=target, source=source)

    @classmethod
    def from_text(cls, text: str, *, target: str | None = None, source: str = "phase table") -> PhaseTable:
        rows = list(csv.reader(io.StringIO(text)))
        rows = [r for r in rows if any(cell.strip() for cell in r)]
        if not rows:
            raise InputError(source, "empty phase table")
        header = [h.strip().lower() for h in rows[0]]
        if header[:3] != ["id", "name", "color"]:
            raise InputError(source, f"header must be 'id,name,color', got {','.join(rows[0])!r}")
        phases = []
        for line, row in enumerate(rows[1:], start=2):
            if len(row) < 3:
                raise InputError(source, f"line {line}: expected 3 fields (id,name,color), got {len(row)}")
            try:
                pid = int(row[0])
            except ValueError:
                raise InputError(source, f"line {line}: id {row[0]!r} is not an integer") from None
            phases.append(Phase(pid, row[1].strip(), _parse_color(row[2], source, line)))
        return cls(tuple(phases), target=target, source=source)

    def to_csv_text(self) -> str:
        lines = ["id,name,color"] + [f"{p.id},{p.name},{p.hex}" for p in self.phases]
        return "\n".join(lines) + "\n"

    # --- lookups -------------------------------------------------------------------------
    @property
    def ids(self) -> np.ndarray:
        return np.array([p.id for p in self.phases], dtype=np.uint8)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.phases]

    @property
    def material(self) -> tuple[Phase, ...]:
        """Particle phases: every phase but id 0 (resin) and 255 (unclassified)."""
        return tuple(p for p in self.phases if p.id not in (RESIN, UNCLASSIFIED))

    @property
    def target_id(self) -> int:
        if self.target is None:
            raise InputError(self.source, "no target phase is set")
        return self.id_of(self.target)

    def id_of(self, name: str) -> int:
        for p in self.phases:
            if p.name == name:
                return p.id
        raise InputError(self.source, f"phase {name!r} is not in the table (phases: {', '.join(self.names)})")

    def phase(self, name: str) -> Phase:
        """The phase called ``name``."""
        self.id_of(name)  # raises a clear error for an unknown name
        return self.phases[self.names.index(name)]

    def name_of(self, pid: int) -> str:
        for p in self.phases:
            if p.id == pid:
                return p.name
        if pid == UNCLASSIFIED:
            return "unclassified"
        raise InputError(self.source, f"phase id {pid} is not in the table")

    def with_target(self, target: str | None) -> PhaseTable:
        return PhaseTable(self.phases, target=target, source=self.source)

    def color_lut(self) -> np.ndarray:
        """(256, 3) uint8 colour of each id (unknown ids: mid grey, 255: white unless set)."""
        lut = np.full((256, 3), 128, np.uint8)
        lut[UNCLASSIFIED] = 255
        for p in self.phases:
            lut[p.id] = p.color
        return lut

    # --- mineral maps --------------------------------------------------------------------
    def decode_map(self, image: np.ndarray, *, source: str = "map") -> np.ndarray:
        """Turn a mineral map (ids or RGB colours) into validated uint8 phase ids.

        Parameters
        ----------
        image : (H, W) integer ndarray of phase ids, or (H, W, 3|4) uint8 RGB(A) colours.
        source : str
            File name for error messages.

        Returns
        -------
        (H, W) uint8 ndarray of ids from this table (255 = unclassified).

        Raises
        ------
        InputError
            For a value or colour that the table lacks (naming it and its pixel count),
            or an array that is not a 2D map.
        """
        image = np.asarray(image)
        if image.ndim == 3 and image.shape[-1] in (3, 4) and image.dtype == np.uint8:
            return self._decode_rgb(image[..., :3], source)
        if image.ndim != 2:
            raise InputError(source, f"a mineral map must be 2D ids or RGB, got an array of shape {image.shape}")
        if not np.issubdtype(image.dtype, np.integer):
            raise InputError(source, f"unsupported map dtype {image.dtype}: use uint8 phase ids or RGB colours")
        values, counts = np.unique(image, return_counts=True)
        known = set(int(i) for i in self.ids) | {UNCLASSIFIED}
        bad = [(int(v), int(c)) for v, c in zip(values, counts) if int(v) not in known]
        if bad:
            v, c = bad[0]
            more = f" (and {len(bad) - 1} more unknown values)" if len(bad) > 1 else ""
            raise InputError(source, f"map value {v} on {c} pixels is not in the phase table{more}")
        return image.astype(np.uint8, copy=False)

    def _decode_rgb(self, rgb: np.ndarray, source: str) -> np.ndarray:
        code = (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8) | rgb[..., 2]
        table_codes = np.array([(r << 16) | (g << 8) | b for r, g, b in (p.color for p in self.phases)], np.uint32)
        order = np.argsort(table_codes, kind="stable")
        sorted_codes = table_codes[order]
        idx = np.searchsorted(sorted_codes, code)
        idx = np.minimum(idx, len(sorted_codes) - 1)
        found = sorted_codes[idx] == code
        if not found.all():
            values, counts = np.unique(code[~found], return_counts=True)
            v, c = int(values[np.argmax(counts)]), int(counts.max())
            more = f" (and {len(values) - 1} more unknown colours)" if len(values) > 1 else ""
            raise InputError(source, f"map colour #{v:06x} on {c} pixels is not in the phase table{more}")
        shared, n_shared = np.unique(table_codes, return_counts=True)
        for v in shared[n_shared > 1]:
            used = int(np.count_nonzero(code == v))
            if used:
                who = [p.name for p in self.phases if ((p.color[0] << 16) | (p.color[1] << 8) | p.color[2]) == v]
                raise InputError(source, f"map colour #{int(v):06x} on {used} pixels is shared by phases "
                                 f"{', '.join(map(repr, who))}: give the map as phase ids or give them "
                                 "distinct colours")
        return self.ids[order][idx]

    def encode_rgb(self, ids: np.ndarray) -> np.ndarray:
        """(H, W) uint8 ids -> (H, W, 3) uint8 colours."""
        return self.color_lut()[ids]

    def area_fractions(self, ids: np.ndarray) -> dict[str, float]:
        """Fraction of the classified pixels (id != 255) of each phase, by name."""
        counts = np.bincount(np.asarray(ids, np.uint8).ravel(), minlength=256)
        classified = counts.sum() - counts[UNCLASSIFIED]
        out = {p.name: (counts[p.id] / classified if classified else 0.0) for p in self.phases
               if p.id != UNCLASSIFIED}
        return {k: float(v) for k, v in out.items()}

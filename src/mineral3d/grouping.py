"""Phase grouping: many source phase names (MLA, QEMSCAN, TIMA: dozens to 110) -> a few groups.

A CNN is trained on a handful of classes, and a report reads better with "feldspar" than
with six feldspar end-members. A grouping is a CSV ``phase,group[,color]``:

```
phase,group,color
Albite,feldspar,#aed0cb
Microcline,feldspar,
Anorthite,feldspar,
Pyrite,sulphide,
```

Rules (one place for them):

- a source phase the grouping does not name keeps its own name (a group of one);
- a name in the grouping that the phase table lacks is an error listing every such name;
- the group named like the table's id-0 phase (e.g. ``resin``) is id 0; the group named like
  the table's id-255 phase, or ``unclassified`` (any case), is id 255 (no label);
- other groups get ids 1, 2, ... in the order of their first member in the table;
- a group's colour is the ``color`` column where given, else the colour of its member with
  the most pixels in the map(s) being grouped (the first member when no counts are given).
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass

import numpy as np

from mineral3d.errors import InputError, read_text
from mineral3d.phase_table import RESIN, UNCLASSIFIED, Phase, PhaseTable, _parse_color


@dataclass(frozen=True)
class PhaseGrouping:
    """Source phase name -> group name, with optional group colours (RGB)."""

    groups: dict[str, str]
    colors: dict[str, tuple[int, int, int]]
    source: str = "phase grouping"

    @classmethod
    def from_csv(cls, path: str | os.PathLike) -> PhaseGrouping:
        source = os.fspath(path)
        return cls.from_text(read_text(source, what="phase grouping"), source=source)

    @classmethod
    def from_text(cls, text: str, *, source: str = "phase grouping") -> PhaseGrouping:
        rows = [r for r in csv.reader(io.StringIO(text)) if any(c.strip() for c in r)]
        if not rows:
            raise InputError(source, "empty phase grouping")
        header = [h.strip().lower() for h in rows[0]]
        if header[:2] != ["phase", "group"]:
            raise InputError(source, f"header must be 'phase,group[,color]', got {','.join(rows[0])!r}")
        groups: dict[str, str] = {}
        colors: dict[str, tuple[int, int, int]] = {}
        for line, row in enumerate(rows[1:], start=2):
            if len(row) < 2 or not row[0].strip() or not row[1].strip():
                raise InputError(source, f"line {line}: expected a phase name and a group name")
            name, group = row[0].strip(), row[1].strip()
            if name in groups and groups[name] != group:
                raise InputError(source, f"line {line}: phase {name!r} is put in two groups "
                                 f"({groups[name]!r} and {group!r})")
            groups[name] = group
            if len(row) > 2 and row[2].strip():
                c = _parse_color(row[2], source, line)
                if group in colors and colors[group] != c:
                    raise InputError(source, f"line {line}: group {group!r} is given two colours")
                colors[group] = c
        return cls(groups, colors, source)

    def apply(self, table: PhaseTable, counts: np.ndarray | None = None) -> tuple[PhaseTable, np.ndarray]:
        """Group a phase table.

        Parameters
        ----------
        table : PhaseTable
            The source table.
        counts : (256,) ndarray, optional
            Pixel count of each source id (chooses group colours).

        Returns
        -------
        grouped : PhaseTable
            The groups; the target becomes its group.
        lut : (256,) uint8 ndarray
            Source id -> group id (apply as ``lut[ids]``); ids not in the table map to 255.
        """
        unknown = sorted(set(self.groups) - set(table.names))
        if unknown:
            raise InputError(self.source, f"{len(unknown)} phase name(s) not in the phase table "
                             f"{table.source}: {', '.join(map(repr, unknown))}")
        by_id = {p.id: p for p in table.phases}
        resin_name = by_id[RESIN].name
        unclassified_names = {"unclassified"} | ({by_id[UNCLASSIFIED].name.lower()} if UNCLASSIFIED in by_id else set())
        counts = np.zeros(256) if counts is None else np.asarray(counts, float)
        unclassified_group = by_id[UNCLASSIFIED].name if UNCLASSIFIED in by_id else None
        members: dict[str, list[Phase]] = {}
        for p in sorted(table.phases, key=lambda p: p.id):
            group = self.groups.get(p.name, p.name)
            if group.lower() in unclassified_names:  # every unclassified-like group is the one id 255
                unclassified_group = unclassified_group or group
                group = unclassified_group
            members.setdefault(group, []).append(p)
        if self.groups.get(resin_name, resin_name) != resin_name:
            raise InputError(self.source, f"the non-particle phase {resin_name!r} (id 0) cannot join group "
                             f"{self.groups[resin_name]!r}")
        lut = np.full(256, UNCLASSIFIED, np.uint8)
        phases: list[Phase] = []
        next_id = 1
        for group, ps in members.items():
            if group == resin_name:
                gid = RESIN
            elif group.lower() in unclassified_names:
                gid = UNCLASSIFIED
            else:
                gid, next_id = next_id, next_id + 1
                if gid >= UNCLASSIFIED:
                    raise InputError(self.source, "more than 254 groups: group the phases further")
            color = self.colors.get(group) or max(ps, key=lambda p: (counts[p.id], -p.id)).color
            phases.append(Phase(gid, group, color))
            for p in ps:
                lut[p.id] = gid
        phases.sort(key=lambda p: p.id)
        target = None if table.target is None else self.groups.get(table.target, table.target)
        if target is not None and lut[table.target_id] in (RESIN, UNCLASSIFIED):
            raise InputError(self.source, f"the target phase {table.target!r} is grouped into {target!r}")
        return PhaseTable(tuple(phases), target=target, source=f"{table.source} grouped by {self.source}"), lut

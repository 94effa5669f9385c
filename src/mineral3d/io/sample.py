"""A correlative sample on disk (``sample.toml``, CT, phase table, sections, truth).

See ``docs/sample-format.md`` (a copy of the data contract). ``open_sample`` parses and
validates ``sample.toml`` at once; arrays are read on demand and validated as read.
``Sample.validate()`` reads every file, so every bad input surfaces.
"""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from mineral3d.errors import InputError
from mineral3d.io.atomic import atomic_dir
from mineral3d.io.images import read_image, read_volume, write_tiff
from mineral3d.io.transforms import read_transform, write_transform
from mineral3d.phase_table import PhaseTable
from mineral3d.plane import PlaneTransform

LAZY_BYTES = 1 << 30

WHOLE_CT_VOXELS = 1 << 26
"""CTs up to this many voxels (e.g. 256 x 512 x 512) are registered and trained on in memory;
larger ones are read where needed (:meth:`Sample.ct_for_processing`)."""
"""CT files larger than this (1 GiB) are memory-mapped rather than read (when uncompressed)."""

ROLES = ("train", "validation")


@dataclass(frozen=True)
class SectionConfig:
    """One polished section: its mineral map, optional BSE image, pixel size (µm) and role."""

    name: str
    map: Path
    pixel_size_um: float
    role: str = "train"
    bse: Path | None = None


@dataclass(frozen=True)
class SampleConfig:
    """The validated contents of ``sample.toml`` (paths resolved against the sample folder)."""

    root: Path
    name: str
    ct: Path
    voxel_size_um: float
    phases: Path
    target: str
    sections: tuple[SectionConfig, ...] = ()
    sieve_um: tuple[float, float] | None = None
    grouping: Path | None = None

    def section(self, name: str) -> SectionConfig:
        for s in self.sections:
            if s.name == name:
                return s
        raise InputError(self.root / "sample.toml", f"no section named {name!r} "
                         f"(sections: {', '.join(s.name for s in self.sections) or 'none'})")


def _positive(value, source, key) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(source, f"{key} must be a number, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise InputError(source, f"{key} must be positive, got {value}")
    return float(value)


def _table(data: dict, key: str, source) -> dict:
    t = data.get(key)
    if not isinstance(t, dict):
        raise InputError(source, f"missing [{key}] table")
    return t


def _string(t: dict, key: str, source, where: str) -> str:
    v = t.get(key)
    if not isinstance(v, str) or not v:
        raise InputError(source, f"{where}{key} must be a non-empty string, got {v!r}")
    return v


def parse_sample_toml(path: str | os.PathLike) -> SampleConfig:
    """Parse and validate ``sample.toml``; referenced files must exist."""
    path = Path(path)
    if path.is_dir():
        path = path / "sample.toml"
    if not path.exists():
        raise InputError(path, "file not found (a sample folder needs a sample.toml)")
    root = path.parent
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise InputError(path, f"malformed TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read ({exc})") from None

    name = data.get("name", root.name)
    if not isinstance(name, str):
        raise InputError(path, f"name must be a string, got {name!r}")
    sieve = data.get("sieve_um")
    if sieve is not None:
        if (not isinstance(sieve, list) or len(sieve) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in sieve)
                or not 0 <= sieve[0] < sieve[1]):
            raise InputError(path, f"sieve_um must be [lower, upper] in µm with lower < upper, got {sieve!r}")
        sieve = (float(sieve[0]), float(sieve[1]))

    ct = _table(data, "ct", path)
    ct_path = root / _string(ct, "path", path, "[ct] ")
    voxel = _positive(ct.get("voxel_size_um"), path, "[ct] voxel_size_um")
    ph = _table(data, "phases", path)
    phases_path = root / _string(ph, "path", path, "[phases] ")
    target = _string(ph, "target", path, "[phases] ")
    grouping = ph.get("grouping")
    if grouping is not None and (not isinstance(grouping, str) or not grouping):
        raise InputError(path, f"[phases] grouping must be a path string, got {grouping!r}")
    grouping = None if grouping is None else root / grouping

    raw_sections = data.get("sections", [])
    if not isinstance(raw_sections, list) or not all(isinstance(s, dict) for s in raw_sections):
        raise InputError(path, "sections must be an array of tables ([[sections]])")
    sections = []
    for i, s in enumerate(raw_sections):
        where = f"[[sections]] #{i + 1} "
        sname = _string(s, "name", path, where)
        if any(o.name == sname for o in sections):
            raise InputError(path, f"duplicate section name {sname!r}")
        role = s.get("role", "train")
        if role not in ROLES:
            raise InputError(path, f"section {sname!r}: role must be 'train' or 'validation', got {role!r}")
        bse = s.get("bse")
        if bse is not None and (not isinstance(bse, str) or not bse):
            raise InputError(path, f"section {sname!r}: bse must be a path string, got {bse!r}")
        sections.append(SectionConfig(
            name=sname, map=root / _string(s, "map", path, f"section {sname!r}: "),
            pixel_size_um=_positive(s.get("pixel_size_um"), path, f"section {sname!r} pixel_size_um"),
            role=role, bse=None if bse is None else root / bse))

    cfg = SampleConfig(root=root, name=name, ct=ct_path, voxel_size_um=voxel, phases=phases_path,
                       target=target, sections=tuple(sections), sieve_um=sieve, grouping=grouping)
    files = [cfg.ct, cfg.phases] + ([grouping] if grouping else [])
    for f in files + [s.map for s in sections] + [s.bse for s in sections if s.bse]:
        if not f.exists():
            raise InputError(f, f"file not found (named in {path})")
    return cfg


@dataclass(eq=False)
class Sample:
    """A correlative sample: config plus lazily read, validated arrays."""

    config: SampleConfig
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def root(self) -> Path:
        return self.config.root

    @property
    def voxel_size_um(self) -> float:
        return self.config.voxel_size_um

    @cached_property
    def _tables(self) -> tuple[PhaseTable, PhaseTable, np.ndarray | None]:
        """(source table, table in use, source id -> id lut or None): ``[phases] grouping`` applied."""
        if self.config.grouping is None:
            t = PhaseTable.from_csv(self.config.phases, target=self.config.target)
            return t, t, None
        from mineral3d.grouping import PhaseGrouping

        raw = PhaseTable.from_csv(self.config.phases)
        g = PhaseGrouping.from_csv(self.config.grouping)
        grouped, lut = g.apply(raw)
        target = self.config.target
        if target in raw.names and target not in grouped.names:
            target = g.groups.get(target, target)
        return raw, grouped.with_target(target), lut

    @property
    def phase_table(self) -> PhaseTable:
        """The phase table in use (grouped when ``[phases] grouping`` names a grouping CSV)."""
        return self._tables[1]

    def ct(self):
        """The CT volume (Z, Y, X), uint8/uint16/float32 (TIFF, slice folder, or a Zarr from ``convert``).

        A Zarr CT stays on disk (a lazy ``zarr.Array``, read where sliced); an uncompressed
        TIFF over ``LAZY_BYTES`` is memory-mapped; anything else is read into memory. Use
        :meth:`ct_array` where the whole volume is needed in memory.
        """
        if "ct" not in self._cache:
            path = self.config.ct
            if (path / "zarr.json").exists():
                from mineral3d.io.volumes import open_volume

                self._cache["ct"] = open_volume(path, name="CT volume")[0]
            elif path.is_file() and path.stat().st_size > LAZY_BYTES:
                from mineral3d.io.volumes import open_volume

                self._cache["ct"] = open_volume(path, name="CT volume")[0]
            else:
                self._cache["ct"] = read_volume(path)
        return self._cache["ct"]

    def ct_for_processing(self):
        """The CT in memory when it has at most ``WHOLE_CT_VOXELS`` voxels, else as :meth:`ct` gives it.

        Registration and training read a CT of that size whole (about 16 bytes per voxel
        at their peak); a larger one is read where needed (registration: a coarse level and
        crops around each plane; training: patches).
        """
        ct = self.ct()
        return self.ct_array() if int(np.prod(ct.shape)) <= WHOLE_CT_VOXELS else ct

    def ct_array(self) -> np.ndarray:
        """The whole CT volume in memory (registration and training need it; a lazy CT is read once)."""
        ct = self.ct()
        if not isinstance(ct, np.ndarray):
            ct = np.asarray(ct[...])
            self._cache["ct"] = ct
        return ct

    def section_map(self, name: str) -> np.ndarray:
        """A section's mineral map as validated uint8 phase ids (255 = unclassified)."""
        key = ("map", name)
        if key not in self._cache:
            sec = self.config.section(name)
            raw = read_image(sec.map, name="mineral map")
            source_table, _, lut = self._tables
            ids = source_table.decode_map(raw, source=os.fspath(sec.map))
            self._cache[key] = ids if lut is None else lut[ids]
        return self._cache[key]

    def section_bse(self, name: str) -> np.ndarray | None:
        """A section's BSE image on the map grid, or None."""
        sec = self.config.section(name)
        if sec.bse is None:
            return None
        bse = read_image(sec.bse, name="BSE image")
        if bse.ndim != 2:
            raise InputError(sec.bse, f"the BSE image must be single-channel 2D, got shape {bse.shape}")
        shape = self.section_map(name).shape
        if bse.shape != shape:
            raise InputError(sec.bse, f"BSE image shape {bse.shape} differs from its map's shape {shape}")
        return bse

    def nominal_scale(self, name: str) -> float:
        """CT voxels per map pixel implied by the declared pixel and voxel sizes."""
        return self.config.section(name).pixel_size_um / self.voxel_size_um

    # --- ground truth (evaluation only) ----------------------------------------------------
    @property
    def has_truth(self) -> bool:
        return (self.root / "truth").is_dir()

    def truth_phases(self) -> np.ndarray:
        """True phase ids (grouped like the phase table in use)."""
        ph = self._truth_volume("phases.tif")
        lut = self._tables[2]
        return ph if lut is None else lut[ph]

    def truth_particles(self) -> np.ndarray:
        return self._truth_volume("particles.tif")

    def truth_transform(self, name: str) -> PlaneTransform:
        return read_transform(self.root / "truth" / "sections" / f"{name}.json")[0]

    def _truth_volume(self, fname: str) -> np.ndarray:
        import tifffile

        path = self.root / "truth" / fname
        if not path.exists():
            raise InputError(path, "file not found (this sample has no ground truth)")
        return tifffile.imread(path)

    def validate(self) -> None:
        """Open every file of the sample (a large CT lazily); raise InputError on the first bad one."""
        ct = self.ct()
        _ = self.phase_table
        for s in self.config.sections:
            self.section_map(s.name)
            self.section_bse(s.name)
        del ct


def open_sample(path: str | os.PathLike) -> Sample:
    """Open a sample folder (or its ``sample.toml``); validates ``sample.toml`` and the phase table."""
    sample = Sample(parse_sample_toml(path))
    _ = sample.phase_table  # validates table and target now
    return sample


def _toml_value(v) -> str:
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, float):
        return repr(float(v))
    return str(v)


def sample_toml_text(*, name: str, voxel_size_um: float, target: str, sections: list[dict],
                     sieve_um=None, ct_path: str = "ct.tif", phases_path: str = "phases.csv") -> str:
    lines = [f"name = {_toml_value(name)}"]
    if sieve_um is not None:
        lines.append(f"sieve_um = {_toml_value([float(v) for v in sieve_um])}")
    lines += ["", "[ct]", f"path = {_toml_value(ct_path)}", f"voxel_size_um = {_toml_value(float(voxel_size_um))}",
              "", "[phases]", f"path = {_toml_value(phases_path)}", f"target = {_toml_value(target)}"]
    for s in sections:
        lines += ["", "[[sections]]"] + [f"{k} = {_toml_value(v)}" for k, v in s.items() if v is not None]
    return "\n".join(lines) + "\n"


@dataclass
class SectionData:
    """A section to write: its map (uint8 ids, or RGB), optional BSE, pixel size (µm), role, truth."""

    name: str
    map: np.ndarray
    pixel_size_um: float
    role: str = "train"
    bse: np.ndarray | None = None
    truth: PlaneTransform | None = None


def write_sample(path: str | os.PathLike, *, name: str, ct: np.ndarray, voxel_size_um: float,
                 phase_table: PhaseTable, sections: list[SectionData], sieve_um=None,
                 truth_phases: np.ndarray | None = None, truth_particles: np.ndarray | None = None,
                 overwrite: bool = False) -> Path:
    """Write a sample in the correlative format; the folder appears only when complete."""
    if phase_table.target is None:
        raise InputError(phase_table.source, "a target phase must be set to write a sample")
    path = Path(path)
    if path.exists() and not overwrite:
        raise InputError(path, "already exists (use --force to replace it)")
    with atomic_dir(path, overwrite=overwrite) as tmp:
        write_tiff(tmp / "ct.tif", ct)
        (tmp / "phases.csv").write_text(phase_table.to_csv_text(), encoding="utf-8")
        entries = []
        for s in sections:
            rgb = s.map.ndim == 3
            write_tiff(tmp / "sections" / f"{s.name}.tif", s.map, rgb=rgb, compress=True)
            entry = {"name": s.name, "map": f"sections/{s.name}.tif",
                     "bse": f"sections/{s.name}_bse.tif" if s.bse is not None else None,
                     "pixel_size_um": float(s.pixel_size_um), "role": s.role}
            if s.bse is not None:
                write_tiff(tmp / "sections" / f"{s.name}_bse.tif", s.bse)
            if s.truth is not None:
                write_transform(tmp / "truth" / "sections" / f"{s.name}.json", s.name, s.truth)
            entries.append(entry)
        if truth_phases is not None:
            write_tiff(tmp / "truth" / "phases.tif", truth_phases.astype(np.uint8), compress=True)
        if truth_particles is not None:
            write_tiff(tmp / "truth" / "particles.tif", truth_particles.astype(np.uint32), compress=True)
        (tmp / "sample.toml").write_text(sample_toml_text(
            name=name, voxel_size_um=voxel_size_um, target=phase_table.target, sections=entries,
            sieve_um=sieve_um), encoding="utf-8")
    return path

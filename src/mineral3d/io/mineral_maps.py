"""Automated-mineralogy maps in: TIMA MinDif exports, and any RGB/indexed map with a legend.

Everything lands in one shape, :class:`MineralMap`: uint8 phase ids of a phase table
(0 = resin/background, 255 = unclassified or not measured), a mask of the measured area,
an optional BSE image and the pixel size. A map folder (``mineral3d import-map`` output) is

```
<map>/map.toml        name, source, pixel size, file names (below)
<map>/map.tif         uint8 phase ids
<map>/phases.csv      the phase table (spec format)
<map>/measured.tif    uint8 0/255, 255 = inside the measured area
<map>/bse.tif         optional BSE image, same grid
```

``map.tif`` and ``phases.csv`` are exactly a section map and phase table of the sample
format, so an imported map can be copied into a correlative sample as a section.
"""

from __future__ import annotations

import csv
import io
import os
import tomllib
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mineral3d.errors import InputError, read_text
from mineral3d.grouping import PhaseGrouping
from mineral3d.io.atomic import atomic_dir
from mineral3d.io.images import _imread, write_tiff
from mineral3d.phase_table import RESIN, UNCLASSIFIED, Phase, PhaseTable, _parse_color

TIMA_NS = {"t": "http://www.tescan.cz/tima/1_4"}
TIMA_UNCLASSIFIED = 0
"""TIMA's id of "[Unclassified]" (resin pixels carry it too; the mask tells them apart)."""


@dataclass(frozen=True)
class MineralMap:
    """A 2D mineral map on its pixel grid.

    Attributes
    ----------
    ids : (H, W) uint8 ndarray
        Phase ids of ``phase_table``; 0 resin/background, 255 unclassified or not measured.
    measured : (H, W) bool ndarray
        True inside the measured area (fields that were scanned).
    phase_table : PhaseTable
    pixel_size_um : float or None
        Pixel edge length, µm (None when the source does not say).
    bse : (H, W) ndarray or None
    name : str
    info : dict
        Provenance (source format, path, fields, grouping).
    """

    ids: np.ndarray
    measured: np.ndarray
    phase_table: PhaseTable
    pixel_size_um: float | None
    bse: np.ndarray | None = None
    name: str = "map"
    info: dict = field(default_factory=dict)

    def grouped(self, grouping: PhaseGrouping) -> MineralMap:
        """This map with its phases grouped (see :mod:`mineral3d.grouping`)."""
        counts = np.bincount(self.ids.ravel(), minlength=256)
        table, lut = grouping.apply(self.phase_table, counts)
        info = dict(self.info, grouping=grouping.source)
        return MineralMap(lut[self.ids], self.measured, table, self.pixel_size_um, self.bse, self.name, info)


# --- reading images of any common format ----------------------------------------------------

def read_raster(path: str | os.PathLike) -> np.ndarray:
    """A 2D image (grey, indexed or RGB) from TIFF, PNG or BMP; one-line errors name the file."""
    path = Path(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        return _imread(path)
    if not path.exists():
        raise InputError(path, "file not found")
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode == "P":
                return np.asarray(im)  # palette index = phase index
            if im.mode in ("RGBA", "LA", "CMYK", "YCbCr"):
                im = im.convert("RGB")
            return np.asarray(im)
    except OSError as exc:
        raise InputError(path, f"cannot read image ({exc})") from None


def _xml(path: Path) -> ET.Element:
    try:
        return ET.parse(path).getroot()
    except FileNotFoundError:
        raise InputError(path, "file not found (not a TIMA MinDif export folder?)") from None
    except ET.ParseError as exc:
        raise InputError(path, f"not valid XML ({exc})") from None


def _number(el: ET.Element, tag: str, path: Path) -> float:
    node = el.find(f"t:{tag}", TIMA_NS)
    try:
        return float(node.text)
    except (AttributeError, TypeError, ValueError):
        raise InputError(path, f"no numeric <{tag}>") from None


# --- TIMA MinDif --------------------------------------------------------------------------

def tima_phase_table(path: str | os.PathLike) -> tuple[PhaseTable, dict[int, int]]:
    """The phase table of a TIMA ``phases.xml``, and TIMA id -> table id.

    TIMA ids 1..254 keep their value; TIMA's "[Unclassified]" (id 0) becomes id 255 with
    its name and colour; id 0 is ``resin`` (pixels outside TIMA's particle mask).
    """
    path = Path(path)
    root = _xml(path)
    phases = [Phase(RESIN, "resin", (0, 0, 0))]
    to_table: dict[int, int] = {}
    for line, el in enumerate(root.iter(f"{{{TIMA_NS['t']}}}PrimaryPhase"), start=1):
        try:
            tid, name = int(el.get("id")), el.get("name").strip()
        except (TypeError, ValueError, AttributeError):
            raise InputError(path, f"PrimaryPhase #{line} lacks an integer id or a name") from None
        color = _parse_color(el.get("color") or "#808080", os.fspath(path), line)
        if tid == TIMA_UNCLASSIFIED:
            to_table[tid] = UNCLASSIFIED
        elif 0 < tid < UNCLASSIFIED:
            to_table[tid] = tid
        else:
            raise InputError(path, f"TIMA phase id {tid} ({name!r}) is outside 1-254")
        if name.lower() == "resin":
            name = "resin (TIMA)"
        phases.append(Phase(to_table[tid], name, color))
    if len(phases) == 1:
        raise InputError(path, "no <PrimaryPhase> entries")
    return PhaseTable(tuple(sorted(phases, key=lambda p: p.id)), source=os.fspath(path)), to_table


def read_tima_mindif(folder: str | os.PathLike) -> MineralMap:
    """Stitch a TESCAN TIMA MinDif export (``fields.xml``, ``measurement.xml``, ``phases.xml``).

    Each field's ``phases.tif`` (TIMA ids), ``mask.png`` (255 = sample) and ``bse.png`` are
    placed by its stage position (µm) from ``fields.xml``; TIMA's stage +x points left and
    +y down in the image, so column = (x_max - x) / pixel and row = (y - y_min) / pixel,
    rounded to whole pixels. Pixel size = ViewField / ImageWidth (``measurement.xml``).
    Pixels outside every field are not measured (id 255, ``measured`` False).

    Raises
    ------
    InputError
        For a missing or malformed file, naming it.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "not a folder (expected a TIMA MinDif export)")
    meas_path, fields_path = folder / "measurement.xml", folder / "fields.xml"
    meas = _xml(meas_path)
    view, width, height = (_number(meas, t, meas_path) for t in ("ViewField", "ImageWidth", "ImageHeight"))
    w, h = int(width), int(height)
    pixel = view / width
    table, to_table = tima_phase_table(folder / "phases.xml")
    froot = _xml(fields_path)
    field_dir = folder / (froot.findtext("t:FieldDir", default="fields", namespaces=TIMA_NS) or "fields")
    fields = froot.findall(".//t:Field", TIMA_NS)
    if not fields:
        raise InputError(fields_path, "no <Field> entries")
    try:
        names = [f.get("name") for f in fields]
        xy = np.array([[float(f.get("x")), float(f.get("y"))] for f in fields])
    except (TypeError, ValueError):
        raise InputError(fields_path, "a <Field> lacks a name or numeric x/y") from None
    cols = np.rint((xy[:, 0].max() - xy[:, 0]) / pixel).astype(int)
    rows = np.rint((xy[:, 1] - xy[:, 1].min()) / pixel).astype(int)
    shape = (int(rows.max()) + h, int(cols.max()) + w)
    lut = np.full(65536, -1, np.int32)  # TIMA id -> table id, -1 = not in phases.xml
    for tid, pid in to_table.items():
        lut[tid] = pid
    ids = np.zeros(shape, np.uint8)
    measured = np.zeros(shape, bool)
    bse = np.zeros(shape, np.uint16)
    for name, r, c in zip(names, rows, cols):
        d = field_dir / name
        ph = _imread(d / "phases.tif")
        mask = read_raster(d / "mask.png")
        grey = read_raster(d / "bse.png")
        for arr, p in ((ph, d / "phases.tif"), (mask, d / "mask.png"), (grey, d / "bse.png")):
            if arr.shape != (h, w):
                raise InputError(p, f"field image shape {arr.shape} differs from ImageHeight x ImageWidth "
                                    f"{(h, w)} in {meas_path.name}")
        ph = ph.astype(np.int64)
        bad = (ph < 0) | (ph >= lut.size)
        mapped = np.where(bad, -1, lut[np.clip(ph, 0, lut.size - 1)])
        if (mapped < 0).any():
            v = int(ph[mapped < 0][0])
            raise InputError(d / "phases.tif", f"TIMA phase id {v} on {int((mapped < 0).sum())} pixels "
                                               f"is not in phases.xml")
        sample = mask > 0
        out = np.where(sample, mapped, RESIN).astype(np.uint8)
        ids[r:r + h, c:c + w] = out
        measured[r:r + h, c:c + w] = True
        bse[r:r + h, c:c + w] = grey
    ids[~measured] = UNCLASSIFIED
    info = {"format": "TIMA MinDif", "path": os.fspath(folder), "fields": len(names),
            "field_px": [h, w], "origin": "column = (x_max - x)/pixel, row = (y - y_min)/pixel"}
    name = folder.name
    return MineralMap(ids, measured, table, float(pixel), bse, name, info)


# --- generic RGB / indexed maps -----------------------------------------------------------

BACKGROUND_NAMES = ("resin", "background", "epoxy", "mount", "mounting medium", "air")
UNCLASSIFIED_NAMES = ("unclassified", "[unclassified]", "unknown", "no analysis", "not analysed", "unanalysed")


def _legend_rows(path: Path) -> list[dict]:
    text = read_text(path, what="legend")
    reader = csv.DictReader(io.StringIO(text))
    fields = [f.strip().lower() for f in (reader.fieldnames or [])]
    if "name" not in fields or not ({"id", "color"} & set(fields)):
        raise InputError(path, "a legend needs a 'name' column and an 'id' and/or 'color' column")
    rows = []
    for line, row in enumerate(reader, start=2):
        row = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}
        if not row.get("name"):
            raise InputError(path, f"line {line}: empty name")
        rows.append(dict(row, line=line))
    if not rows:
        raise InputError(path, "the legend lists no phases")
    return rows


def _tiff_pixel_um(path: Path) -> float | None:
    """Pixel size from TIFF resolution tags (centimetre or inch units), else None."""
    if path.suffix.lower() not in (".tif", ".tiff"):
        return None
    import tifffile

    with tifffile.TiffFile(path) as tif:
        tags = tif.pages[0].tags
        res, unit = tags.get("XResolution"), tags.get("ResolutionUnit")
        if res is None or unit is None or int(unit.value) not in (2, 3):
            return None
        num, den = res.value
        if not num or not den:
            return None
        per_unit = num / den
        return (25400.0 if int(unit.value) == 2 else 10000.0) / per_unit


def _measured_mask(measured: str | os.PathLike | None, shape: tuple[int, int]) -> np.ndarray:
    """The measured area from an image (non-zero = measured), or every pixel."""
    if measured is None:
        return np.ones(shape, bool)
    m = read_raster(measured)
    if m.shape[:2] != tuple(shape):
        raise InputError(measured, f"shape {m.shape[:2]} differs from the map's {tuple(shape)}")
    return (m if m.ndim == 2 else m.max(axis=-1)) > 0


def read_legend_map(image: str | os.PathLike, legend: str | os.PathLike, *, pixel_size_um: float | None = None,
                    background: str | None = None, unclassified: str | None = None,
                    measured: str | os.PathLike | None = None) -> MineralMap:
    """Import an RGB or indexed mineral map (MLA, QEMSCAN, Mineralogic exports) with a legend CSV.

    Parameters
    ----------
    image : path
        TIFF/PNG/BMP: RGB colours, or integer phase indices (a palette PNG gives indices).
    legend : path
        CSV with a ``name`` column and ``id`` (map value) and/or ``color`` (#rrggbb) columns.
    pixel_size_um : float, optional
        Pixel size, µm; default: from the TIFF resolution tags, else unknown (None).
    background, unclassified : str, optional
        Legend names of the resin/background entry (becomes id 0) and of the unclassified
        entry (id 255). Defaults: the entry whose name is one of ``BACKGROUND_NAMES`` /
        ``UNCLASSIFIED_NAMES`` (any case); a legend without a background entry is an error.
    measured : path, optional
        Image of the measured area (non-zero = measured); default: the whole image.
    """
    image, legend = Path(image), Path(legend)
    rows = _legend_rows(legend)
    names = [r["name"] for r in rows]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError(legend, f"duplicate phase name(s): {', '.join(dup)}")

    def pick(given, defaults, what):
        if given is not None:
            if given not in names:
                raise InputError(legend, f"{what} entry {given!r} is not in the legend")
            return given
        return next((n for n in names if n.lower() in defaults), None)

    bg = pick(background, BACKGROUND_NAMES, "background")
    if bg is None:
        raise InputError(legend, f"no background entry (one named {', '.join(BACKGROUND_NAMES)}): "
                                 f"name it with --background")
    uc = pick(unclassified, UNCLASSIFIED_NAMES, "unclassified")
    raw = read_raster(image)
    phases, values = [], []
    next_id = 1
    for r in rows:
        line = r["line"]
        color = _parse_color(r["color"], os.fspath(legend), line) if r.get("color") else None
        if r["name"] == bg:
            pid = RESIN
        elif r["name"] == uc:
            pid = UNCLASSIFIED
        else:
            pid, next_id = next_id, next_id + 1
            if pid >= UNCLASSIFIED:
                raise InputError(legend, "more than 254 phases: group them (--grouping)")
        if color is None:
            color = tuple(int(v) for v in np.random.default_rng(pid).integers(40, 216, 3))
        phases.append(Phase(pid, r["name"], color))
        if r.get("id"):
            try:
                values.append((int(r["id"]), pid))
            except ValueError:
                raise InputError(legend, f"line {line}: id {r['id']!r} is not an integer") from None
    table = PhaseTable(tuple(sorted(phases, key=lambda p: p.id)), source=os.fspath(legend))
    if raw.ndim == 3:
        ids = table.decode_map(raw[..., :3].astype(np.uint8, copy=False), source=os.fspath(image))
    elif np.issubdtype(raw.dtype, np.integer):
        if not values:
            raise InputError(legend, "the map holds indices but the legend has no 'id' column")
        src, dst = np.array([v for v, _ in values]), np.array([p for _, p in values], np.uint8)
        order = np.argsort(src)
        src, dst = src[order], dst[order]
        flat = raw.astype(np.int64).ravel()
        k = np.clip(np.searchsorted(src, flat), 0, src.size - 1)
        ok = src[k] == flat
        if not ok.all():
            v, c = np.unique(flat[~ok], return_counts=True)
            raise InputError(image, f"map value {int(v[np.argmax(c)])} on {int(c.max())} pixels is not in the "
                                    f"legend {legend.name}" + (f" (and {v.size - 1} more)" if v.size > 1 else ""))
        ids = dst[k].reshape(raw.shape)
    else:
        raise InputError(image, f"unsupported map dtype {raw.dtype}: use RGB colours or integer indices")
    meas = _measured_mask(measured, ids.shape)
    ids = np.where(meas, ids, UNCLASSIFIED).astype(np.uint8)
    px = pixel_size_um if pixel_size_um is not None else _tiff_pixel_um(image)
    info = {"format": "legend", "path": os.fspath(image), "legend": os.fspath(legend)}
    return MineralMap(ids, meas, table, px, None, image.stem, info)


# --- map folders ----------------------------------------------------------------------------

def _toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_mineral_map(folder: str | os.PathLike, m: MineralMap, *, overwrite: bool = False) -> Path:
    """Write a map folder (see the module docstring) atomically; returns its path."""
    folder = Path(folder)
    with atomic_dir(folder, overwrite=overwrite) as tmp:
        write_tiff(tmp / "map.tif", m.ids, compress=True)
        write_tiff(tmp / "measured.tif", (m.measured * 255).astype(np.uint8), compress=True)
        (tmp / "phases.csv").write_text(m.phase_table.to_csv_text(), encoding="utf-8")
        lines = [f"name = {_toml_str(m.name)}", ""]
        if m.pixel_size_um is not None:
            lines.append(f"pixel_size_um = {float(m.pixel_size_um)!r}")
        lines += ['map = "map.tif"', 'phases = "phases.csv"', 'measured = "measured.tif"']
        if m.bse is not None:
            write_tiff(tmp / "bse.tif", m.bse, compress=True)
            lines.append('bse = "bse.tif"')
        lines += ["", "[info]"] + [f"{k} = {_toml_str(str(v))}" for k, v in m.info.items()]
        (tmp / "map.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def read_mineral_map(path: str | os.PathLike, *, phases: str | os.PathLike | None = None,
                     pixel_size_um: float | None = None, measured: str | os.PathLike | None = None) -> MineralMap:
    """Open a map folder (``map.toml``), or a map image in the sample format with ``phases``.

    A bare map image is uint8 ids or RGB colours of the phase table ``phases``; its
    measured area is ``measured`` (non-zero), else every pixel.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    if path.is_dir() or path.name == "map.toml":
        toml = path / "map.toml" if path.is_dir() else path
        root = toml.parent
        try:
            cfg = tomllib.loads(toml.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(toml, "file not found (not a map folder from `mineral3d import-map`?)") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise InputError(toml, f"malformed TOML ({exc})") from None
        try:
            table = PhaseTable.from_csv(root / cfg.get("phases", "phases.csv"))
            ids = table.decode_map(_imread(root / cfg.get("map", "map.tif")), source=os.fspath(root / "map.tif"))
            meas = _imread(root / cfg["measured"]) > 0 if "measured" in cfg else np.ones(ids.shape, bool)
            bse = _imread(root / cfg["bse"]) if "bse" in cfg else None
            px = pixel_size_um if pixel_size_um is not None else cfg.get("pixel_size_um")
            if px is not None and (not isinstance(px, (int, float)) or px <= 0):
                raise InputError(toml, f"pixel_size_um must be a positive number, got {px!r}")
        except KeyError as exc:
            raise InputError(toml, f"missing key {exc}") from None
        if meas.shape != ids.shape:
            raise InputError(root / cfg["measured"], f"shape {meas.shape} differs from the map's {ids.shape}")
        return MineralMap(ids, meas, table, None if px is None else float(px), bse, str(cfg.get("name", root.name)),
                          dict(cfg.get("info", {})))
    if phases is None:
        raise InputError(path, "a map image needs its phase table (--phases phases.csv)")
    table = PhaseTable.from_csv(phases)
    ids = table.decode_map(read_raster(path), source=os.fspath(path))
    meas = _measured_mask(measured, ids.shape)
    px = pixel_size_um if pixel_size_um is not None else _tiff_pixel_um(path)
    return MineralMap(ids, meas, table, px, None, path.stem, {"format": "sample map", "path": os.fspath(path)})

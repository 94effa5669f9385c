"""Real data in: the TIMA particle mount (importer, grouping, 2D characterization) and the snow CT."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mineral3d.cli import main
from mineral3d.errors import InputError
from mineral3d.grouping import PhaseGrouping
from mineral3d.io.mineral_maps import read_legend_map, read_mineral_map, read_tima_mindif, write_mineral_map
from mineral3d.phase_table import PhaseTable

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
TIMA = DATA / "tima-particle-mount"
MINDIF = TIMA / "raw_mindif" / "d6b974f1-819f-4e1c-9574-af02bcf58c01"
SNOW = DATA / "spam-snow" / "snow.tif"

needs_tima = pytest.mark.skipif(not MINDIF.is_dir(), reason=f"real TIMA data not found at {TIMA}")
needs_snow = pytest.mark.skipif(not SNOW.is_file(), reason=f"real snow CT not found at {SNOW}")


@pytest.fixture(scope="module")
def tima():
    return read_tima_mindif(MINDIF)


@needs_tima
def test_tima_import_reproduces_the_stitched_mosaic(tima):
    import tifffile

    ph = tifffile.imread(TIMA / "phases_mosaic.tif")
    mask = tifffile.imread(TIMA / "mask_mosaic.tif")
    bse = tifffile.imread(TIMA / "bse_mosaic.tif")
    assert tima.ids.shape == ph.shape == (2000, 2000)
    assert tima.pixel_size_um == 10.0
    np.testing.assert_array_equal(tima.measured, ph >= 0)
    # TIMA id k -> k; [Unclassified] inside particles -> 255; outside TIMA's mask -> resin 0
    expected = np.where(ph < 0, 255, np.where(mask == 0, 0, np.where(ph == 0, 255, ph))).astype(np.uint8)
    np.testing.assert_array_equal(tima.ids, expected)
    np.testing.assert_array_equal(tima.bse[ph >= 0], bse[ph >= 0])


@needs_tima
def test_tima_phase_table_has_all_110_phases_with_their_colours(tima):
    legend = pd.read_csv(TIMA / "phase_legend.csv")
    table = tima.phase_table
    tima_phases = [p for p in table.phases if p.id != 0]
    assert len(tima_phases) == 110 == len(legend)
    got = {p.name: p.hex for p in tima_phases}
    assert got == dict(zip(legend["name"], legend["color_hex"].str.lower()))
    assert table.id_of("[Unclassified]") == 255 and table.id_of("Albite") == 14
    # colours are shared in the real scheme (e.g. Hornblende and Hornblende_Mg): allowed
    assert len({p.hex for p in tima_phases}) < 110


@needs_tima
def test_measure_map_on_the_mount(tima, tmp_path):
    folder = write_mineral_map(tmp_path / "mount", tima)
    out = tmp_path / "measured"
    with pytest.raises(SystemExit) as exc:
        main(["measure-map", str(folder), "--target", "Hematite_Magnetite", "--out", str(out)])
    assert exc.value.code in (0, None)
    summary = json.loads((out / "map_summary.json").read_text())
    sections = pd.read_csv(out / "sections.csv")
    assert 50 <= summary["sections"] <= 80 and len(sections) == summary["sections"]
    # the round mount's edge fields cut some sections: flagged, kept in the table, not used
    assert 5 <= summary["sections_cut"] < summary["sections"] // 2
    assert summary["sections_used"] <= summary["sections"] - summary["sections_cut"]
    # modal mineralogy is a direct pixel count over measured particle pixels
    modal = pd.read_csv(out / "modal.csv").set_index("phase")
    import tifffile

    ph = tifffile.imread(TIMA / "phases_mosaic.tif")
    mask = tifffile.imread(TIMA / "mask_mosaic.tif")
    inside = (mask == 255) & (ph > 0)
    direct = np.bincount(ph[inside], minlength=110)
    legend = pd.read_csv(TIMA / "phase_legend.csv").set_index("id")
    for tid in np.flatnonzero(direct):
        name = legend.loc[tid, "name"]
        assert modal.loc[name, "pixels"] == direct[tid]
        assert modal.loc[name, "percent_of_classified"] == pytest.approx(100 * direct[tid] / inside.sum())
    assert modal.loc["[Unclassified]", "pixels"] == ((mask == 255) & (ph == 0)).sum()
    for f in ("map_outlines.png", "liberation_spectrum.png", "liberation.csv", "sections.parquet"):
        assert (out / f).stat().st_size > 1000
    lib = pd.read_csv(out / "liberation.csv")
    share = lib[(lib["size_class"] == "all") & (lib["basis"] == "grade")]["target_share"].sum()
    assert share == pytest.approx(1.0)


@needs_tima
def test_grouping_on_import(tima, tmp_path):
    g = PhaseGrouping.from_text("phase,group,color\nAlbite,feldspar,#ffcc00\nMicrocline,feldspar,\n"
                                "Anorthite,feldspar,\nQuartz,quartz,\n")
    m = tima.grouped(g)
    t = m.phase_table
    assert t.id_of("feldspar") == 11 and t.phase("feldspar").hex == "#ffcc00"
    ids = lambda name, table, arr: (arr == table.id_of(name)).sum()  # noqa: E731
    before = sum(ids(n, tima.phase_table, tima.ids) for n in ("Albite", "Microcline", "Anorthite"))
    assert ids("feldspar", t, m.ids) == before
    assert ids("Calcite", t, m.ids) == ids("Calcite", tima.phase_table, tima.ids)  # ungrouped keep their name
    np.testing.assert_array_equal(m.ids == 255, tima.ids == 255)
    assert len(t.phases) == len(tima.phase_table.phases) - 2
    bad = PhaseGrouping.from_text("phase,group\nAlbite,feldspar\nAlbit,feldspar\nKfeldspar,feldspar\n",
                                  source="groups.csv")
    with pytest.raises(InputError,
                       match=r"groups.csv: 2 phase name\(s\) not in the phase table .*'Albit', 'Kfeldspar'"):
        tima.grouped(bad)


@needs_snow
def test_snow_grains(tmp_path):
    out = tmp_path / "snow"
    with pytest.raises(SystemExit) as exc:
        main(["particles", str(SNOW), "--out", str(out)])
    assert exc.value.code in (0, None)
    summary = json.loads((out / "particles_summary.json").read_text())
    table = pd.read_csv(out / "particles.csv")
    psd = pd.read_csv(out / "size_distribution.csv")
    assert summary["particles"] == len(table) >= 50
    assert summary["largest_share_of_volume"] <= 0.20
    assert table["volume_um3"].max() / table["volume_um3"].sum() == pytest.approx(summary["largest_share_of_volume"])
    assert psd["cumulative_passing_percent"].iloc[-1] == pytest.approx(100)
    assert summary["D10_um"] < summary["D50_um"] < summary["D90_um"]
    assert (out / "particles_slices.png").stat().st_size > 10_000


# --- generic legend maps (no real data needed) -------------------------------------------------

LEGEND = "id,name,color\n0,Background,#000000\n3,Quartz,#ff0000\n7,Pyrite,#ffff00\n9,Unknown,#808080\n"


def test_legend_map_rgb_and_indexed(tmp_path):
    import tifffile

    (tmp_path / "legend.csv").write_text(LEGEND)
    idx = np.zeros((20, 30), np.uint16)
    idx[2:8, 2:10] = 3
    idx[4:6, 4:6] = 7
    idx[12:18, 5:25] = 9
    tifffile.imwrite(tmp_path / "idx.tif", idx, resolution=(1e4 / 2.5, 1e4 / 2.5), resolutionunit="CENTIMETER")
    m = read_legend_map(tmp_path / "idx.tif", tmp_path / "legend.csv")
    assert m.pixel_size_um == pytest.approx(2.5)
    assert m.phase_table.names == ["Background", "Quartz", "Pyrite", "Unknown"]
    assert [p.id for p in m.phase_table.phases] == [0, 1, 2, 255]
    np.testing.assert_array_equal(m.ids, np.select([idx == 3, idx == 7, idx == 9], [1, 2, 255], 0))
    lut = np.array([[0, 0, 0], [0, 0, 0], [0, 0, 0], [255, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0],
                    [255, 255, 0], [0, 0, 0], [128, 128, 128]], np.uint8)
    from PIL import Image

    Image.fromarray(lut[idx]).save(tmp_path / "rgb.png")
    m2 = read_legend_map(tmp_path / "rgb.png", tmp_path / "legend.csv", pixel_size_um=2.5)
    np.testing.assert_array_equal(m2.ids, m.ids)
    folder = write_mineral_map(tmp_path / "map", m2)
    back = read_mineral_map(folder)
    np.testing.assert_array_equal(back.ids, m.ids)
    assert back.pixel_size_um == 2.5 and back.phase_table.phases == m.phase_table.phases
    idx[0, 0] = 5
    tifffile.imwrite(tmp_path / "bad.tif", idx)
    with pytest.raises(InputError, match="bad.tif: map value 5 on 1 pixels is not in the legend legend.csv"):
        read_legend_map(tmp_path / "bad.tif", tmp_path / "legend.csv")


def test_import_map_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "legend.csv").write_text("name,color\nQuartz,#ff0000\n")
    with pytest.raises(SystemExit) as exc:
        main(["import-map", str(tmp_path / "missing.tif"), "--legend", str(tmp_path / "legend.csv"),
              "--out", str(tmp_path / "o")])
    assert exc.value.code == 2
    assert "no background entry" in capsys.readouterr().err
    (tmp_path / "notima").mkdir()
    with pytest.raises(SystemExit) as exc:
        main(["import-map", str(tmp_path / "notima"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "measurement.xml: file not found" in err and len(err.strip().splitlines()) == 1


def test_grouping_rules():
    table = PhaseTable.from_text("id,name,color\n0,resin,#000000\n1,albite,#111111\n2,orthoclase,#222222\n"
                                 "3,pyrite,#333333\n255,unknown,#444444\n", target="pyrite")
    g = PhaseGrouping.from_text("phase,group\nalbite,feldspar\northoclase,feldspar\npyrite,sulphide\n")
    counts = np.zeros(256)
    counts[2] = 10  # orthoclase is the most abundant feldspar: its colour
    grouped, lut = g.apply(table, counts)
    assert grouped.names == ["resin", "feldspar", "sulphide", "unknown"]
    assert grouped.target == "sulphide" and grouped.phase("feldspar").hex == "#222222"
    np.testing.assert_array_equal(lut[[0, 1, 2, 3, 255]], [0, 1, 1, 2, 255])
    g2 = PhaseGrouping.from_text("phase,group\nalbite,unclassified\n")
    _, lut2 = g2.apply(table)
    assert lut2[1] == 255
    with pytest.raises(InputError, match="put in two groups"):
        PhaseGrouping.from_text("phase,group\nalbite,a\nalbite,b\n")


def test_sample_grouping_applies_to_table_maps_and_truth(sample_copy):
    from mineral3d.io import open_sample

    raw = open_sample(sample_copy)
    toml = sample_copy / "sample.toml"
    (sample_copy / "grouping.csv").write_text("phase,group\nspinel,minor\nmetal,minor\n")
    toml.write_text(toml.read_text().replace("[phases]\n", '[phases]\ngrouping = "grouping.csv"\n'))
    s = open_sample(sample_copy)
    assert s.phase_table.names == ["resin", "LiAlO2", "gehlenite", "minor", "unclassified"]
    assert s.phase_table.target == "LiAlO2"
    name = s.config.sections[0].name
    a, b = raw.section_map(name), s.section_map(name)
    minor = np.isin(a, [raw.phase_table.id_of("spinel"), raw.phase_table.id_of("metal")])
    np.testing.assert_array_equal(b == s.phase_table.id_of("minor"), minor)
    np.testing.assert_array_equal(b[~minor], a[~minor])
    assert (s.truth_phases() == 3).sum() == np.isin(raw.truth_phases(), [3, 4]).sum()
    (sample_copy / "grouping.csv").write_text("phase,group\nspinell,minor\n")
    with pytest.raises(InputError, match="not in the phase table .*'spinell'"):
        _ = open_sample(sample_copy).phase_table

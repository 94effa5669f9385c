import numpy as np
import pytest

from mineral3d.errors import InputError
from mineral3d.phase_table import PhaseTable

pytestmark = pytest.mark.slow  # end-to-end: trains networks (`make test` runs all; `make test-fast` skips)

CSV = "id,name,color\n0,resin,#000000\n1,LiAlO2,#1f77b4\n2,gehlenite,#ff7f0e\n"


def table(text=CSV, target="LiAlO2"):
    return PhaseTable.from_text(text, target=target, source="phases.csv")


def test_parse_and_lookup():
    t = table()
    assert t.names == ["resin", "LiAlO2", "gehlenite"]
    assert t.target_id == 1
    assert t.id_of("gehlenite") == 2
    assert [p.name for p in t.material] == ["LiAlO2", "gehlenite"]
    assert PhaseTable.from_text(t.to_csv_text(), target="LiAlO2").phases == t.phases


@pytest.mark.parametrize("text, message", [
    (CSV + "3,LiAlO2,#123456\n", "duplicate phase name 'LiAlO2'"),
    (CSV + "2,spinel,#123456\n", "duplicate phase id 2"),
    (CSV + "3,spinel,#zzzzzz\n", "is not of the form #rrggbb"),
    ("id,name,color\n1,LiAlO2,#1f77b4\n", "no phase with id 0"),
    ("name,id,color\n", "header must be"),
    (CSV + "x,spinel,#123456\n", "is not an integer"),
    (CSV + "300,spinel,#123456\n", "outside 0-255"),
])
def test_bad_tables(text, message):
    with pytest.raises(InputError, match=message) as exc:
        table(text)
    assert str(exc.value).startswith("phases.csv: ")


def test_unknown_target():
    with pytest.raises(InputError, match="target phase 'spodumene' is not in the table"):
        table(target="spodumene")


def test_decode_ids_and_rgb():
    t = table()
    ids = np.array([[0, 1, 2], [255, 1, 0]], np.uint8)
    np.testing.assert_array_equal(t.decode_map(ids), ids)
    rgb = t.encode_rgb(np.array([[0, 1, 2]], np.uint8))
    np.testing.assert_array_equal(t.decode_map(rgb), [[0, 1, 2]])
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=-1)
    np.testing.assert_array_equal(t.decode_map(rgba), [[0, 1, 2]])


def test_unknown_map_value_names_value_and_count():
    ids = np.zeros((4, 4), np.uint8)
    ids[0, :3] = 7
    with pytest.raises(InputError, match="map value 7 on 3 pixels is not in the phase table"):
        table().decode_map(ids, source="s1.tif")


def test_unknown_colour_names_colour_and_count():
    rgb = np.zeros((3, 3, 3), np.uint8)
    rgb[1, 1] = (1, 2, 3)
    with pytest.raises(InputError, match="map colour #010203 on 1 pixels"):
        table().decode_map(rgb, source="s1.tif")


def test_area_fractions_ignore_unclassified():
    ids = np.array([[0, 1, 1, 255]], np.uint8)
    f = table().area_fractions(ids)
    assert f == pytest.approx({"resin": 1 / 3, "LiAlO2": 2 / 3, "gehlenite": 0.0})


def test_shared_colours_are_allowed_until_a_map_uses_them():
    t = table(CSV + "3,spinel,#ff7f0e\n")  # real schemes (TIMA) reuse colours
    ids = np.array([[0, 1, 2, 3]], np.uint8)
    np.testing.assert_array_equal(t.decode_map(ids), ids)
    np.testing.assert_array_equal(t.decode_map(t.encode_rgb(np.array([[0, 1]], np.uint8))), [[0, 1]])
    with pytest.raises(InputError, match="#ff7f0e on 2 pixels is shared by phases 'gehlenite', 'spinel'"):
        t.decode_map(t.encode_rgb(ids), source="s1.tif")

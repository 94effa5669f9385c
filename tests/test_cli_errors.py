"""Every bad input gives one line naming the file and the problem, exit code 2, no traceback."""

import subprocess
import sys

import numpy as np
import pytest
import tifffile

from mineral3d.cli import main


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return exc.value.code, captured.err


def expect_error(args, capsys, *fragments):
    code, err = run_cli(args, capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    for f in fragments:
        assert f in lines[0], lines[0]
    return lines[0]


def edit_toml(sample, old, new):
    p = sample / "sample.toml"
    text = p.read_text()
    assert old in text
    p.write_text(text.replace(old, new, 1))


def test_info_on_a_good_sample(small_sample, capsys):
    code, err = run_cli(["info", small_sample], capsys)
    assert code in (0, None)


def test_missing_sample(tmp_path, capsys):
    expect_error(["info", tmp_path / "nope"], capsys, "sample.toml", "file not found")


def test_missing_ct_file(sample_copy, capsys):
    (sample_copy / "ct.tif").unlink()
    expect_error(["info", sample_copy], capsys, "ct.tif", "file not found")


def test_2d_array_as_volume(sample_copy, capsys):
    tifffile.imwrite(sample_copy / "ct.tif", np.zeros((20, 20), np.uint16))
    expect_error(["info", sample_copy], capsys, "ct.tif", "must be 3D")


@pytest.mark.parametrize("dtype", [np.int32, np.float64])
def test_unsupported_dtype(sample_copy, capsys, dtype):
    tifffile.imwrite(sample_copy / "ct.tif", np.zeros((4, 20, 20), dtype), photometric="minisblack")
    expect_error(["info", sample_copy], capsys, "ct.tif", f"unsupported CT volume dtype {np.dtype(dtype)}")


@pytest.mark.parametrize("value", ["0.0", "-2.0"])
def test_non_positive_voxel_size(sample_copy, capsys, value):
    edit_toml(sample_copy, "voxel_size_um = 2.0", f"voxel_size_um = {value}")
    expect_error(["info", sample_copy], capsys, "sample.toml", "voxel_size_um must be positive")


def test_non_positive_pixel_size(sample_copy, capsys):
    edit_toml(sample_copy, "pixel_size_um = 1.0", "pixel_size_um = 0")
    expect_error(["info", sample_copy], capsys, "sample.toml", "pixel_size_um must be positive")


def test_map_value_missing_from_table(sample_copy, capsys):
    path = sample_copy / "sections" / "s2.tif"
    m = tifffile.imread(path)
    m[:2, :5] = 9
    tifffile.imwrite(path, m)
    expect_error(["info", sample_copy], capsys, "s2.tif", "map value 9 on 10 pixels is not in the phase table")


def test_map_colour_missing_from_table(sample_copy, capsys):
    path = sample_copy / "sections" / "s1.tif"
    rgb = np.zeros(tifffile.imread(path).shape + (3,), np.uint8)
    rgb[0, :4] = (10, 20, 30)
    tifffile.imwrite(path, rgb, photometric="rgb")
    expect_error(["info", sample_copy], capsys, "s1.tif", "map colour #0a141e on 4 pixels")


def test_duplicate_phase_name(sample_copy, capsys):
    with open(sample_copy / "phases.csv", "a") as f:
        f.write("7,spinel,#abcdef\n")
    expect_error(["info", sample_copy], capsys, "phases.csv", "duplicate phase name 'spinel'")


def test_target_not_in_table(sample_copy, capsys):
    edit_toml(sample_copy, 'target = "LiAlO2"', 'target = "spodumene"')
    expect_error(["info", sample_copy], capsys, "phases.csv", "target phase 'spodumene' is not in the table")


def test_bad_section_role(sample_copy, capsys):
    edit_toml(sample_copy, 'role = "validation"', 'role = "test"')
    expect_error(["info", sample_copy], capsys, "sample.toml", "role must be 'train' or 'validation'", "'test'")


def test_truncated_tiff(sample_copy, capsys):
    path = sample_copy / "ct.tif"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    expect_error(["info", sample_copy], capsys, "ct.tif", "truncated")


def test_truncated_map(sample_copy, capsys):
    path = sample_copy / "sections" / "s1_bse.tif"
    path.write_bytes(path.read_bytes()[:300])
    expect_error(["info", sample_copy], capsys, "s1_bse.tif")


@pytest.mark.parametrize("text, fragment", [
    ("name = \n", "malformed TOML"),
    ("name = 'x'\n", "missing [ct] table"),
    ("[ct]\npath = 3\n", "[ct] path must be a non-empty string"),
])
def test_malformed_sample_toml(sample_copy, capsys, text, fragment):
    (sample_copy / "sample.toml").write_text(text)
    expect_error(["info", sample_copy], capsys, "sample.toml", fragment)


def test_bse_shape_mismatch(sample_copy, capsys):
    tifffile.imwrite(sample_copy / "sections" / "s1_bse.tif", np.zeros((5, 5), np.uint8))
    expect_error(["info", sample_copy], capsys, "s1_bse.tif", "differs from its map's shape")


def test_phantom_refuses_existing_output(small_sample, capsys):
    expect_error(["phantom", small_sample], capsys, "already exists")


def test_phantom_bad_option(tmp_path, capsys):
    expect_error(["phantom", tmp_path / "x", "--fraction", "medium"], capsys, "--fraction", "fine, coarse")
    assert not (tmp_path / "x").exists()


def test_console_script_exit_code_and_no_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "mineral3d.cli", "info", str(tmp_path / "missing")],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def test_measure_cli_on_truth_volumes(small_sample, tmp_path, capsys):
    out = tmp_path / "m"
    code, err = run_cli(["measure", "--phases", small_sample / "truth" / "phases.tif", "--particles",
                         small_sample / "truth" / "particles.tif", "--sample", small_sample, "--out", out,
                         "--boot", "50"], capsys)
    assert code in (0, None), err
    import json
    s = json.loads((out / "summary.json").read_text())
    assert s["target_phase"] == "LiAlO2" and s["sections_2d_map"]["maps"] == ["s3"]
    assert ("2d-map" in s["bias_2d_minus_3d"]) == (s["sections_2d_map"]["sections"] > 0)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_measure_mismatched_shapes(small_sample, tmp_path, capsys):
    bad = tmp_path / "p.tif"
    tifffile.imwrite(bad, np.zeros((4, 5, 6), np.uint32), photometric="minisblack")
    expect_error(["measure", "--phases", small_sample / "truth" / "phases.tif", "--particles", bad,
                  "--sample", small_sample, "--out", tmp_path / "m"], capsys, "p.tif", "differs from the phase")
    assert not (tmp_path / "m").exists()


def test_measure_unknown_phase_id(small_sample, tmp_path, capsys):
    ph = tifffile.imread(small_sample / "truth" / "phases.tif")
    ph[0, 0, :3] = 17
    bad = tmp_path / "ph.tif"
    tifffile.imwrite(bad, ph)
    expect_error(["measure", "--phases", bad, "--particles", small_sample / "truth" / "particles.tif",
                  "--sample", small_sample, "--out", tmp_path / "m"], capsys, "ph.tif", "phase id 17 on 3 voxels")


def test_measure_needs_a_phase_table(small_sample, tmp_path, capsys):
    expect_error(["measure", "--phases", small_sample / "truth" / "phases.tif", "--particles",
                  small_sample / "truth" / "particles.tif", "--voxel-um", "2", "--out", tmp_path / "m"], capsys,
                 "--phase-table")


def test_measure_from_zarr_with_phase_table(small_sample, tmp_path, capsys):
    from mineral3d.io import write_volume_zarr
    ph = tifffile.imread(small_sample / "truth" / "phases.tif")
    pa = tifffile.imread(small_sample / "truth" / "particles.tif")
    write_volume_zarr(tmp_path / "seg.zarr" / "phases", ph, voxel_size_um=2.0, labels=True)
    write_volume_zarr(tmp_path / "seg.zarr" / "particles", pa, voxel_size_um=2.0, labels=True)
    code, err = run_cli(["measure", "--phases", tmp_path / "seg.zarr" / "phases", "--particles",
                         tmp_path / "seg.zarr" / "particles", "--phase-table", small_sample / "phases.csv",
                         "--target", "LiAlO2", "--out", tmp_path / "m", "--boot", "20"], capsys)
    assert code in (0, None), err
    assert (tmp_path / "m" / "summary.json").exists()


def test_out_of_memory_in_a_run_step_is_one_line_naming_the_step(small_sample, tmp_path, capsys, monkeypatch):
    from mineral3d.pipeline import run_steps

    def exhausted(ctx):
        raise MemoryError

    from dataclasses import replace
    monkeypatch.setattr(run_steps, "GRAPH", tuple(replace(s, run=exhausted) if s.name == "register" else s
                                                  for s in run_steps.GRAPH))
    code, err = run_cli(["run", small_sample, "--out", tmp_path / "out"], capsys)
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("error: out of memory in the register step: ") and "--workers" in lines[0], lines[0]
    assert not (tmp_path / "out" / ".steps" / "register.json").exists()


def test_unknown_test_time_mirroring_is_refused_before_any_work(small_sample, tmp_path, capsys):
    expect_error(["run", small_sample, "--out", tmp_path / "run", "--tta", "rotate"], capsys, "segment.tta",
                 "none, flips, all-flips")
    assert not (tmp_path / "run").exists()

"""`mineral3d train`, `segment` and `validate` end to end on a small sample, and their errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr
from test_cli_errors import expect_error

from mineral3d.io import open_sample, write_transform

FAST = ["--iterations", "4", "--features", "4,4,8,8,16,4", "--precision", "fp32"]


@pytest.fixture(scope="module")
def trained(small_sample, tmp_path_factory):
    """Truth transforms as the registration, a model trained for 4 iterations, its segmentation."""
    root = tmp_path_factory.mktemp("phases")
    s = open_sample(small_sample)
    reg = root / "registration"
    for c in s.config.sections:
        write_transform(reg / f"{c.name}.json", c.name, s.truth_transform(c.name))
    model = root / "model"
    from mineral3d.cli import main

    for args in (["train", small_sample, "--registration", reg, "--out", model, *FAST],
                 ["segment", small_sample, "--model", model, "--out", root / "out", "--probabilities", "--particles"],
                 ["validate", small_sample, "--registration", reg, "--segmentation", root / "out" / "segmentation.zarr",
                  "--out", root / "validation", "--model", model]):
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            assert exc.code in (0, None), args
    return root


def test_train_segment_validate(trained, small_sample):
    meta = json.loads((trained / "model" / "model.json").read_text())
    assert meta["voxel_size_um"] == open_sample(small_sample).voxel_size_um
    assert meta["classes"] == [0, 1, 2, 3, 4]
    assert meta["info"]["record"]["iterations"] == 4 and "baseline" in meta["info"]
    assert not list(trained.glob(".model*"))  # checkpoint and temporary folders are gone
    seg = zarr.open_array(store=str(trained / "out" / "segmentation.zarr" / "phases"), mode="r")
    assert seg.shape == open_sample(small_sample).ct().shape and seg.dtype == np.uint8
    assert set(np.unique(seg[...])) <= {0, 1, 2, 3, 4}
    part = zarr.open_array(store=str(trained / "out" / "segmentation.zarr" / "particles"), mode="r")[...]
    np.testing.assert_array_equal(part > 0, seg[...] != 0)  # particles and phases agree
    prob = zarr.open_array(store=str(trained / "out" / "segmentation.zarr" / "probabilities"), mode="r")
    assert prob.shape == (5, *seg.shape)
    v = json.loads((trained / "validation" / "validation.json").read_text())
    assert list(v["sections"]) == ["s3"]  # the validation-role section only
    assert {"ceiling", "truth_volume", "baseline"} <= set(v["all"])
    # the truth scored against the map on the voxel grid is nearly perfect (registration = truth here)
    assert v["all"]["ceiling"]["voxel_grid"]["accuracy"] > 0.95
    rows = (trained / "validation" / "validation_scores.csv").read_text().splitlines()
    assert rows[0].startswith("section,phase,iou") and any(r.startswith("all,LiAlO2,") for r in rows)


def test_segment_errors(trained, small_sample, tmp_path, capsys):
    expect_error(["segment", small_sample, "--model", tmp_path / "none", "--out", tmp_path / "o"], capsys,
                 "none", "model folder not found")
    bad = tmp_path / "model3um"
    import shutil

    shutil.copytree(trained / "model", bad)
    meta = json.loads((bad / "model.json").read_text())
    meta["voxel_size_um"] = 3.0
    (bad / "model.json").write_text(json.dumps(meta))
    expect_error(["segment", small_sample, "--model", bad, "--out", tmp_path / "o"], capsys,
                 "differs from the model's 3 µm", "--allow-resample")
    expect_error(["segment", small_sample, "--model", trained / "model", "--out", tmp_path / "o", "--device", "tpu"],
                 capsys, "--device")


def test_train_without_registration(small_sample, tmp_path, capsys):
    expect_error(["train", small_sample, "--registration", tmp_path / "reg", "--out", tmp_path / "m", *FAST], capsys,
                 "s1.json", "no registration for section 's1'")


def test_validate_shape_mismatch(trained, small_sample, tmp_path, capsys):
    z = zarr.create_array(store=str(tmp_path / "p.zarr"), shape=(4, 4, 4), dtype=np.uint8, chunks=(4, 4, 4))
    z.attrs["voxel_size_um"] = 2.0
    expect_error(["validate", small_sample, "--registration", trained / "registration", "--segmentation",
                  tmp_path / "p.zarr", "--out", tmp_path / "v"], capsys, "differs from the CT's")


def test_run_and_apply_errors_write_nothing(small_sample, tmp_path, capsys):
    expect_error(["apply", tmp_path / "nope", small_sample, "--out", tmp_path / "o"], capsys, "model folder not found")
    bad = tmp_path / "bad.json"
    bad.write_text('{"train": {"iteratoins": 3}}')
    expect_error(["run", small_sample, "--out", tmp_path / "o", "--config", bad], capsys, "bad.json",
                 "unknown setting(s) iteratoins")
    expect_error(["run", tmp_path / "no-sample", "--out", tmp_path / "o"], capsys, "sample.toml")
    assert not (tmp_path / "o").exists()

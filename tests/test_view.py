"""Look and correct: the viewer's layers, napari headless, corrections saved and used by a rerun."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import zarr

from mineral3d.io import open_sample
from mineral3d.io.corrections import correction_rounds, read_corrections, save_corrections
from mineral3d.io.transforms import read_transform
from mineral3d.pipeline.run import open_run, run
from mineral3d.viewer.layers import CORRECTIONS, run_layers, section_affine


@pytest.fixture(scope="module")
def fast_run(full_run):
    """The session's finished fast run (conftest.full_run): read-only, copied by tests that change it."""
    return full_run


@pytest.fixture(scope="session")
def display():
    """An X display for Qt: the session's own, or a private Xvfb (skips when there is neither)."""
    if os.environ.get("DISPLAY"):
        yield os.environ["DISPLAY"]
        return
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        pytest.skip("no display and no Xvfb (Debian package xvfb; .ci/run installs it): the viewer is not tested")
    r, w = os.pipe()
    proc = subprocess.Popen([xvfb, "-displayfd", str(w), "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
                            pass_fds=(w,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(w)
    with os.fdopen(r) as f:
        number = f.readline().strip()
    os.environ["DISPLAY"] = f":{number}"
    os.environ.setdefault("QT_QPA_PLATFORM", "xcb")
    try:
        yield os.environ["DISPLAY"]
    finally:
        proc.terminate()
        proc.wait(10)
        os.environ.pop("DISPLAY", None)


def test_section_affine_is_the_plane_transform():
    m = np.array([[0.05, 0.01, 10.0], [0.5, 0.02, 3.0], [-0.01, 0.5, 4.0]])
    a = section_affine(m, 2.0)
    r, c = 17.0, 23.0
    world = a @ np.array([0.0, r, c, 1.0])
    np.testing.assert_allclose(world[:3], 2.0 * (m[:, 0] * r + m[:, 1] * c + m[:, 2]))
    assert abs(np.linalg.det(a[:3, :3])) > 0  # invertible: the layer's first axis runs along the normal


def test_layers_of_a_run_output(fast_run, small_sample):
    s = open_sample(small_sample)
    layers = {kw["name"]: (data, kw, kind) for data, kw, kind in run_layers(fast_run)}
    names = list(layers)
    assert names[:3] == ["CT", "phases", "particles"] and names[-1] == CORRECTIONS
    v = s.voxel_size_um
    shape = s.ct().shape
    for name in ("CT", "phases", "particles", CORRECTIONS):
        data, kw, _ = layers[name]
        assert tuple(data.shape) == tuple(shape) and kw["scale"] == (v, v, v)
    # phase colours and names from the phase table
    _, kw, kind = layers["phases"]
    assert kind == "labels"
    for p in s.phase_table.phases:
        if p.id not in (0, 255):
            np.testing.assert_allclose(kw["colormap"][p.id][:3], np.array(p.color) / 255)
    feats = kw["features"]
    assert dict(zip(feats["index"], feats["phase"]))[s.phase_table.target_id] == s.phase_table.target
    # the particle table on hover: one row per particle label
    parts = layers["particles"][1]["features"]
    table = json.loads((fast_run / "summary.json").read_text())
    assert len(parts) == table["particles"] and f"grade_{s.phase_table.target}" in parts
    # each registered section lies on its plane: a known map pixel lands on the voxel the truth gives
    for c in s.config.sections:
        data, kw, kind = layers[f"{c.name} map"]
        assert kind == "labels" and data.shape == (1,) + s.section_map(c.name).shape
        registered = read_transform(fast_run / "registration" / f"{c.name}.json")[0]
        truth = s.truth_transform(c.name)
        h, w = data.shape[1:]
        for r, col in ((h // 2, w // 2), (h // 4, 3 * w // 4)):
            world = kw["affine"] @ np.array([0.0, r, col, 1.0])
            np.testing.assert_allclose(world[:3] / v, registered.apply(r, col), atol=1e-9)
            assert np.abs(world[:3] / v - truth.apply(r, col)).max() < 1.0  # within a voxel of the truth
        plane = layers[f"{c.name} CT on plane"][0]
        assert plane.shape == data.shape and np.isfinite(plane).mean() > 0.5
    assert not layers[CORRECTIONS][0].any()


def test_corrections_are_appended_never_overwritten(tmp_path):
    store = tmp_path / "corrections.zarr"
    a = np.zeros((4, 5, 6), np.uint8)
    a[1, 2, 3], a[3, 0, 0] = 2, 1
    assert save_corrections(store, a).round == 1
    assert save_corrections(store, a) is None  # unchanged: nothing appended
    a[0, 0, 0] = 3
    assert save_corrections(store, a).round == 2
    assert [p.name for p in correction_rounds(store)] == ["round-0001", "round-0002"]
    c = read_corrections(store)
    np.testing.assert_array_equal(c.to_dense(), a)
    (store / ".round-0003.partial").mkdir()  # a crash mid-save: not a round
    assert read_corrections(store).round == 2
    with pytest.raises(Exception, match="painted on a"):
        read_corrections(store, shape=(4, 5, 7))


def test_viewer_opens_headless_and_saves_corrections(fast_run, display, tmp_path):
    pytest.importorskip("napari")
    out = tmp_path / "run"
    shutil.copytree(fast_run, out)
    from mineral3d.viewer.app import open_viewer, save_layer

    viewer = open_viewer(out, show=True)
    try:
        names = [layer.name for layer in viewer.layers]
        assert names[:3] == ["CT", "phases", "particles"] and names[-1] == CORRECTIONS
        assert any(n.endswith(" map") for n in names) and any(n.endswith(" CT on plane") for n in names)
        shot = viewer.screenshot(canvas_only=True)
        assert shot.ndim == 3 and shot[..., :3].std() > 10  # not blank: the CT slice and the phases
        assert len(np.unique(shot[..., :3].reshape(-1, 3), axis=0)) > 50
        # hovering a particle shows its row of the particle table
        lab = zarr.open_array(store=str(out / "segmentation.zarr" / "particles"), mode="r")[...]
        z, y, x = np.argwhere(lab > 0)[len(np.argwhere(lab > 0)) // 2]
        v = open_sample(json.loads((out / "sample.json").read_text())["sample"]).voxel_size_um
        viewer.dims.set_point(0, z * v)
        status = viewer.layers["particles"].get_status((z * v, y * v, x * v), world=True)
        assert "grade_" in status["coords"] + status["value"] and "liberation_class" in status["value"]
        # paint a box of the target phase in one slice, save, and find it on disk
        corr = viewer.layers[CORRECTIONS]
        corr.data[10, 20:30, 20:30] = 1
        corr.refresh()
        r = save_layer(corr)
        assert r is not None and r.round == 1 and len(r) == 100
    finally:
        viewer.close()
    viewer = open_viewer(out, show=True)  # reopened: the saved corrections are back
    try:
        assert np.count_nonzero(viewer.layers[CORRECTIONS].data) == 100
    finally:
        viewer.close()


@pytest.mark.slow
def test_rerun_with_corrections_moves_the_prediction_and_skips_untouched_steps(fast_run, small_sample, fast_config,
                                                                              tmp_path):
    s = open_sample(small_sample)
    out = tmp_path / "run"
    shutil.copytree(fast_run, out)
    truth = s.truth_phases()
    before = zarr.open_array(store=str(out / "segmentation.zarr" / "phases"), mode="r")[...]
    from scipy import ndimage

    painted = np.zeros(truth.shape, np.uint8)  # on three slices, the truth painted where the prediction is wrong
    for z in (20, 40, 60):                        # (not on phase rims: a user does not paint those)
        for k in np.unique(truth[z]):
            if k not in (0, 255):
                painted[z][ndimage.binary_erosion(truth[z] == k) & (before[z] != k)] = k
    save_corrections(out / "corrections.zarr", painted)
    logs: list[str] = []
    timings = run(open_run(small_sample, out, config=fast_config, log=logs.append,
                           corrections=out / "corrections.zarr"))
    assert timings["register"]["skipped"] and timings["train"]["skipped"]
    assert not timings["correct"]["skipped"] and not timings["segment"]["skipped"]
    after = zarr.open_array(store=str(out / "segmentation.zarr" / "phases"), mode="r")[...]
    m = painted > 0
    agree_before, agree_after = (before[m] == painted[m]).mean(), (after[m] == painted[m]).mean()
    assert agree_before == 0 and agree_after > 0.15, agree_after  # measured: 0.34 (40 iterations from 6)
    assert (out / "model_corrected" / "model.json").is_file() and (out / "model" / "model.json").is_file()
    # the same command again: nothing to do
    timings = run(open_run(small_sample, out, config=fast_config, log=logs.append,
                           corrections=out / "corrections.zarr"))
    assert all(t["skipped"] for t in timings.values())
    from mineral3d.io.layout import RunLayout

    assert RunLayout(out).segmenting_model() == out / "model_corrected"  # what validate and suggest-section use
    timings = run(open_run(small_sample, out, config=fast_config, log=logs.append))  # corrections dropped
    assert not timings["segment"]["skipped"] and "correct" not in timings
    assert RunLayout(out).segmenting_model() == out / "model"
    np.testing.assert_array_equal(zarr.open_array(store=str(out / "segmentation.zarr" / "phases"), mode="r")[...],
                                  before)  # back to the run without corrections


def test_mineral3d_imports_without_napari_or_qt():
    code = ("import sys, mineral3d.cli, mineral3d.viewer.layers, mineral3d.pipeline.run_steps; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('napari', 'qtpy', 'PyQt6', 'PyQt5', 'PySide6')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "DISPLAY": ""})
    assert r.returncode == 0, r.stdout + r.stderr


def test_view_of_a_folder_that_is_no_run_output_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "mineral3d.cli", "view", str(tmp_path)], capture_output=True, text=True,
                       env={**os.environ, "DISPLAY": ""})
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "not a mineral3d run output" in r.stderr, r.stderr
    r = subprocess.run([sys.executable, "-m", "mineral3d.cli", "suggest-section", str(tmp_path)], capture_output=True,
                       text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "sample.json" in r.stderr, r.stderr

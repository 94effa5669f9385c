import json

import numpy as np
import pytest

from mineral3d.io import read_transform, write_transform
from mineral3d.plane import PlaneTransform, sample_plane, similarity_2d


def pose(**kw):
    args = dict(centre_zyx=(20.0, 30.0, 40.0), map_shape=(50, 60), scale=0.5, tilt_deg=4.0, azimuth_deg=30.0,
                rotation_deg=110.0)
    args.update(kw)
    return PlaneTransform.from_pose(**args)


def test_untilted_pose_is_the_z_plane():
    t = PlaneTransform.from_pose(centre_zyx=(5, 10, 20), map_shape=(3, 5), scale=2.0)
    # rows along +y, columns along +x, pixel (1, 2) is the centre
    np.testing.assert_allclose(t.apply(1, 2), [5, 10, 20])
    np.testing.assert_allclose(t.row_step, [0, 2, 0])
    np.testing.assert_allclose(t.col_step, [0, 0, 2])
    np.testing.assert_allclose(t.apply(0, 0), [5, 8, 16])
    assert not t.mirrored and t.tilt_deg == pytest.approx(0)


def test_pose_properties():
    t = pose()
    assert t.scale == pytest.approx(0.5)
    assert t.tilt_deg == pytest.approx(4.0)
    np.testing.assert_allclose(t.apply(24.5, 29.5), [20, 30, 40], atol=1e-12)
    assert not t.mirrored
    assert pose(mirror=True).mirrored
    assert np.dot(t.row_step, t.col_step) == pytest.approx(0, abs=1e-12)


def test_to_map_inverts_apply():
    t = pose()
    rows, cols = np.meshgrid(np.arange(0, 50, 7.5), np.arange(0, 60, 11.0), indexing="ij")
    zyx = t.apply(rows, cols) + 1.5 * t.normal  # 1.5 voxels off the plane
    r, c, d = t.to_map(zyx)
    np.testing.assert_allclose(r, rows, atol=1e-9)
    np.testing.assert_allclose(c, cols, atol=1e-9)
    np.testing.assert_allclose(d, 1.5, atol=1e-9)
    inv = t.inverse()
    np.testing.assert_allclose(inv @ (zyx[2, 3] - t.origin), [rows[2, 3], cols[2, 3], 1.5], atol=1e-9)


def test_compose_with_similarity():
    t = pose()
    s = similarity_2d(30.0, 1.2, shift_rc=(3, -4), centre_rc=(10, 10))
    composed = t.compose(s)
    p = np.array([7.0, 9.0, 1.0])
    np.testing.assert_allclose(composed.apply(7, 9), t.apply(*(s @ p)[:2]))
    assert composed.scale == pytest.approx(0.6)
    m = t.compose(similarity_2d(mirror=True))
    assert m.mirrored != t.mirrored


def test_sample_plane_on_a_ramp():
    z, y, x = np.meshgrid(np.arange(40.0), np.arange(60.0), np.arange(80.0), indexing="ij")
    vol = (z + 0.5 * y - 0.25 * x).astype(np.float32)  # linear: trilinear sampling is exact
    t = pose()
    got = sample_plane(vol, t, (50, 60), order=1)
    zyx = t.apply(*np.meshgrid(np.arange(50.0), np.arange(60.0), indexing="ij"))
    np.testing.assert_allclose(got, zyx[..., 0] + 0.5 * zyx[..., 1] - 0.25 * zyx[..., 2], atol=1e-3)
    labels = np.zeros((40, 60, 80), np.uint8)
    labels[20:] = 3  # z >= 19.5 -> 3
    lab = sample_plane(labels, t, (50, 60), order=0)
    assert lab.dtype == np.uint8
    np.testing.assert_array_equal(lab, np.where(np.rint(zyx[..., 0]) >= 20, 3, 0))
    outside = sample_plane(vol, t.shifted((100, 0, 0)), (50, 60))
    assert np.isnan(outside).all()


def test_transform_json_round_trip(tmp_path):
    t = pose()
    write_transform(tmp_path / "s1.json", "s1", t, score=0.93)
    back, record = read_transform(tmp_path / "s1.json")
    np.testing.assert_array_equal(back.matrix, t.matrix)
    assert record["section"] == "s1" and record["score"] == 0.93
    assert json.loads((tmp_path / "s1.json").read_text())["map_to_ct"] == t.matrix.tolist()


def test_degenerate_matrix_is_refused():
    from mineral3d.errors import InputError
    with pytest.raises(InputError, match="degenerate"):
        PlaneTransform(np.zeros((3, 3)))

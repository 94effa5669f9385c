"""Sparse labels from registered maps, and validation scores on the voxel grid."""

from __future__ import annotations

import numpy as np
import pytest

from mineral3d.baseline import GreyClassifier
from mineral3d.labels import NO_LABEL, merge_labels, section_voxels, thicken
from mineral3d.plane import PlaneTransform
from mineral3d.validate import confusion_matrix, scores, section_validation


def _flat_plane(z: float, scale: float = 0.5, origin=(-0.25, -0.25)) -> PlaneTransform:
    return PlaneTransform(np.array([[0, 0, z], [scale, 0, origin[0]], [0, scale, origin[1]]], float))


def test_majority_of_pixels_per_voxel():
    # 0.5 voxels per pixel: each voxel holds a 2x2 block of pixels
    ids = np.zeros((8, 8), np.uint8)
    ids[0:2, 0:2] = [[1, 1], [1, 2]]          # voxel (y0, x0): 3 of 4 pixels are phase 1
    ids[0:2, 2:4] = [[2, 2], [1, 1]]          # a tie: goes to the lower id
    ids[2:4, 0:2] = 255                       # unclassified: no label
    ids[2:4, 2:4] = [[3, 255], [255, 255]]    # one classified pixel decides
    t = PlaneTransform(np.array([[0, 0, 5], [0.5, 0, -0.25], [0, 0.5, -0.25]], float))
    lab = section_voxels((10, 4, 4), ids, t)
    dense = lab.to_dense()
    assert dense[5, 0, 0] == 1 and dense[5, 0, 1] == 1 and dense[5, 1, 1] == 3
    assert dense[5, 1, 0] == NO_LABEL
    assert np.all(np.delete(dense, 5, axis=0) == NO_LABEL)
    frac = dict(zip(lab.index.tolist(), lab.fraction.tolist()))
    assert frac[np.ravel_multi_index((5, 0, 0), (10, 4, 4))] == pytest.approx(0.75)
    strict = section_voxels((10, 4, 4), ids, t, min_fraction=0.5)
    assert strict.to_dense()[5, 0, 1] == NO_LABEL and strict.to_dense()[5, 0, 0] == 1


def test_pixels_outside_the_volume_are_dropped_and_tilted_planes_cross_slices():
    ids = np.ones((40, 40), np.uint8)
    tilt = PlaneTransform.from_pose(centre_zyx=(10, 5, 5), map_shape=(40, 40), scale=0.5, tilt_deg=30)
    lab = section_voxels((20, 10, 10), ids, tilt)
    z = lab.zyx[:, 0]
    assert len(lab) > 0 and z.max() - z.min() >= 4          # the tilted plane spans several slices
    assert np.all((lab.zyx >= 0) & (lab.zyx < [20, 10, 10]))


def test_merge_drops_conflicts_and_thicken_copies_along_the_normal():
    a = section_voxels((6, 4, 4), np.full((8, 8), 1, np.uint8), _flat_plane(2))
    b = section_voxels((6, 4, 4), np.full((8, 8), 2, np.uint8), _flat_plane(2))
    c = section_voxels((6, 4, 4), np.full((8, 8), 2, np.uint8), _flat_plane(4))
    assert len(merge_labels([a, b])) == 0
    m = merge_labels([a, c]).to_dense()
    assert np.all(m[2] == 1) and np.all(m[4] == 2) and np.all(m[3] == NO_LABEL)
    t = thicken(a, (1, 0, 0), 1).to_dense()
    assert np.all(t[1:4] == 1) and np.all(t[0] == NO_LABEL) and np.all(t[5] == NO_LABEL)


def test_scores_from_confusion():
    ref = np.array([0, 0, 1, 1, 1, 2])
    pred = np.array([0, 1, 1, 1, 2, 2])
    c = confusion_matrix(ref, pred, [0, 1, 2, 4])
    assert c.tolist()[1] == [0, 2, 1, 0]
    s = scores(c, ["a", "b", "c", "d"])
    assert s["per_phase"]["b"]["iou"] == pytest.approx(2 / 4)
    assert s["per_phase"]["c"]["dice"] == pytest.approx(2 * 1 / (1 + 2))
    assert s["per_phase"]["d"]["iou"] is None
    assert s["accuracy"] == pytest.approx(4 / 6)


def test_section_validation_perfect_and_shifted():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, (8, 16, 16)).astype(np.uint8).repeat(2, axis=1).repeat(2, axis=2)[:, :16, :16]
    t = _flat_plane(3)
    ids = np.repeat(np.repeat(truth[3], 2, axis=0), 2, axis=1)  # the exact map at 2 pixels per voxel
    r = section_validation(truth, ids, t, [0, 1, 2], ["r", "a", "b"], truth=truth)
    assert all(v["iou"] == pytest.approx(1.0) for v in r["voxel_grid"]["per_phase"].values())
    assert r["ceiling"]["voxel_grid"]["accuracy"] == pytest.approx(1.0)
    assert r["modal"]["a"]["map"] == pytest.approx(r["modal"]["a"]["segmentation"])
    wrong = np.roll(truth, 1, axis=0)
    r2 = section_validation(wrong, ids, t, [0, 1, 2], ["r", "a", "b"])
    assert r2["voxel_grid"]["accuracy"] < 0.6


def test_grey_classifier_separates_gaussians():
    rng = np.random.default_rng(1)
    v = np.concatenate([rng.normal(0, 1, 5000), rng.normal(6, 1, 5000)])
    lab = np.repeat(np.array([3, 7], np.uint8), 5000)
    g = GreyClassifier.fit(v, lab)
    assert np.mean(g.predict(v) == lab) > 0.99
    assert GreyClassifier.from_dict(g.to_dict()).predict(np.array([0.0, 6.0])).tolist() == [3, 7]

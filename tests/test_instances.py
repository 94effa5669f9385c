"""Particle instances: touching and non-convex particles, chunked == in memory."""

from __future__ import annotations

import numpy as np
import pytest

from mineral3d.separation import InstanceConfig, particle_labels, particle_labels_chunked, separate_cluster

CFG = InstanceConfig(marker_radius=3, neck_ratio=0.7, min_voxels=30)


def _ball(shape, centre, r):
    z, y, x = np.ogrid[tuple(slice(0, s) for s in shape)]
    return (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= r * r


def test_two_particles_one_voxel_apart():
    shape = (30, 30, 50)
    a = _ball(shape, (15, 15, 14), 9)
    b = _ball(shape, (15, 15, 14 + 9 + 1 + 9 + 1), 9)   # faces 1 voxel apart
    assert not (a & b).any()
    lab = particle_labels(a | b, CFG)
    assert lab.max() == 2
    assert len(np.unique(lab[a])) == 1 and len(np.unique(lab[b])) == 1 and lab[a][0] != lab[b][0]


@pytest.mark.parametrize("overlap", [1, 3])
def test_touching_particles_with_a_neck_are_split(overlap):
    shape = (30, 30, 50)
    a = _ball(shape, (15, 15, 14), 9)
    b = _ball(shape, (15, 15, 14 + 18 - overlap), 9)   # merged through a neck
    lab = particle_labels(a | b, CFG)
    assert lab.max() == 2
    # each ball is (almost all) one particle
    assert np.mean(lab[a & ~b] == np.bincount(lab[a & ~b]).argmax()) > 0.97


def test_l_shaped_particle_is_one():
    m = np.zeros((24, 60, 60), bool)
    m[4:20, 5:55, 5:21] = True     # long arm
    m[4:20, 39:55, 5:55] = True    # foot
    lab = particle_labels(m, CFG)
    assert lab.max() == 1


def test_bent_plate_and_border_cut_particle_are_one():
    m = np.zeros((40, 40, 40), bool)
    m[0:12, 5:35, 5:35] = True      # a slab cut by the volume border (z = 0)
    m[12:36, 5:35, 5:12] = True     # bent upwards
    assert particle_labels(m, CFG).max() == 1


def _many_particles(seed=0, shape=(48, 80, 72)):
    rng = np.random.default_rng(seed)
    fg = np.zeros(shape, bool)
    for _ in range(40):
        c = rng.uniform([0, 0, 0], shape)
        fg |= _ball(shape, c, rng.uniform(4, 9))
    return fg


def test_chunked_equals_in_memory():
    fg = _many_particles()
    ref = particle_labels(fg, CFG)
    assert ref.max() > 15
    out = np.zeros(fg.shape, np.uint32)
    n = particle_labels_chunked(fg, out, CFG, chunks=(24, 32, 32))   # 2 x 3 x 3 = 18 chunks
    assert n == ref.max()
    np.testing.assert_array_equal(out, ref)


def test_every_foreground_voxel_gets_a_particle():
    fg = _many_particles(seed=3)
    lab = particle_labels(fg, CFG)
    np.testing.assert_array_equal(lab > 0, fg)
    ids = np.unique(lab[lab > 0])
    np.testing.assert_array_equal(ids, np.arange(1, ids.size + 1))


def test_config_from_the_sieve():
    c = InstanceConfig.for_sample(voxel_size_um=2.0, sieve_um=(63.0, 100.0))
    assert c.marker_radius == pytest.approx(63 / 2 / 4)
    assert c.min_voxels == int(np.pi / 6 * (63 / 2 / 3) ** 3)
    assert InstanceConfig.for_sample(voxel_size_um=3.0).marker_radius == pytest.approx(2.0)


def test_separate_cluster_small_input():
    lab, n = separate_cluster(np.ones((3, 3, 3), bool), CFG)
    assert n == 1 and lab.max() == 1


def test_instance_scores():
    from mineral3d.validate import instance_scores

    truth = np.zeros((10, 10, 30), np.uint32)
    truth[:, :, 0:10], truth[:, :, 10:20], truth[:, :, 20:30] = 1, 2, 3
    pred = truth.copy()
    s = instance_scores(pred, truth)
    assert s["f1"] == pytest.approx(1.0) and s["mean_iou_matched"] == pytest.approx(1.0)
    assert s["split"] == 0 and s["merges"] == 0
    pred[:, :, 10:20] = 1          # 1 and 2 merged
    pred[:, :, 25:30] = 4          # 3 split in halves
    s = instance_scores(pred, truth)
    assert s["merges"] == 1 and s["split"] == 1 and s["matched"] == 0
    assert s["f1"] == pytest.approx(0.0)


def test_typical_thickness_of_slabs_and_of_a_full_volume():
    from mineral3d.separation import typical_thickness

    fg = np.zeros((40, 40, 40), bool)
    fg[:, :, 10:20] = True  # a slab 10 voxels thick
    assert 9 <= typical_thickness(fg) <= 11
    assert typical_thickness(np.ones((20, 20, 20), bool)) == 8.0  # no background: undefined -> default


def _packed_spheres(n: int, seed: int, r=(7.0, 11.0), closeness=0.85) -> np.ndarray:
    """Spheres placed at random, centres at least ``closeness`` x (r1 + r2) apart: they touch
    through necks, and at this density one cluster of touching spheres spans the volume."""
    rng = np.random.default_rng(seed)
    centres, radii = np.zeros((0, 3)), np.zeros(0)
    for c, rr in zip(rng.uniform(0, n, (6000, 3)), rng.uniform(*r, 6000)):
        if np.all(np.linalg.norm(centres - c, axis=1) >= closeness * (radii + rr)):
            centres, radii = np.vstack([centres, c]), np.append(radii, rr)
    lab = np.zeros((n, n, n), np.uint32)
    for i, (c, rr) in enumerate(zip(centres, radii), 1):
        box = tuple(slice(max(0, int(a - rr)), min(n, int(a + rr) + 2)) for a in c)
        z, y, x = np.ogrid[box]
        sub = lab[box]
        sub[((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= rr * rr) & (sub == 0)] = i
    return lab


@pytest.mark.parametrize("seed", [0, 3])
def test_a_cluster_spanning_the_volume_is_separated_in_windows(seed, monkeypatch):
    """Touching particles that percolate: memory is bounded by the window, not the volume, and the
    particles are those of separating the cluster in one piece."""
    import cc3d

    from mineral3d import separation
    from mineral3d.validate import instance_scores

    truth = _packed_spheres(112, seed)
    fg = truth > 0
    comp = cc3d.connected_components(fg, connectivity=6)
    assert np.bincount(comp.reshape(-1))[1:].max() > 0.9 * fg.sum()   # one cluster holds almost everything
    whole = particle_labels(fg, InstanceConfig(marker_radius=2, min_voxels=100, window=1000, halo=14))
    config = InstanceConfig(marker_radius=2, min_voxels=100, window=56, halo=14)
    largest = []
    original = separation.separate_cluster

    def spy(mask, cfg):
        largest.append(mask.size)
        return original(mask, cfg)

    monkeypatch.setattr(separation, "separate_cluster", spy)
    lab = particle_labels(fg, config)
    assert max(largest) <= 56 ** 3
    np.testing.assert_array_equal(lab > 0, fg)
    ids = np.unique(lab[lab > 0])
    np.testing.assert_array_equal(ids, np.arange(1, ids.size + 1))
    same = instance_scores(lab, whole)
    assert lab.max() == whole.max() > 200
    assert same["f1"] > 0.995 and same["merges"] == 0
    # voxels whose particle is the one matched to their particle in the one-piece result
    n = int(whole.max()) + 1
    pair, inter = np.unique(lab[fg].astype(np.int64) * n + whole[fg], return_counts=True)
    size_w, size_l = np.bincount(whole.reshape(-1)), np.bincount(lab.reshape(-1))
    iou = inter / (size_l[pair // n] + size_w[pair % n] - inter)
    assert inter[iou > 0.5].sum() / fg.sum() > 0.995
    assert instance_scores(lab, truth)["f1"] >= instance_scores(whole, truth)["f1"] - 0.005
    out = np.zeros(fg.shape, np.uint32)
    assert particle_labels_chunked(fg, out, config, chunks=(40, 40, 40)) == lab.max()
    np.testing.assert_array_equal(out, lab)


def test_window_halo_from_the_sieve():
    c = InstanceConfig.for_sample(voxel_size_um=2.0, sieve_um=(63.0, 100.0))
    assert c.halo == int(np.ceil(0.75 * 100 / 2)) and c.window == 256
    assert InstanceConfig.for_sample(voxel_size_um=1.0, sieve_um=(100.0, 250.0)).halo == 64   # a quarter window

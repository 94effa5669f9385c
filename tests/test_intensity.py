"""Grey levels and the radial (cupping) trend: measured from the CT, removed by normalise."""

from __future__ import annotations

import numpy as np
import pytest

from mineral3d.baseline import GreyClassifier
from mineral3d.intensity import GreyLevels, NormalisedVolume
from mineral3d.phantom.ct import CTModel, forward
from mineral3d.phantom.microstructure import GEHLENITE, LIALO2, RESIN

SHAPE = (48, 160, 160)


def _spheres(seed: int, shape=SHAPE, n: int = 300):
    """Attenuation and phase ids of balls (radius 5 voxels) in resin, each cut by a random plane
    into LiAlO2 and gehlenite (a particle holds both phases, in a random proportion)."""
    rng = np.random.default_rng(seed)
    model = CTModel()
    ids = np.full(shape, RESIN, np.uint8)
    z, y, x = np.ogrid[:shape[0], :shape[1], :shape[2]]
    for _ in range(n):
        c = rng.uniform([6, 6, 6], np.array(shape) - 6)
        n = rng.normal(size=3)
        ball = (z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= 25
        side = (z - c[0]) * n[0] + (y - c[1]) * n[1] + (x - c[2]) * n[2] < rng.uniform(-4, 4) * np.linalg.norm(n)
        ids[ball & side] = LIALO2
        ids[ball & ~side] = GEHLENITE
    mu = np.vectorize(model.mu, otypes=[np.float32])(ids)
    return mu, ids


def _rho(shape):
    y = np.arange(shape[1]) - (shape[1] - 1) / 2
    x = np.arange(shape[2]) - (shape[2] - 1) / 2
    return np.broadcast_to(np.hypot(y[:, None], x[None, :]) / (0.5 * np.hypot(shape[1], shape[2])), shape)


@pytest.mark.parametrize("seed", [0, 1])
def test_the_radial_trend_makes_a_phase_read_the_same_at_the_rim_and_in_the_middle(seed):
    """Cupping of 15%: a grey classifier trained on the middle of the field (where the
    sections are) misreads the rim without the trend and reads it right with it."""
    mu, ids = _spheres(seed)
    ct = forward(mu, CTModel(cupping=0.15, noise_sigma=0.01, ring_amplitude=0.0), np.random.default_rng(seed))
    rho = _rho(SHAPE)
    interior = (ids != RESIN) & (ids == np.roll(ids, 2, 2)) & (ids == np.roll(ids, -2, 2)) \
        & (ids == np.roll(ids, 2, 1)) & (ids == np.roll(ids, -2, 1))
    middle, rim = interior & (rho < 0.35), interior & (rho > 0.75)
    accuracy, offset = {}, {}
    for trend in (False, True):
        levels = GreyLevels.from_volume(ct, trend=trend)
        assert (levels.trend is not None) == trend
        if trend:  # a reconstruction written about its axis: the axis stays the slice centre, exactly
            assert levels.trend.centre_yx == ((SHAPE[1] - 1) / 2, (SHAPE[2] - 1) / 2)
        grey = levels.normalise(ct)
        clf = GreyClassifier.fit(grey[middle], ids[middle])
        accuracy[trend] = float(np.mean(clf.predict(grey[rim], priors=False) == ids[rim]))
        # each phase's level, rim minus middle, in units where the two phases differ by ~0.085
        offset[trend] = max(abs(np.median(grey[rim & (ids == k)]) - np.median(grey[middle & (ids == k)]))
                            for k in (LIALO2, GEHLENITE))
    assert offset[False] > 0.1, offset          # cupping moves a phase further than the phases differ
    assert offset[True] < offset[False] / 3, offset
    assert accuracy[True] > accuracy[False] + 0.15, accuracy


def test_a_flat_ct_gets_a_flat_trend():
    mu, _ = _spheres(2)
    ct = forward(mu, CTModel(cupping=0.0, ring_amplitude=0.0), np.random.default_rng(2))
    levels = GreyLevels.from_volume(ct, trend=True)
    plain = GreyLevels.from_volume(ct).normalise(ct)
    # the fitted mineral level changes by less than 2% of the resin-mineral contrast over the field
    r, m = levels.trend.levels_at(np.array(levels.trend.rho2_range))
    assert abs(m[1] - m[0]) < 0.02 * (levels.mineral - levels.resin), levels.trend
    # and material voxels read as without a trend, within 1% of the contrast (median)
    material = (plain > 0.5) & (plain < 1.2)
    assert np.median(np.abs(levels.normalise(ct) - plain)[material]) < 0.01


def test_normalise_with_a_trend_is_the_same_whole_in_blocks_and_per_voxel():
    mu, _ = _spheres(3)
    ct = forward(mu, CTModel(cupping=0.1), np.random.default_rng(3))
    levels = GreyLevels.from_volume(ct, trend=True)
    whole = levels.normalise(ct)
    key = (slice(5, 30), slice(17, 90), slice(60, 160))
    np.testing.assert_allclose(levels.normalise(ct[key], origin=(5, 17, 60)), whole[key], rtol=0, atol=1e-6)
    np.testing.assert_allclose(NormalisedVolume(ct, levels)[key], whole[key], rtol=0, atol=1e-6)
    strided = (slice(None, None, 7), slice(3, None, 5), slice(None, 100, 2))
    np.testing.assert_allclose(NormalisedVolume(ct, levels)[strided], whole[strided], rtol=0, atol=1e-6)
    idx = np.random.default_rng(0).integers(0, ct.size, 1000)
    np.testing.assert_allclose(levels.normalise_voxels(ct.reshape(-1)[idx], idx, ct.shape), whole.reshape(-1)[idx],
                               rtol=0, atol=1e-5)
    back = GreyLevels.from_dict(levels.to_dict())
    assert back == levels
    np.testing.assert_array_equal(back.normalise(ct[key], origin=(5, 17, 60)), levels.normalise(ct[key],
                                                                                              origin=(5, 17, 60)))


def test_levels_without_a_trend_keep_their_old_record():
    ct = forward(_spheres(4)[0], CTModel(), np.random.default_rng(4))
    levels = GreyLevels.from_volume(ct)
    assert levels.trend is None
    assert list(levels.to_dict()) == ["resin", "mineral", "threshold"]
    assert GreyLevels.from_dict({"resin": 1.0, "mineral": 2.0, "threshold": 1.5}).trend is None


def test_fill_outside_the_reconstruction_circle_does_not_make_a_trend():
    """Reconstructions often write 0 outside their circular field of view: those corners are
    neither resin nor mineral and must not bend the resin level towards the rim."""
    mu, _ = _spheres(5)
    ct = forward(mu, CTModel(cupping=0.0, ring_amplitude=0.0), np.random.default_rng(5))
    ct[:, _rho(SHAPE)[0] > 0.72] = 0
    levels = GreyLevels.from_volume(ct, trend=True)
    r, m = levels.trend.levels_at(np.array(levels.trend.rho2_range))
    assert abs(r[1] - r[0]) < 0.02 * (levels.mineral - levels.resin), levels.trend
    assert abs(m[1] - m[0]) < 0.02 * (levels.mineral - levels.resin), levels.trend


def test_the_axis_of_a_cropped_volume_is_found():
    """A volume cropped from a larger reconstruction (the axis 50 voxels off the crop's centre,
    in y and x): the trend is fitted about the real axis, and a phase then reads the same near
    it and far from it; centred on the crop, it would not."""
    big = (32, 240, 240)
    mu, ids = _spheres(6, big, 700)
    ct = forward(mu, CTModel(cupping=0.15, noise_sigma=0.01, ring_amplitude=0.0), np.random.default_rng(6))
    crop = (slice(None), slice(0, 140), slice(0, 140))
    ct, ids = np.ascontiguousarray(ct[crop]), ids[crop]
    axis = ((big[1] - 1) / 2, (big[2] - 1) / 2)  # (119.5, 119.5) in the crop; its centre is (69.5, 69.5)
    levels = GreyLevels.from_volume(ct, trend=True)
    assert np.hypot(*np.subtract(levels.trend.centre_yx, axis)) < 20, levels.trend  # 7-16 on seeds 6-8
    centred = GreyLevels.from_volume(ct, trend=True, find_axis=False)
    assert centred.trend.centre_yx == (69.5, 69.5)
    yy, xx = np.meshgrid(np.arange(140), np.arange(140), indexing="ij")
    r = np.broadcast_to(np.hypot(yy - axis[0], xx - axis[1]), ct.shape)
    interior = (ids != RESIN) & (ids == np.roll(ids, 2, 2)) & (ids == np.roll(ids, -2, 2)) \
        & (ids == np.roll(ids, 2, 1)) & (ids == np.roll(ids, -2, 1))
    near, far = interior & (r < 50), interior & (r > 120)

    def offset(lv):
        grey = lv.normalise(ct)
        return max(abs(np.median(grey[far & (ids == k)]) - np.median(grey[near & (ids == k)]))
                   for k in (LIALO2, GEHLENITE))

    plain = offset(GreyLevels.from_volume(ct))
    assert plain > 0.1                                   # the cupping moves a phase across the crop
    assert offset(levels) < plain / 3, (offset(levels), plain)      # 0.02-0.04 vs 0.14 on seeds 6-8
    assert offset(levels) < offset(centred) / 2, (offset(levels), offset(centred))

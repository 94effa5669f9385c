"""Delesse calibration: material fractions match the sections, resin stays as predicted."""

import numpy as np

from mineral3d.calibrate import classify, fit_class_bias


def _biased_probs(n=50_000, seed=0):
    rng = np.random.default_rng(seed)
    resin = rng.random(n) < 0.5
    is_a = rng.random(n) < 0.3                      # 30% of material is class 1
    pa = np.clip(np.where(is_a, 0.45, 0.25) + rng.normal(0, 0.1, n), 0.02, 0.96)
    prob = np.stack([np.full(n, 0.01), pa, 1 - pa - 0.01], 1)
    prob[resin] = [0.9, 0.05, 0.05]
    return prob, resin, is_a


def test_fit_matches_target_fractions_and_keeps_resin():
    prob, resin, is_a = _biased_probs()
    before = classify(prob.T, None)
    assert np.mean(before[~resin] == 1) < 0.15      # the network under-predicts class 1
    bias = fit_class_bias(prob, np.array([0.0, 0.3, 0.7]))
    after = classify(prob.T, bias)
    assert abs(np.mean(after[~resin] == 1) - 0.3) < 0.01
    np.testing.assert_array_equal(after == 0, before == 0)
    # closer to the truth than before: class 1 found better among material voxels (IoU and accuracy)
    m = ~resin

    def iou(pred):
        a = pred[m] == 1
        return np.sum(a & is_a[m]) / np.sum(a | is_a[m])

    assert iou(after) > iou(before) + 0.2, (iou(before), iou(after))
    assert np.mean((after[m] == 1) == is_a[m]) > np.mean((before[m] == 1) == is_a[m]) + 0.03
    assert bias[0] == 0


def test_absent_class_is_not_forced_out():
    prob, _, _ = _biased_probs()
    bias = fit_class_bias(prob, np.array([0.0, 1.0, 0.0]))
    assert np.all(bias == 0)                        # fewer than two classes to balance: nothing to do


def test_rare_class_without_signal_stays_bounded():
    prob, resin, _ = _biased_probs(seed=1)
    rng = np.random.default_rng(2)
    rare = rng.uniform(1e-5, 1e-3, len(prob))           # the network never ranks it first
    prob = np.column_stack([prob, rare])
    target = np.array([0.0, 0.3, 0.69, 0.01])
    bias = fit_class_bias(prob, target)
    assert np.all(np.abs(bias) <= 12)
    frac = np.bincount(classify(prob.T, bias)[~resin], minlength=4) / (~resin).sum()
    # no runaway: every share near its target, relative to the target (1% of it for the majors, 10% for
    # the rare class: its offset is bounded, so it can reach but not overshoot its share)
    np.testing.assert_allclose(frac[1:3], target[1:3], rtol=0.01)
    assert 0.9 * target[3] <= frac[3] <= 1.1 * target[3], frac[3]


def test_the_resin_offset_gives_labelled_voxels_their_resin_share_and_the_volume_its_material():
    """A network trained with resin under-weighted calls ambiguous surface voxels material;
    one offset fitted on labelled voxels puts the resin-material boundary back."""
    from mineral3d.calibrate import fit_background_offset

    rng = np.random.default_rng(3)
    n = 60_000
    resin = rng.random(n) < 0.7
    # evidence for resin, shifted by the under-weighting: about a tenth of the resin is called material
    score = np.where(resin, 2.0, -2.0) + rng.normal(0, 1.2, n) - 0.9
    p_resin = 1 / (1 + np.exp(-score))
    q = np.clip(rng.normal(0.45, 0.15, n), 0.01, 0.99)  # the share of the material evidence for phase 1
    prob = np.stack([p_resin, q * (1 - p_resin), (1 - q) * (1 - p_resin)], axis=1)
    before = classify(prob.T, None) == 0
    assert before.mean() < resin.mean() - 0.05
    lab = rng.choice(n, 5000, replace=False)  # the voxels the sections label
    offset = fit_background_offset(prob[lab], resin[lab])
    assert offset > 0
    bias = fit_class_bias(prob, np.array([0.0, 0.4, 0.6]), background_offset=offset)
    assert bias[0] == offset
    after = classify(prob.T, bias) == 0
    assert abs(after[lab].mean() - resin[lab].mean()) < 0.002  # fitted share on the labelled voxels
    assert abs(after.mean() - resin.mean()) < 0.01  # and on the whole volume
    assert np.mean(after == resin) > np.mean(before == resin) + 0.02
    # material phases still follow the sections' fractions among the voxels now called material
    frac = np.bincount(classify(prob.T, bias)[~after], minlength=3)[1:] / (~after).sum()
    np.testing.assert_allclose(frac, [0.4, 0.6], atol=0.01)
    # nothing to fit: only resin or no resin labelled
    assert fit_background_offset(prob[:10], np.ones(10, bool)) == 0.0
    assert fit_background_offset(prob[:10], np.zeros(10, bool)) == 0.0

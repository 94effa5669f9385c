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

"""The torch layer: sparse-label training, resuming, model files and tiled inference."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mineral3d.baseline import GreyClassifier
from mineral3d.errors import InputError
from mineral3d.intensity import GreyLevels
from mineral3d.nn import Model, NetworkConfig, TrainConfig, load_model, save_model, train
from mineral3d.nn.infer import InferConfig, predict_blocks, predict_probabilities
from mineral3d.phase_table import PhaseTable
from mineral3d.pipeline.segment_phases import check_model, segment_phases

TINY = NetworkConfig(out_channels=2, features=(4, 4, 8, 8, 16, 4))


def _blocks_volume(seed: int, shape=(32, 64, 64), cube: int = 8, contrast: float = 0.8):
    """Classes 0/1 in random cubes; grey = 0 or ``contrast`` plus unit noise (grey alone: ~65% right)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 2, [s // cube for s in shape])
    cls = coarse.repeat(cube, 0).repeat(cube, 1).repeat(cube, 2)
    grey = (cls * contrast + rng.normal(0, 1, shape)).astype(np.float32)
    return grey, cls.astype(np.int64)


def _plane_labels(cls: np.ndarray, z: int):
    zyx = np.stack(np.meshgrid([z], np.arange(cls.shape[1]), np.arange(cls.shape[2]), indexing="ij"), -1)
    zyx = zyx.reshape(-1, 3)
    return zyx, cls[tuple(zyx.T)]


def test_sparse_training_beats_the_grey_value_baseline():
    grey, cls = _blocks_volume(0)
    zyx, target = np.concatenate([_plane_labels(cls, 9)[0], _plane_labels(cls, 22)[0]]), None
    target = cls[tuple(zyx.T)]
    r = train(grey, zyx, target, TINY, TrainConfig(iterations=60, batch_size=2, patch=(16, 32, 32),
                                                   learning_rate=1e-2, warmup=5, seed=0))
    net = TINY.build()
    net.load_state_dict(r.state)
    test_grey, test_cls = _blocks_volume(1)  # a new volume: generalisation, not memory
    pred = predict_probabilities(net, test_grey, config=InferConfig(tile=(32, 32, 32))).argmax(0)
    base = GreyClassifier.fit(grey[tuple(zyx.T)], target).predict(test_grey)
    acc_cnn, acc_base = np.mean(pred == test_cls), np.mean(base == test_cls)
    assert acc_base < 0.7
    assert acc_cnn > acc_base + 0.15, (acc_cnn, acc_base)


def test_resumed_training_equals_uninterrupted(tmp_path):
    grey, cls = _blocks_volume(2, shape=(16, 32, 32))
    zyx, target = _plane_labels(cls, 8)
    cfg = TrainConfig(iterations=8, batch_size=1, patch=(16, 32, 32), checkpoint_every=3, seed=3, warmup=2)
    full = train(grey, zyx, target, TINY, cfg)
    ckpt = tmp_path / "ckpt.pt"

    def stop(i, n, loss):
        if i == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(grey, zyx, target, TINY, cfg, checkpoint=ckpt, progress=stop)
    assert ckpt.exists()
    resumed = train(grey, zyx, target, TINY, cfg, checkpoint=ckpt)
    assert resumed.resumed_at == 6 and not ckpt.exists()
    for k, v in full.state.items():
        torch.testing.assert_close(resumed.state[k], v, rtol=0, atol=0)
    again = train(grey, zyx, target, TINY, cfg)
    assert all(torch.equal(again.state[k], v) for k, v in full.state.items())  # same seed, same weights


def _model(tmp_path, voxel=2.0) -> Model:
    torch.manual_seed(0)
    net = NetworkConfig(out_channels=3, features=(4, 4, 8, 8, 16, 4))
    table = PhaseTable.from_text("id,name,color\n0,resin,#000000\n1,a,#ff0000\n2,b,#00ff00\n", target="a")
    return Model(network=net, classes=[0, 1, 2], voxel_size_um=voxel, levels=GreyLevels(10.0, 110.0, 60.0),
                 phase_table=table, state=net.build().state_dict(), info={"note": "x"})


def test_model_folder_round_trip_and_errors(tmp_path):
    m = _model(tmp_path)
    save_model(tmp_path / "m", m)
    back = load_model(tmp_path / "m")
    assert back.classes == [0, 1, 2] and back.voxel_size_um == 2.0 and back.levels == m.levels
    assert back.phase_table.target == "a" and back.info == {"note": "x"}
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(back.build()(x), m.build()(x))
    with pytest.raises(InputError, match="model folder not found"):
        load_model(tmp_path / "nope")
    (tmp_path / "m" / "model.json").write_text("{broken")
    with pytest.raises(InputError, match="not valid JSON"):
        load_model(tmp_path / "m")
    save_model(tmp_path / "m2", m)
    meta = json.loads((tmp_path / "m2" / "model.json").read_text())
    meta["classes"] = [0, 1]
    (tmp_path / "m2" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="2 classes for 3 output channels"):
        load_model(tmp_path / "m2")


def test_model_must_fit_the_volume(tmp_path):
    m = _model(tmp_path)
    assert check_model(m, voxel_size_um=2.04, phase_table=m.phase_table, allow_resample=False, source="ct") == 1.0
    with pytest.raises(InputError, match="voxel size 3 µm differs from the model's 2 µm"):
        check_model(m, voxel_size_um=3.0, phase_table=m.phase_table, allow_resample=False, source="ct")
    assert check_model(m, voxel_size_um=3.0, phase_table=None, allow_resample=True, source="ct") == 1.5
    other = PhaseTable.from_text("id,name,color\n0,resin,#000000\n1,a,#ff0000\n2,c,#00ff00\n")
    with pytest.raises(InputError, match="phase table differs"):
        check_model(m, voxel_size_um=2.0, phase_table=other, allow_resample=False, source="ct")


def test_tiled_equals_whole_volume_inference(tmp_path):
    m = _model(tmp_path)
    net = m.build()
    rng = np.random.default_rng(0)
    vol = rng.normal(60, 40, (40, 72, 56)).astype(np.float32)
    whole = predict_probabilities(net, m.levels.normalise(vol), config=InferConfig(precision="fp32"))
    # one block holding the whole volume: exactly the whole-volume sliding window
    cfg = InferConfig(block=(64, 128, 128), precision="fp32")
    (number, sl, prob), = list(predict_blocks(vol, m.levels.normalise, net, config=cfg))
    np.testing.assert_allclose(prob, whole, atol=1e-5)
    # written through Zarr block by block (8 blocks): the same phases almost everywhere
    r = segment_phases(vol, voxel_size_um=2.0, model=m, out=tmp_path / "seg.zarr", device="cpu",
                       config=InferConfig(block=(20, 36, 28), halo=16, precision="fp32"))
    import zarr

    got = zarr.open_array(store=str(tmp_path / "seg.zarr" / "phases"), mode="r")[...]
    assert r.blocks == 8
    whole = predict_probabilities(net, r.levels.normalise(vol), config=InferConfig(precision="fp32"))
    assert np.mean(got == np.array(m.classes)[whole.argmax(0)]) > 0.995


def test_mirrored_inference_averages_the_flipped_passes(tmp_path):
    import dataclasses

    m = _model(tmp_path)
    net = m.build()
    x = m.levels.normalise(np.random.default_rng(1).normal(60, 40, (64, 64, 64)).astype(np.float32))
    one = InferConfig(precision="fp32", z_pad=0, tta="none")

    def pred(image, tta):
        return predict_probabilities(net, np.ascontiguousarray(image), config=dataclasses.replace(one, tta=tta))

    # "flips": the mean of the pass as it is and the passes flipped along z, y and x (flipped back)
    manual = (pred(x, "none") + sum(np.flip(pred(np.flip(x, a), "none"), a + 1) for a in range(3))) / 4
    np.testing.assert_allclose(pred(x, "flips"), manual, atol=1e-5)
    # all 8 flips: the prediction of a flipped CT is the flipped prediction; one pass is not
    for a in range(3):
        np.testing.assert_allclose(np.flip(pred(np.flip(x, a), "all-flips"), a + 1), pred(x, "all-flips"), atol=1e-5)
    assert np.abs(np.flip(pred(np.flip(x, 1), "none"), 2) - pred(x, "none")).max() > 1e-3
    with pytest.raises(ValueError, match="tta"):
        InferConfig(tta="rotations")


def test_run_config_rejects_an_unknown_tta():
    from mineral3d.pipeline.run import RunConfig

    assert RunConfig.from_dict({"segment": {"tta": "all-flips"}}).segment.tta == "all-flips"
    with pytest.raises(InputError, match="segment.tta"):
        RunConfig.from_dict({"segment": {"tta": "rotate"}})


def test_segmentation_resumes_after_an_interruption(tmp_path):
    import zarr

    m = _model(tmp_path)
    vol = np.random.default_rng(1).normal(60, 40, (32, 48, 48)).astype(np.float32)
    cfg = InferConfig(block=(16, 48, 48), halo=8, precision="fp32")
    ref = segment_phases(vol, voxel_size_um=2.0, model=m, out=tmp_path / "a.zarr", device="cpu", config=cfg)
    assert ref.blocks == 2 and not (tmp_path / "a.zarr" / ".phases.partial").exists()
    calls = []

    def stop(done, total):
        calls.append(done)
        if done == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        segment_phases(vol, voxel_size_um=2.0, model=m, out=tmp_path / "b.zarr", device="cpu", config=cfg,
                       progress=stop)
    assert not (tmp_path / "b.zarr" / "phases").exists()  # nothing that looks finished
    r = segment_phases(vol, voxel_size_um=2.0, model=m, out=tmp_path / "b.zarr", device="cpu", config=cfg)
    assert r.resumed_blocks == 1
    a = zarr.open_array(store=str(tmp_path / "a.zarr" / "phases"), mode="r")[...]
    b = zarr.open_array(store=str(tmp_path / "b.zarr" / "phases"), mode="r")[...]
    np.testing.assert_array_equal(a, b)


def test_resampled_inference_keeps_the_shape(tmp_path):
    m = _model(tmp_path)
    vol = np.random.default_rng(2).normal(60, 40, (24, 40, 40)).astype(np.float32)
    cfg = InferConfig(block=(64, 64, 64), precision="fp32")
    (_, sl, prob), = list(predict_blocks(vol, m.levels.normalise, m.build(), config=cfg, zoom=1.5))
    assert prob.shape == (3, 24, 40, 40)
    np.testing.assert_allclose(prob.sum(0), 1.0, atol=1e-4)


def _spheres_ct(sigma: float, seed: int = 0, shape=(64, 96, 96)) -> np.ndarray:
    """Random spheres (grey 1000 + 9000 inside), blurred by a Gaussian of ``sigma`` voxels, a little noise."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    zz, yy, xx = np.indices(shape)
    inside = np.zeros(shape, bool)
    for _ in range(12):
        c, r = rng.uniform(0, shape), rng.uniform(10, 20)
        inside |= (zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 < r * r
    grey = ndimage.gaussian_filter(1000 + 9000 * inside.astype(np.float32), sigma)
    return (grey + rng.normal(0, 150, shape)).astype(np.float32)


def test_edge_blur_is_measured_in_voxels():
    from mineral3d.intensity import edge_sigma_vox

    for sigma in (0.5, 1.0, 1.5):
        got = edge_sigma_vox(_spheres_ct(sigma))
        assert abs(got - sigma) < 0.1, (sigma, got)
    assert np.isnan(edge_sigma_vox(np.full((40, 40, 40), 7.0, np.float32)))  # no edge: nothing to measure


def test_a_ct_as_sharp_in_voxels_is_used_at_its_own_voxels(tmp_path):
    import dataclasses

    from mineral3d.intensity import edge_sigma_vox

    m = dataclasses.replace(_model(tmp_path), edge_sigma_vox=edge_sigma_vox(_spheres_ct(1.0, seed=1)))
    same = _spheres_ct(1.0, seed=2)   # another voxel size, same blur in voxels: no resampling
    assert check_model(m, voxel_size_um=3.0, phase_table=None, allow_resample=True, source="ct", ct=same) == 1.0
    blurry = _spheres_ct(2.0, seed=2)  # twice as blurred: shrunk until its edges look like the training CT's
    zoom = check_model(m, voxel_size_um=3.0, phase_table=None, allow_resample=True, source="ct", ct=blurry)
    assert 0.45 < zoom < 0.65
    with pytest.raises(InputError, match="pass --allow-resample"):  # a voxel size change still needs consent
        check_model(m, voxel_size_um=3.0, phase_table=None, allow_resample=False, source="ct", ct=same)


def test_a_ct_from_other_scan_settings_is_told_apart(tmp_path):
    import dataclasses

    from mineral3d.intensity import edge_sigma_vox
    from mineral3d.pipeline.grades import with_scan_note
    from mineral3d.pipeline.segment_phases import scan_difference

    m = dataclasses.replace(_model(tmp_path), edge_sigma_vox=edge_sigma_vox(_spheres_ct(1.0, seed=1)))
    same = scan_difference(m, _spheres_ct(1.0, seed=2))
    assert not same["differs"] and abs(same["relative"]) < 0.1
    sharp = scan_difference(m, _spheres_ct(0.5, seed=2))  # as the varied phantom's 0.67 vs 1.14 voxels
    assert sharp["differs"] and -0.6 < sharp["relative"] < -0.35
    # resampled by the blur ratio, as check_model does for another voxel size, it looks alike again
    assert not scan_difference(m, _spheres_ct(2.0, seed=2), zoom=0.5)["differs"]
    assert scan_difference(dataclasses.replace(m, edge_sigma_vox=None), _spheres_ct(1.0)) is None
    trust = {"status": "unchecked", "reason": "no registered validation section"}
    assert with_scan_note(trust, same) == {**trust, "scan": same}  # alike: the reason is unchanged
    noted = with_scan_note(trust, sharp)
    assert noted["status"] == "unchecked" and noted["scan"] == sharp
    assert noted["reason"].startswith(trust["reason"]) and "not like the model's training CT" in noted["reason"]
    assert noted["reason"].endswith("or check with a validation section)")
    # a held-out section that already disagrees: only the way out is added
    bad = with_scan_note({"status": "untrusted", "reason": "target share off"}, sharp)
    assert bad["status"] == "untrusted" and bad["reason"].endswith("(train on this sample's own sections)")
    assert with_scan_note(trust, None) is trust


def test_class_weights_give_every_class_the_same_total_weight_at_power_one():
    from mineral3d.nn.train import class_weights

    target = np.array([0] * 90 + [1] * 10 + [3] * 1)
    w = class_weights(target, 4, 1.0, "cpu").numpy()
    counts = np.bincount(target, minlength=4)
    totals = w * counts
    np.testing.assert_allclose(totals[[0, 1, 3]], totals[0], rtol=1e-6)  # each present class the same in total
    assert w[2] == 0  # an absent class gets no weight
    np.testing.assert_allclose((w * counts).sum(), counts.sum(), rtol=1e-6)  # mean weight 1 per labelled voxel
    half = class_weights(target, 4, 0.5, "cpu").numpy()
    np.testing.assert_allclose(half[1] / half[0], 3.0, rtol=1e-6)  # sqrt(90 / 10)
    assert class_weights(target, 4, 0.0, "cpu") is None
    with pytest.raises(InputError, match="class_weight"):
        TrainConfig(class_weight=1.5)


_TRAIN_IN_A_PROCESS = """
import hashlib
import numpy as np
from mineral3d.nn import NetworkConfig, TrainConfig, train
rng = np.random.default_rng(0)
grey = rng.normal(0, 1, (32, 96, 96)).astype(np.float32)
zyx = np.stack(np.meshgrid([16], np.arange(96), np.arange(96), indexing="ij"), -1).reshape(-1, 3)
target = np.digitize(grey[16].reshape(-1), [0.0, 1.0])
r = train(grey, zyx, target, NetworkConfig(out_channels=3), TrainConfig(iterations=2, warmup=1))
h = hashlib.sha256()
for v in r.state.values():
    h.update(v.numpy().tobytes())
print(h.hexdigest())
"""


def test_training_gives_the_same_weights_in_another_process():
    # the default network and patch, default precision: bf16 weight gradients on CPU differed
    # from process to process (in the deepest level), so "auto" trains in fp32 there
    import subprocess
    import sys

    runs = [subprocess.run([sys.executable, "-c", _TRAIN_IN_A_PROCESS], capture_output=True, text=True, check=True)
            .stdout.strip() for _ in range(3)]
    assert len(runs[0]) == 64 and runs.count(runs[0]) == 3, runs


def test_training_reads_a_lazy_ct_patch_by_patch_with_the_same_batches(tmp_path):
    """A CT not held in memory (Zarr) gives the same patches, targets and weights as the array."""
    import zarr

    from mineral3d.intensity import NormalisedVolume
    from mineral3d.nn.train import PatchSampler

    grey, cls = _blocks_volume(4, shape=(32, 64, 64))
    zyx = np.concatenate([_plane_labels(cls, 9)[0], _plane_labels(cls, 22)[0][::3]])
    target = cls[tuple(zyx.T)]
    weight = np.random.default_rng(0).uniform(0.5, 2, len(zyx))
    focus = np.arange(len(zyx)) % 7 == 0
    levels = GreyLevels(0.0, 0.8, 0.4)
    arr = zarr.create_array(store=str(tmp_path / "ct.zarr"), shape=grey.shape, chunks=(16, 32, 32), dtype=np.float32)
    arr[...] = grey
    cfg = TrainConfig(batch_size=3, patch=(16, 32, 32), seed=5)
    dense = PatchSampler(levels.normalise(grey), zyx, target, 2, cfg, weight=weight, focus=focus)
    lazy = PatchSampler(NormalisedVolume(arr, levels), zyx, target, 2, cfg, weight=weight, focus=focus)
    assert lazy.lazy and not hasattr(lazy, "dense")
    r1, r2 = np.random.default_rng(1), np.random.default_rng(1)
    for _ in range(5):
        a, b = dense.weighted_batch(r1), lazy.weighted_batch(r2)
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    assert (a[1] >= 0).sum() > 0   # the patches hold labelled voxels

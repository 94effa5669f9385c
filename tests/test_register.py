"""Registration finds the true plane of generated sections and refuses what does not match."""


import numpy as np
import pytest

from mineral3d.io import open_sample, read_transform
from mineral3d.plane import similarity_2d
from mineral3d.register import RegistrationError, ct_indicator, otsu_threshold, register_section


def corner_error(est, truth, shape):
    h, w = shape
    r, c = [0, 0, h - 1, h - 1], [0, w - 1, 0, w - 1]
    return np.linalg.norm(est.apply(r, c) - truth.apply(r, c), axis=1).max()


def normal_error(est, truth):
    return np.rad2deg(np.arccos(min(1.0, abs(float(np.dot(est.normal, truth.normal))))))


@pytest.fixture(scope="module")
def prepared(small_sample):
    s = open_sample(small_sample)
    return s, ct_indicator(s.ct())


def test_otsu_splits_two_populations():
    v = np.concatenate([np.random.default_rng(0).normal(10, 1, 5000), np.random.default_rng(1).normal(30, 2, 3000)])
    assert 12 < otsu_threshold(v) < 25  # anywhere in the gap between the classes


@pytest.mark.parametrize("name", ["s1", "s3"])
def test_finds_the_true_plane(prepared, name):
    s, ind = prepared
    ids, truth = s.section_map(name), s.truth_transform(name)
    r = register_section(s.ct(), ids, scale=s.nominal_scale(name), indicator=ind)
    assert corner_error(r.transform, truth, ids.shape) <= 1.0
    assert normal_error(r.transform, truth) <= 0.5
    assert not r.mirrored
    assert r.score > 0.9 and (1 - r.runner_up) > 2 * (1 - r.score)


def test_mirrored_map_is_detected(prepared):
    s, ind = prepared
    ids, truth = s.section_map("s2"), s.truth_transform("s2")
    h, w = ids.shape
    mirrored = ids[:, ::-1]  # the section seen from below
    truth_m = truth.compose(similarity_2d(mirror=True, shift_rc=(0, w - 1)))
    r = register_section(s.ct(), mirrored, scale=s.nominal_scale("s2"), indicator=ind)
    assert r.mirrored
    assert corner_error(r.transform, truth_m, ids.shape) <= 1.0


def test_noise_is_rejected(prepared):
    s, ind = prepared
    noise = np.random.default_rng(0).choice([0, 1, 2], (200, 240), p=[0.7, 0.1, 0.2]).astype(np.uint8)
    with pytest.raises(RegistrationError):
        register_section(s.ct(), noise, scale=0.5, indicator=ind)


def test_two_particles_cannot_fix_the_tilt(prepared):
    from mineral3d.register import particle_anchors
    s, ind = prepared
    ids = np.zeros((200, 240), np.uint8)
    ids[30:90, 30:100] = 2
    ids[120:180, 150:220] = 1
    assert particle_anchors(ids) == (2, 0.0)
    with pytest.raises(RegistrationError, match="2 separate particle region"):
        register_section(s.ct(), ids, scale=0.5, indicator=ind)
    ids[20:60, 180:230] = 2  # a third region off the line
    n, spread = particle_anchors(ids)
    assert n == 3 and spread > 0.05


def test_map_without_outlines_is_rejected(prepared):
    s, ind = prepared
    with pytest.raises(RegistrationError, match="no particle/resin outlines"):
        register_section(s.ct(), np.zeros((100, 100), np.uint8), scale=0.5, indicator=ind)


def test_cli_writes_transform_and_overlay(sample_copy, tmp_path, capsys):
    from mineral3d.cli import main
    out = tmp_path / "reg"
    with pytest.raises(SystemExit) as exc:
        main(["register", str(sample_copy), "--out", str(out), "--section", "s1"])
    assert exc.value.code in (0, None), capsys.readouterr().err
    t, rec = read_transform(out / "s1.json")
    assert rec["section"] == "s1" and rec["score"] > 0.9 and "runner_up" in rec and "search" in rec
    truth = open_sample(sample_copy).truth_transform("s1")
    assert corner_error(t, truth, open_sample(sample_copy).section_map("s1").shape) <= 1.0
    assert (out / "s1_overlay.png").stat().st_size > 1000


def test_cli_exit_code_3_for_a_foreign_map(sample_copy, tmp_path, capsys):
    import tifffile

    from mineral3d.cli import main
    ids = tifffile.imread(sample_copy / "sections" / "s1.tif")
    rng = np.random.default_rng(3)
    tifffile.imwrite(sample_copy / "sections" / "s1.tif", rng.choice([0, 2], ids.shape).astype(np.uint8))
    out = tmp_path / "reg"
    with pytest.raises(SystemExit) as exc:
        main(["register", str(sample_copy), "--out", str(out), "--section", "s1"])
    err = capsys.readouterr().err
    assert exc.value.code == 3
    assert "not registered" in err and "Traceback" not in err
    assert not (out / "s1.json").exists()


def test_cli_unknown_section(sample_copy, tmp_path, capsys):
    from mineral3d.cli import main
    with pytest.raises(SystemExit) as exc:
        main(["register", str(sample_copy), "--out", str(tmp_path / "r"), "--section", "nope"])
    assert exc.value.code == 2
    assert "no section named 'nope'" in capsys.readouterr().err


def test_any_orientation_finds_a_plane_normal_to_x(prepared):
    from mineral3d.plane import PlaneTransform
    from mineral3d.register import RegisterConfig
    s, _ = prepared
    ct = np.ascontiguousarray(s.ct().transpose(2, 1, 0))  # z <-> x: the sections become near-x planes
    swap = np.eye(3)[[2, 1, 0]]
    ids = s.section_map("s1")
    truth = PlaneTransform(swap @ s.truth_transform("s1").matrix)
    assert truth.tilt_deg > 80
    r = register_section(ct, ids, scale=s.nominal_scale("s1"), config=RegisterConfig.for_orientation("any"))
    assert corner_error(r.transform, truth, ids.shape) <= 1.0
    assert normal_error(r.transform, truth) <= 0.5
    assert r.mirrored  # swapping two axes is a reflection


@pytest.mark.parametrize("outside", [0.2])
def test_map_larger_than_the_ct_field(prepared, outside):
    """A map that reaches beyond the CT's field of view is registered on the part inside."""
    s, _ = prepared
    ids, truth = s.section_map("s1"), s.truth_transform("s1")
    pts = truth.grid(ids.shape).reshape(3, -1)
    x0 = int(np.ceil(pts[2].min() + outside * np.ptp(pts[2])))  # cut the CT through the map
    ct = np.ascontiguousarray(s.ct()[:, :, x0:])
    inside = (pts[2] - x0 >= -0.5).mean()
    assert 0.75 < inside < 0.85
    shifted = truth.shifted((0, 0, -x0))
    r = register_section(ct, ids, scale=s.nominal_scale("s1"))
    assert corner_error(r.transform, shifted, ids.shape) <= 1.0  # corners outside the CT included
    assert normal_error(r.transform, shifted) <= 0.5
    assert r.overlap == pytest.approx(inside, abs=0.03)
    assert r.score > 0.9 and (1 - r.runner_up) > 2 * (1 - r.score)
    # less of the map inside than min_overlap: refused, not placed
    with pytest.raises(RegistrationError):
        register_section(np.ascontiguousarray(s.ct()[:, :, int(pts[2].min() + 0.5 * np.ptp(pts[2])):]), ids,
                         scale=s.nominal_scale("s1"))


def test_bse_fills_unclassified_pixels(prepared, small_sample):
    """A map classified only in one corner: refused alone, registered with its BSE image."""
    from mineral3d.register import bse_particles
    s, ind = prepared
    ids, truth, bse = s.section_map("s1"), s.truth_transform("s1"), s.section_bse("s1")
    assert bse is not None
    mask, agree = bse_particles(bse, ids)
    assert mask is not None and agree > 0.95
    h, w = ids.shape
    partial = np.full_like(ids, 255)
    partial[: h // 3, : w // 3] = ids[: h // 3, : w // 3]  # EDS classified one field only
    with pytest.raises(RegistrationError, match="separate particle region"):
        register_section(s.ct(), partial, scale=s.nominal_scale("s1"), indicator=ind)
    r = register_section(s.ct(), partial, scale=s.nominal_scale("s1"), indicator=ind, bse=bse)
    assert corner_error(r.transform, truth, ids.shape) <= 1.0
    assert normal_error(r.transform, truth) <= 0.5
    assert r.settings["bse"].startswith("fills")
    # a BSE image of another section disagrees with the map and is not used
    other = s.section_bse("s2")
    m = min(other.shape[0], h), min(other.shape[1], w)
    foreign = np.zeros_like(bse)
    foreign[: m[0], : m[1]] = other[: m[0], : m[1]]
    assert bse_particles(foreign, ids)[0] is None


def test_cli_and_run_share_the_registration_record(sample_copy, tmp_path, capsys):
    """`mineral3d register` writes the same registration.json entries as the run's step, merged per call."""
    from mineral3d.cli import main
    from mineral3d.io.atomic import read_json
    out = tmp_path / "reg"
    for name in ("s1", "s2"):
        with pytest.raises(SystemExit) as exc:
            main(["register", str(sample_copy), "--out", str(out), "--section", name])
        assert exc.value.code in (0, None), capsys.readouterr().err
    rec = read_json(out / "registration.json")["sections"]
    assert sorted(rec) == ["s1", "s2"]
    assert rec["s1"]["registered"] and set(rec["s1"]) == {"role", "registered", "score", "runner_up", "tilt_deg",
                                                           "mirrored"}
    assert rec["s1"]["score"] == pytest.approx(read_transform(out / "s1.json")[1]["score"])


def test_a_ct_too_large_for_memory_is_registered_and_trained_on_without_reading_it_whole(sample_copy, tmp_path,
                                                                                         monkeypatch):
    """A CT over the in-memory limit is never read whole: registration searches a block-mean level and
    finishes on crops; training reads patches."""
    from mineral3d.io.sample import Sample
    from mineral3d.io.zarr_io import convert_to_zarr
    from mineral3d.pipeline import registration
    from mineral3d.register import RegisterConfig

    s0 = open_sample(sample_copy)
    convert_to_zarr(s0.config.ct, sample_copy / "ct.zarr", voxel_size_um=s0.voxel_size_um)
    toml = sample_copy / "sample.toml"
    toml.write_text(toml.read_text().replace('"ct.tif"', '"ct.zarr"'))
    s = open_sample(sample_copy)
    assert not isinstance(s.ct(), np.ndarray)
    monkeypatch.setattr("mineral3d.io.sample.WHOLE_CT_VOXELS", 0)
    monkeypatch.setattr(registration, "COARSE_LEVEL_VOXELS", int(np.prod(s.ct().shape)) // 8)   # factor 2

    def no_whole_read(self):
        raise AssertionError("the whole CT was read")

    monkeypatch.setattr(Sample, "ct_array", no_whole_read)
    record, results = registration.register_sections(s, tmp_path / "reg", RegisterConfig(), names=["s1", "s2"])
    assert set(results) == {"s1", "s2"}
    for name, r in results.items():
        ids, truth = s.section_map(name), s.truth_transform(name)
        assert r.settings["coarse_level_factor"] == 2
        assert corner_error(r.transform, truth, ids.shape) <= 1.0
        assert normal_error(r.transform, truth) <= 0.5
        assert (tmp_path / "reg" / f"{name}_overlay.png").is_file()
        assert read_transform(tmp_path / "reg" / f"{name}.json")[0].matrix == pytest.approx(r.transform.matrix)
    # a map whose particles are real but whose tiles are shuffled and flipped lies on no plane
    from mineral3d.register import register_section_coarse_to_fine

    ids = s.section_map("s1")
    th, tw = ids.shape[0] // 3, ids.shape[1] // 3
    tiles = [ids[i * th:(i + 1) * th, j * tw:(j + 1) * tw] for i in range(3) for j in range(3)]
    perm = np.random.default_rng(1).permutation(9)
    shuffled = np.block([[tiles[perm[3 * i + j]][:, ::1 if (i + j) % 2 else -1] for j in range(3)] for i in range(3)])
    with pytest.raises(RegistrationError, match="weak"):
        register_section_coarse_to_fine(s.ct(), shuffled, scale=s.nominal_scale("s1"),
                                        level=registration.coarse_level_of(s.ct()))

    # training on the registered sections reads patches (and the calibration's blocks) only
    from mineral3d.nn import TrainConfig
    from mineral3d.pipeline.segment_phases import train_on_sections

    model = train_on_sections(s, tmp_path / "reg", tmp_path / "model", sections=["s1", "s2"],
                              config=TrainConfig(iterations=20, seed=0))
    assert model.info["record"]["iterations"] == 20 and len(model.class_bias) == len(model.classes)

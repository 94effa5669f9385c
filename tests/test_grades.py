"""Section grade pairs, the grade calibration and the liberation trust signal (mineral3d.measure.grades)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import zarr

from mineral3d.measure import grades as G
from mineral3d.plane import PlaneTransform, cut_volume, sample_plane

pytestmark = pytest.mark.slow  # end-to-end: trains networks (`make test` runs all; `make test-fast` skips)

T, M = 1, 2  # target and matrix phase ids


def disks_map(grades, *, size=200, r=9, pitch=24, seed=0):
    """A map of disks on a grid, disk i holding a share grades[i] of target (left part)."""
    ids = np.zeros((size, size), np.uint8)
    yy, xx = np.mgrid[:size, :size]
    k = 0
    for cy in range(pitch // 2 + 2, size - r - 2, pitch):
        for cx in range(pitch // 2 + 2, size - r - 2, pitch):
            if k >= len(grades):
                return ids
            disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            cols = np.sort(xx[disk])
            cut = cols[min(len(cols) - 1, int(round(grades[k] * len(cols))))] if grades[k] < 1 else size
            ids[disk] = M
            ids[disk & (xx < cut)] = T
            k += 1
    return ids


def test_pairs_of_a_perfect_prediction_agree_and_sections_cut_by_the_ct_edge_are_marked():
    g = np.linspace(0, 1, 25)
    ids = disks_map(g)
    pred = ids.copy()
    pred[:, 155:] = 255  # outside the CT: sections cut by it are marked cut
    p = G.section_grade_pairs(ids, pred, pixel_size_um=1.5, target_id=T)
    assert list(p.columns) == list(G.PAIR_COLUMNS)
    assert 0 < (~p["cut"]).sum() < p["cut"].sum() + (~p["cut"]).sum() <= 25
    # a section cut by the CT's edge is compared on its pixels inside the CT only
    assert (p["cut"] & (p["material_um2"] < np.pi * 9 ** 2 * 1.5 ** 2 * 0.9)).any()
    np.testing.assert_allclose(p["pred_grade"], p["grade"])
    np.testing.assert_allclose(p["pred_material_um2"], p["material_um2"])
    assert (p["material_um2"] > 0).all()


def test_pairs_see_an_overcalled_target():
    ids = disks_map(np.full(25, 0.5))
    pred = ids.copy()
    pred[ids == M] = np.where(np.random.default_rng(0).random(int((ids == M).sum())) < 0.5, T, M)
    p = G.section_grade_pairs(ids, pred, pixel_size_um=1.0, target_id=T)
    assert len(p) == 25
    np.testing.assert_allclose(p["grade"], 0.5, atol=0.05)
    assert abs(p["pred_grade"].mean() - 0.75) < 0.02 and p["pred_grade"].min() > 0.65


def synthetic_pairs(true, pred, *, area=100.0):
    true, pred = np.asarray(true, float), np.asarray(pred, float)
    return pd.DataFrame({"section": np.arange(1, len(true) + 1), "cut": False, "ecd_um": 10.0, "material_um2": area,
                         "target_um2": area * true, "grade": true, "pred_material_um2": area,
                         "pred_target_um2": area * pred, "pred_grade": pred})


def biased(seed, n=150):
    rng = np.random.default_rng(seed)
    true = np.clip(rng.beta(0.6, 0.6, n), 0, 1)
    true[rng.random(n) < 0.2] = 1.0
    pred = np.clip(true + 0.5 * (1 - true) * (true > 0.4), 0, 1)  # mixed sections look purer
    return true, pred


def test_calibration_learns_an_overcalling_bias_and_corrects_a_held_out_section():
    train = {f"s{i}": synthetic_pairs(*biased(i)) for i in range(2)}
    cal = G.fit_grade_calibration(train)
    assert cal.applied, cal.note
    true, pred = biased(7)
    held = synthetic_pairs(true, pred)
    raw = G.liberation_agreement(held)
    fixed = G.liberation_agreement(held, calibration=cal)
    assert abs(fixed["target_share"]["difference"]) < 0.5 * abs(raw["target_share"]["difference"])
    assert G.GradeCalibration.from_dict(cal.to_dict()) == cal
    np.testing.assert_array_equal(cal.apply(np.array([-1.0, 2.0])), [0.0, 1.0])


def test_classical_calibration_gives_pure_and_barren_particles_their_grades_back():
    # a segmentation that calls 85% of target voxels target and 5% of the others target, on every section
    rng = np.random.default_rng(1)
    train = {}
    for i in range(2):
        true = rng.random(60)
        true[:10], true[10:20] = 1.0, 0.0
        pred = 0.05 + 0.80 * true + rng.normal(0, 0.05, 60)  # scattered sections
        train[f"s{i}"] = synthetic_pairs(true, np.clip(pred, 0, 1))
    cal = G.fit_grade_calibration(train)
    assert cal.applied, cal.note
    assert cal.intercept == pytest.approx(0.05, abs=0.02) and cal.slope == pytest.approx(0.80, abs=0.03)
    # a whole particle averages its voxels: no scatter left, the inverse gives its grade back
    np.testing.assert_allclose(cal.apply(np.array([0.85, 0.05, 0.45])), [1.0, 0.0, 0.5], atol=0.04)
    assert cal.sd == pytest.approx(0.05 / 0.80, rel=0.25)


def test_calibration_of_an_unbiased_prediction_is_near_the_identity():
    rng = np.random.default_rng(3)
    train = {}
    for i in range(3):
        true = rng.random(120)
        train[f"s{i}"] = synthetic_pairs(true, true)
    cal = G.fit_grade_calibration(train)
    g = np.array([0.0, 0.3, 1.0])
    np.testing.assert_allclose(cal.apply(g), g, atol=1e-9)


def test_a_prediction_that_ignores_the_truth_is_not_inverted():
    rng = np.random.default_rng(4)
    train = {f"s{i}": synthetic_pairs(rng.random(50), np.full(50, 0.3)) for i in range(2)}
    cal = G.fit_grade_calibration(train)
    assert not cal.applied and "too weak" in cal.note


def test_too_few_sections_give_no_calibration():
    cal = G.fit_grade_calibration({"s1": synthetic_pairs([0.5, 0.6], [0.7, 0.8])})
    assert not cal.applied and "needed" in cal.note


def test_the_grade_error_model_tells_what_stays_in_a_particle_from_what_averages_out():
    rng = np.random.default_rng(5)
    n = 600
    area = rng.uniform(30, 3000, n)  # µm²
    true = rng.uniform(0.05, 1.0, n)
    s, k = 0.02, 4.0  # particle-level sd; noise variance x area (sd 0.37 at 30 µm², 0.037 at 3000 µm²)
    pred = true + rng.normal(0, s, n) + rng.normal(0, np.sqrt(k / area))
    pairs = synthetic_pairs(true, pred, area=area)
    fit_s, fit_k = G.fit_grade_error(pairs, G.GradeCalibration())
    assert fit_s == pytest.approx(s, abs=0.008) and fit_k == pytest.approx(k, rel=0.25)
    cal = G.GradeCalibration(particle_sd=fit_s, noise_um2=fit_k)
    # a 3D particle is as uncertain as its central section (π/4 ESD²)
    esd = np.array([60.0, 6.0])  # µm
    sd = cal.particle_spread(esd)
    np.testing.assert_allclose(sd, np.sqrt(fit_s ** 2 + fit_k / (np.pi / 4 * esd ** 2)), rtol=1e-9)
    assert fit_s <= sd[0] < 0.05 and sd[1] > 0.3
    # barren sections predicted barren do not enter; too few target-bearing sections: unknown (NaN)
    assert G.fit_grade_error(synthetic_pairs(np.zeros(50), np.zeros(50)), cal) is None
    assert np.isnan(G.GradeCalibration().particle_spread(esd)).all()
    # the calibration fit carries the error model, and it survives the model folder's JSON
    fitted = G.fit_grade_calibration({"s1": pairs.iloc[:300], "s2": pairs.iloc[300:]})
    assert fitted.particle_sd == pytest.approx(fit_s, abs=0.01) and fitted.noise_um2 > 0
    assert G.GradeCalibration.from_dict(fitted.to_dict()) == fitted
    old = {k_: v_ for k_, v_ in fitted.to_dict().items() if k_ not in ("particle_sd", "noise_um2")}
    assert G.GradeCalibration.from_dict(old).particle_sd is None  # a calibration stored before the error model


def test_the_liberation_interval_from_grade_uncertainty_covers_the_truth():
    from mineral3d.measure import liberation as lib

    rng = np.random.default_rng(6)
    ts = ("0.8", "0.9", "0.95")
    covered, width, holds_estimate = dict.fromkeys(ts, 0), dict.fromkeys(ts, 0.0), 0
    reps = 150
    for rep in range(reps):
        n = 60
        amount = rng.lognormal(10, 1, n)
        truth = np.clip(rng.beta(2.0, 0.8, n), 0, 1)  # many rich particles, several near each threshold
        sd = rng.uniform(0.01, 0.05, n)
        est = np.clip(truth + rng.normal(0, sd), 0, 1)
        pop = lib.Population(amount, amount * est, np.zeros(n), np.ones(n), np.arange(n))
        l_true = lib.cumulative_liberation(lib.Population(amount, amount * truth, np.zeros(n), np.ones(n),
                                                          np.arange(n)))
        iv = lib.grade_interval(pop, sd, n_draws=400, seed=rep)
        for i, t in enumerate(ts):
            lo, hi = iv[t]["ci95"]
            holds_estimate += lo - 1e-12 <= iv[t]["L"] <= hi + 1e-12
            covered[t] += lo - 1e-12 <= l_true[i] <= hi + 1e-12
            width[t] += (hi - lo) / reps
    assert all(covered[t] / reps >= 0.85 for t in ts), covered
    assert holds_estimate >= 0.95 * reps * len(ts)  # a percentile interval: nearly always around the estimate
    assert all(0.01 < width[t] < 0.3 for t in ts), width  # an interval, not everything
    # no uncertainty: the interval is the value; unknown uncertainty: no interval; a seed fixes the draws
    zero = lib.grade_interval(pop, np.zeros(n))
    assert all(zero[t]["ci95"] == pytest.approx([zero[t]["L"], zero[t]["L"]], abs=1e-12) for t in ts)
    assert all(v["ci95"] is None for v in lib.grade_interval(pop, np.full(n, np.nan)).values())
    assert lib.grade_interval(pop, sd, seed=3) == lib.grade_interval(pop, sd, seed=3)


def test_the_report_banner_gives_the_3d_liberation_with_its_interval():
    from mineral3d.report import _trust_banner

    summary = {"particles_inside": 49, "liberation_trust": {"status": "trusted", "reason": "agree"},
               "liberation_3d": {"0.8": 0.032, "0.9": 0.032, "0.95": None},
               "liberation_3d_ci95": {"0.8": [0.030, 0.095], "0.9": [0.029, 0.033], "0.95": None}}
    text = _trust_banner(summary)["text"]
    assert "49 particles" in text and "L(0.8) 3.2% (3.0 to 9.5%)" in text and "L(0.9) 3.2% (2.9 to 3.3%)" in text
    assert "L(0.95)" not in text and "read the range" in text  # 6.5 points wide at 0.8
    narrow = {**summary, "liberation_3d_ci95": {"0.8": [0.030, 0.035], "0.9": None, "0.95": None}}
    assert "read the range" not in _trust_banner(narrow)["text"]
    assert "interval" not in _trust_banner({**summary, "liberation_3d_ci95": {"0.8": None}})["text"]
    # the particles near the widest interval's threshold are named, with the target they hold
    named = {**summary, "target_phase": "LiAlO2", "liberation_3d_near_threshold": {
        "0.8": {"particles": [167, 59], "count": 2, "target_share": 0.108}, "0.9": None, "0.95": None}}
    assert "at 80%: particles 167, 59, holding 11% of the LiAlO2, lie within two standard deviations" in \
        _trust_banner(named)["text"]
    assert "particles 167" not in _trust_banner({**named, "liberation_3d_ci95": narrow["liberation_3d_ci95"]})["text"]


def test_the_particles_near_a_threshold_are_those_within_two_grade_sd():
    from mineral3d.measure import liberation as lib

    amount = np.array([100.0, 200.0, 50.0, 300.0, 80.0])
    grade = np.array([0.79, 0.85, 0.5, 0.95, 0.805])
    pop = lib.Population(amount, amount * grade, np.zeros(5), np.zeros(5), np.array([11, 12, 13, 14, 15]))
    sd = np.array([0.01, 0.01, 0.01, 0.001, 0.001])
    near = lib.near_threshold(pop, sd)
    total = (amount * grade).sum()
    # 0.79 +- 0.02 reaches 0.8; 0.805 +- 0.002 does not; 0.85 +- 0.02 does not
    assert near["0.8"]["particles"] == [11] and near["0.8"]["count"] == 1
    assert near["0.8"]["target_share"] == pytest.approx(79.0 / total)
    assert near["0.9"] == {"particles": [], "count": 0, "target_share": 0.0}
    assert near["0.95"]["particles"] == [14]  # exactly on the threshold
    sd[1] = 0.03  # 0.85 +- 0.06 now reaches 0.8 and 0.9; listed largest target first
    assert lib.near_threshold(pop, sd)["0.8"]["particles"] == [12, 11]
    assert lib.near_threshold(pop, sd)["0.9"]["particles"] == [12]
    assert all(v is None for v in lib.near_threshold(pop, np.full(5, np.nan)).values())


def test_agreement_trusts_a_good_prediction_and_flags_a_biased_one():
    true, pred = biased(11, n=200)
    good = G.liberation_agreement(synthetic_pairs(true, true), n_boot=200)
    bad = G.liberation_agreement(synthetic_pairs(true, pred), n_boot=200)
    assert good["status"] == "trusted", good["reason"]
    assert bad["status"] == "untrusted", bad["reason"]
    d = bad["thresholds"]["0.8"]
    assert d["predicted"] > d["map"] and d["ci95"][0] > 0
    few = G.liberation_agreement(synthetic_pairs(true[:5], pred[:5]), n_boot=50)
    assert few["status"] == "inconclusive"


def test_agreement_is_deterministic_for_a_seed():
    true, pred = biased(2)
    a = G.liberation_agreement(synthetic_pairs(true, pred), n_boot=100, seed=4)
    b = G.liberation_agreement(synthetic_pairs(true, pred), n_boot=100, seed=4)
    assert a == b


@pytest.mark.parametrize("tilt", [0.0, 4.0])
def test_cut_volume_equals_nearest_neighbour_resampling_and_reads_lazily(tilt, tmp_path):
    rng = np.random.default_rng(0)
    vol = rng.integers(0, 5, (20, 40, 50)).astype(np.uint8)
    tr = PlaneTransform.from_pose(centre_zyx=(10, 20, 25), map_shape=(60, 70), scale=0.5, tilt_deg=tilt,
                                  azimuth_deg=30.0)
    ref = sample_plane(vol, tr, (60, 70), order=0, cval=255)
    got = cut_volume(vol, tr, (60, 70))
    coords = tr.grid((60, 70))
    inside = np.all((coords >= -0.5) & (coords < np.array(vol.shape)[:, None, None] - 0.5), axis=0)
    np.testing.assert_array_equal(got[inside], ref[inside])
    assert (got[~inside] == 255).all()
    z = zarr.create_array(store=str(tmp_path / "v.zarr"), shape=vol.shape, dtype=np.uint8, chunks=(8, 16, 16))
    z[...] = vol
    np.testing.assert_array_equal(cut_volume(z, tr, (60, 70)), got)


def test_the_truth_is_trusted_and_an_overcalling_segmentation_is_flagged(sectioned_sample):
    """Pipeline level: section pairs cut from a volume on the registered planes (the sample's true
    transforms), the verdict in the summary and the report's banner."""
    import scipy.ndimage as ndi
    import tifffile

    from mineral3d.io.sample import open_sample
    from mineral3d.pipeline.grades import check_grades
    from mineral3d.pipeline.measure import MeasureConfig, measure
    from mineral3d.report import _trust_banner

    s = open_sample(sectioned_sample)
    reg = sectioned_sample / "truth" / "sections"
    truth = tifffile.imread(sectioned_sample / "truth" / "phases.tif")
    tid = s.phase_table.target_id
    train = [c.name for c in s.config.sections if c.role == "train"]
    val = [c.name for c in s.config.sections if c.role == "validation"]
    cal, _, good, pairs = check_grades(s, reg, truth, train=train, validation=val, n_boot=300)
    assert good["status"] == "trusted", good["reason"]
    assert set(pairs["role"]) == {"train", "validation"}
    # map vs the voxel-majority truth: the same grades up to voxelisation (area-weighted)
    err = np.average(np.abs(pairs["pred_grade"] - pairs["grade"]), weights=pairs["material_um2"])
    assert err < 0.03, err
    assert not cal.applied  # nothing to correct in the truth
    # the target over-called by one voxel around its crystals, a bias the (absent) train sections did not reveal
    bad_seg = truth.copy()
    bad_seg[ndi.binary_dilation(truth == tid) & (truth != 0)] = tid
    _, _, bad, _ = check_grades(s, reg, bad_seg, train=[], validation=val, n_boot=300)
    assert bad["status"] == "untrusted", bad["reason"]
    assert bad["target_share"]["difference"] > 0.05 and bad["target_share"]["ci95"][0] > 0
    labels = tifffile.imread(sectioned_sample / "truth" / "particles.tif")
    for verdict, seg, headline in ((good, truth, "checked against"), (bad, bad_seg, "Do not trust")):
        summary = measure(labels, seg, voxel_size_um=s.voxel_size_um, phase_table=s.phase_table,
                          config=MeasureConfig(n_boot=20, n_directions=8), trust=verdict)["summary"]
        assert summary["liberation_trust"]["status"] == verdict["status"]
        assert headline in _trust_banner(summary)["headline"]


def test_the_liberation_interval_carries_the_calibration_lines_own_uncertainty():
    """A line fitted on two train sections is itself uncertain, and that error is shared by
    every particle: with it the interval of L3D covers the truth; with the particles' own
    scatter alone it does not, as often as asked."""
    from functools import partial

    from mineral3d.measure import liberation as lib

    rng = np.random.default_rng(7)
    ts = ("0.8", "0.9", "0.95")
    a, b = -0.06, 1.06  # the segmentation's true line: low-grade sections under-called, pure ones right
    covered = {"with": dict.fromkeys(ts, 0), "without": dict.fromkeys(ts, 0)}
    reps = 80
    for rep in range(reps):
        train = {}
        for s in ("s1", "s2"):
            true = rng.uniform(0, 1, 18)
            train[s] = synthetic_pairs(true, np.clip(a + b * true + rng.normal(0, 0.06, 18), 0, 1))
        cal = G.fit_grade_calibration(train, n_boot=200, seed=rep)
        n = 60
        amount = rng.lognormal(10, 1, n)
        truth = np.clip(rng.beta(2.0, 0.8, n), 0, 1)
        sd = np.full(n, 0.01)
        raw = np.clip(a + b * truth + rng.normal(0, sd), 0, 1)
        pop = lib.Population(amount, amount * cal.apply(raw), np.zeros(n), np.ones(n), np.arange(n))
        l_true = lib.cumulative_liberation(lib.Population(amount, amount * truth, np.zeros(n), np.ones(n),
                                                          np.arange(n)))
        for key, centres in (("with", partial(cal.draw_grades, raw)), ("without", None)):
            iv = lib.grade_interval(pop, sd, n_draws=300, seed=rep, centres=centres)
            for i, t in enumerate(ts):
                lo, hi = iv[t]["ci95"]
                covered[key][t] += lo - 1e-12 <= l_true[i] <= hi + 1e-12
    assert all(covered["with"][t] / reps >= 0.85 for t in ts), covered
    assert sum(covered["without"].values()) < 0.8 * sum(covered["with"].values()), covered
    # the line's covariance is stored with the calibration and read back; older files have none
    assert cal.line_cov is not None and cal.line_cov[1][1] > 0 and cal.line_cov[0][1] < 0  # they trade off
    assert G.GradeCalibration.from_dict(cal.to_dict()) == cal
    old = {k: v for k, v in cal.to_dict().items() if k != "line_cov"}
    bare = G.GradeCalibration.from_dict(old)
    assert bare.line_cov is None
    np.testing.assert_array_equal(bare.draw_grades(raw, rng, 3), np.broadcast_to(cal.apply(raw), (3, n)))
    # not applied: lines drawn about the identity with the same uncertainty
    ident = G.GradeCalibration(line_cov=cal.line_cov)
    drawn = ident.draw_grades(np.array([0.5]), np.random.default_rng(0), 4000)[:, 0]
    assert drawn.mean() == pytest.approx(0.5, abs=0.01) and drawn.std() > 0.005

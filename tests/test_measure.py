"""Particle table and liberation: analytic shapes, brute force on generated truth, 2D vs 3D."""

import json

import numpy as np
import pandas as pd
import pytest

from mineral3d.io import open_sample
from mineral3d.measure import liberation as lib
from mineral3d.measure.particles import particle_table
from mineral3d.measure.sections2d import map_sections, virtual_sections
from mineral3d.measure.surface import CLASS_WEIGHTS, fit_weights, label_surfaces
from mineral3d.phase_table import Phase, PhaseTable
from mineral3d.pipeline.measure import MeasureConfig, measure, write_measurements

TABLE = PhaseTable((Phase(0, "resin", (0, 0, 0)), Phase(1, "LiAlO2", (31, 119, 180)),
                    Phase(2, "gehlenite", (255, 127, 14))), target="LiAlO2")


def ball(r, n=None, offset=(0.3, 0.1, 0.45)):
    n = n or int(2 * r + 8)
    c = np.array([n / 2] * 3) + offset
    z, y, x = np.meshgrid(*(np.arange(n),) * 3, indexing="ij")
    return ((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2) <= r * r, c


def test_sphere_volume_and_surface_within_2_percent():
    r = 20.0
    mask, _ = ball(r)
    labels = mask.astype(np.uint32)
    t = particle_table(labels, np.where(mask, 2, 0).astype(np.uint8), voxel_size_um=1.0, phase_table=TABLE)
    row = t.iloc[0]
    assert row.volume_um3 == pytest.approx(4 / 3 * np.pi * r**3, rel=0.02)
    assert row.surface_um2 == pytest.approx(4 * np.pi * r**2, rel=0.02)
    assert row.esd_um == pytest.approx(2 * r, rel=0.01)
    assert row.sphericity == pytest.approx(1.0, abs=0.03)
    # calipers of the voxel set (cubes): between the diameter and one voxel more
    assert 2 * r - 0.5 <= row.feret_min_um <= row.feret_max_um <= 2 * r + 1.1
    assert not row.touches_border


@pytest.mark.parametrize("voxel", [0.5, 2.0])
def test_units_scale_with_voxel_size(voxel):
    mask, _ = ball(12.0)
    t = particle_table(mask.astype(np.uint16), np.where(mask, 1, 0).astype(np.uint8), voxel_size_um=voxel,
                       phase_table=TABLE)
    one = particle_table(mask.astype(np.uint16), np.where(mask, 1, 0).astype(np.uint8), voxel_size_um=1.0,
                         phase_table=TABLE)
    assert t.volume_um3[0] == pytest.approx(one.volume_um3[0] * voxel**3)
    assert t.surface_um2[0] == pytest.approx(one.surface_um2[0] * voxel**2)
    assert t.feret_max_um[0] == pytest.approx(one.feret_max_um[0] * voxel)
    assert t.sphericity[0] == pytest.approx(one.sphericity[0])


@pytest.mark.parametrize("r", [10.0, 30.0])
def test_surface_of_spheres_of_other_sizes(r):
    mask, _ = ball(r, offset=(0.5, 0.5, 0.5))
    area, _ = label_surfaces(mask.astype(np.uint32))
    assert area[1] == pytest.approx(4 * np.pi * r**2, rel=0.02)


def test_a_box_has_exact_calipers_and_planar_surface():
    lab = np.zeros((30, 40, 50), np.uint32)
    lab[5:15, 5:25, 5:35] = 1  # 10 x 20 x 30 voxels
    t = particle_table(lab, (lab > 0).astype(np.uint8), voxel_size_um=1.0, phase_table=TABLE)
    assert t.feret_min_um[0] == pytest.approx(10, abs=0.05)
    assert t.feret_max_um[0] == pytest.approx(np.sqrt(10**2 + 20**2 + 30**2), abs=1.0)
    # faces parallel to the lattice are the estimator's worst case (weights are isotropic): -10%
    assert t.surface_um2[0] == pytest.approx(2 * (10 * 20 + 20 * 30 + 10 * 30), rel=0.12)
    assert [t.bbox_z0[0], t.bbox_z1[0], t.bbox_x0[0], t.bbox_x1[0]] == [5, 15, 5, 35]
    assert t.centroid_y[0] == pytest.approx(14.5)


def test_rotated_box_surface_and_calipers():
    from mineral3d.phantom.shapes import random_rotation
    rot = random_rotation(np.random.default_rng(4))
    half = np.array([8.0, 14.0, 22.0])
    n = 64
    p = np.stack(np.meshgrid(*(np.arange(n) - n / 2 + 0.37,) * 3, indexing="ij"), -1) @ rot  # local coords
    mask = np.all(np.abs(p) <= half, axis=-1)
    t = particle_table(mask.astype(np.uint32), mask.astype(np.uint8), voxel_size_um=1.0, phase_table=TABLE)
    a, b, c = 2 * half
    assert t.surface_um2[0] == pytest.approx(2 * (a * b + b * c + a * c), rel=0.03)
    assert t.feret_min_um[0] == pytest.approx(a, abs=1.5)
    assert t.feret_max_um[0] == pytest.approx(np.sqrt(a * a + b * b + c * c), abs=1.5)


def test_stored_weights_are_reproducible():
    np.testing.assert_allclose(fit_weights(), CLASS_WEIGHTS, rtol=1e-9, atol=1e-12)


def test_half_and_half_sphere():
    mask, c = ball(20.0)
    z = np.arange(mask.shape[0])[:, None, None]
    phases = np.where(mask, np.where(z < c[0], 1, 2), 0).astype(np.uint8)
    t = particle_table(mask.astype(np.uint32), phases, voxel_size_um=1.0, phase_table=TABLE)
    assert t.vol_LiAlO2[0] == pytest.approx(0.5, abs=0.01)
    assert t.vol_gehlenite[0] == pytest.approx(0.5, abs=0.01)
    assert t.surf_LiAlO2[0] == pytest.approx(0.5, abs=0.01)
    assert t.surf_gehlenite[0] == pytest.approx(0.5, abs=0.01)
    pop = lib.Population(t.material_um3.to_numpy(), t.material_um3.to_numpy() * t.vol_LiAlO2.to_numpy(),
                         t.surf_LiAlO2.to_numpy(), t.esd_um.to_numpy(), t.particle.to_numpy())
    assert pop.grade[0] == pytest.approx(0.5, abs=0.01)


def test_border_particle_is_flagged_and_left_out_of_liberation():
    lab = np.zeros((40, 40, 40), np.uint32)
    ph = np.zeros((40, 40, 40), np.uint8)
    lab[10:20, 10:20, 10:20] = 1
    ph[10:20, 10:20, 10:20] = 1  # liberated target, inside
    lab[0:10, 25:35, 25:35] = 2
    ph[0:10, 25:35, 25:35] = 2  # barren, touches z = 0
    lab[25:35, 25:35, 30:40] = 3
    ph[25:35, 25:35, 30:40] = 1  # liberated target, touches x = 39
    res = measure(lab, ph, voxel_size_um=1.0, phase_table=TABLE, config=MeasureConfig(n_boot=50))
    t = res["particles"].set_index("particle")
    assert list(t.touches_border) == [False, True, True]
    s = res["summary"]
    assert s["particles"] == 3 and s["particles_inside"] == 1
    assert s["liberation_3d"] == pytest.approx({"0.8": 1.0, "0.9": 1.0, "0.95": 1.0}, abs=1e-12)


def test_a_calibration_with_an_error_model_gives_each_particle_a_grade_sd_and_l3d_an_interval():
    from mineral3d.measure.grades import GradeCalibration

    lab = np.zeros((40, 60, 60), np.uint32)
    ph = np.zeros((40, 60, 60), np.uint8)
    for i, (y, x) in enumerate([(5, 5), (5, 30), (30, 5), (30, 30)]):
        lab[10:30, y:y + 20, x:x + 20] = i + 1
        ph[10:30, y:y + 20, x:x + 20] = 2
        ph[10:30, y:y + 20, x:x + 20 - i] = 1  # grades 1, 0.95, 0.9, 0.85: every one at or near a threshold
    cal = GradeCalibration(particle_sd=0.03, noise_um2=2.0)  # identity grades, measured uncertainty
    res = measure(lab, ph, voxel_size_um=2.0, phase_table=TABLE, config=MeasureConfig(n_boot=200), calibration=cal)
    t, s = res["particles"], res["summary"]
    esd = t["esd_um"].to_numpy()
    np.testing.assert_allclose(t["grade_sd"], np.sqrt(0.03 ** 2 + 2.0 / (np.pi / 4 * esd ** 2)))
    assert s["grade_uncertainty"]["median_grade_sd"] == pytest.approx(float(np.median(t["grade_sd"])))
    for k, (lo, hi) in s["liberation_3d_ci95"].items():
        assert lo <= s["liberation_3d"][k] <= hi and hi - lo > 0.05  # particles at the thresholds: wide
    # without an error model: the same grades, no interval
    plain = measure(lab, ph, voxel_size_um=2.0, phase_table=TABLE, config=MeasureConfig(n_boot=200),
                    calibration=GradeCalibration())["summary"]
    assert plain["liberation_3d"] == s["liberation_3d"]
    assert all(v is None for v in plain["liberation_3d_ci95"].values())


def brute_force(labels, phases, material_ids):
    """Per-particle loop in plain numpy: volume (voxels) and phase fractions."""
    out = {}
    for pid in np.unique(labels):
        if pid == 0:
            continue
        inside = labels == pid
        ph = phases[inside]
        mat = np.isin(ph, material_ids)
        out[int(pid)] = (int(inside.sum()), {m: float(np.sum(ph == m) / mat.sum()) for m in material_ids})
    return out


def test_table_matches_brute_force_on_generated_truth(small_sample):
    s = open_sample(small_sample)
    labels, phases = s.truth_particles(), s.truth_phases()
    table = s.phase_table
    t = particle_table(labels, phases, voxel_size_um=s.voxel_size_um, phase_table=table)
    ref = brute_force(labels, phases, [p.id for p in table.material])
    assert sorted(ref) == sorted(t.particle)
    for row in t.itertuples():
        n, fr = ref[row.particle]
        assert row.volume_um3 == pytest.approx(n * s.voxel_size_um**3, rel=1e-9, abs=0)
        for p in table.material:
            assert getattr(row, f"vol_{p.name}") == pytest.approx(fr[p.id], rel=1e-9, abs=1e-12)
        # bounding box and centroid against the same loop
    for pid in list(ref)[:5]:
        zz, yy, xx = np.nonzero(labels == pid)
        row = t[t.particle == pid].iloc[0]
        assert [row.bbox_z0, row.bbox_z1, row.bbox_y0, row.bbox_y1] == [zz.min(), zz.max() + 1, yy.min(), yy.max() + 1]
        assert row.centroid_x == pytest.approx(xx.mean(), rel=1e-9)
    material_cols = [f"vol_{p.name}" for p in table.material]
    np.testing.assert_allclose(t[material_cols].sum(axis=1), 1.0, rtol=1e-12)
    surf_cols = [f"surf_{p.name}" for p in table.material]
    np.testing.assert_allclose(t[surf_cols].sum(axis=1), 1.0, rtol=1e-12)


def test_labels_need_not_be_consecutive():
    mask, _ = ball(6.0, n=40, offset=(-8, -8, -8))
    lab = np.where(mask, 70000, 0).astype(np.uint32)
    lab[30:35, 30:35, 30:35] = 5
    t = particle_table(lab, (lab > 0).astype(np.uint8), voxel_size_um=1.0, phase_table=TABLE)
    assert list(t.particle) == [5, 70000]
    assert t.volume_um3[0] == 125


def test_grade_classes_and_cumulative_liberation():
    g = np.array([0.0, 0.05, 0.1, 0.15, 0.9, 0.95, 1.0])
    assert list(lib.grade_class(g)) == [0, 1, 2, 2, 10, 11, 12]
    assert lib.GRADE_CLASSES[10] == "[90,95)" and len(lib.GRADE_CLASSES) == 13
    amount = np.ones(7)
    pop = lib.Population(amount, g * amount, g, np.full(7, 50.0), np.arange(7))
    total = g.sum()
    assert lib.cumulative_liberation(pop, [0.9])[0] == pytest.approx((0.9 + 0.95 + 1.0) / total)
    spec = lib.liberation_spectrum(pop)
    assert spec.target_share.sum() == pytest.approx(1.0)
    assert spec.set_index("grade_class").loc["100", "target_share"] == pytest.approx(1 / total)
    gr = lib.grade_recovery(pop)
    assert gr.recovery.iloc[-1] == pytest.approx(1.0)
    assert gr.cumulative_grade.iloc[0] == pytest.approx(1.0)
    assert gr.cumulative_grade.iloc[-1] == pytest.approx(total / 7)


def test_2d_sections_of_a_half_and_half_sphere():
    mask, c = ball(20.0)
    x = np.arange(mask.shape[2])[None, None, :]
    phases = np.where(mask, np.where(x < c[2], 1, 2), 0).astype(np.uint8)
    pop = virtual_sections(mask.astype(np.uint32), phases, step=4, voxel_size_um=1.0, target_id=1, axes=(2,))
    # planes normal to x: each section is all target or all gehlenite
    assert set(np.round(pop.grade, 6)) <= {0.0, 1.0}
    pop_z = virtual_sections(mask.astype(np.uint32), phases, step=4, voxel_size_um=1.0, target_id=1, axes=(0,))
    np.testing.assert_allclose(pop_z.grade, 0.5, atol=0.06)
    assert np.all(pop_z.group == 1)


def test_map_sections_drop_border_pieces():
    ids = np.zeros((30, 30), np.uint8)
    ids[5:10, 5:10] = 1
    ids[5:10, 10:15] = 2  # one piece, half target
    ids[20:30, 20:25] = 1  # touches the border: dropped
    ids[7, 7] = 255
    pop = map_sections(ids, pixel_size_um=2.0, target_id=1)
    assert len(pop) == 1
    assert pop.grade[0] == pytest.approx(24 / 49)
    assert pop.amount[0] == pytest.approx(49 * 4.0)


def test_2d_liberation_overestimates_3d_on_generated_sample(small_sample, tmp_path):
    s = open_sample(small_sample)
    maps = []
    res = measure(s.truth_particles(), s.truth_phases(), voxel_size_um=s.voxel_size_um, phase_table=s.phase_table,
                  maps=maps, config=MeasureConfig(n_boot=200))
    summ = res["summary"]
    b = summ["bias_2d_minus_3d"]["2d-virtual"]["grade"]["0.9"]
    assert b["L2D"] > b["L3D"]
    assert b["bias"] == pytest.approx(b["L2D"] - b["L3D"])
    assert b["ci95"][0] <= b["bias"] <= b["ci95"][1]
    assert sum(summ["modal_3d"].values()) == pytest.approx(1.0)
    assert sum(summ["association_3d"].values()) == pytest.approx(1.0)
    write_measurements(tmp_path / "m", res, MeasureConfig(n_boot=200), inputs={})
    for f in ("particles.csv", "particles.parquet", "liberation.csv", "liberation_curves.csv", "grade_recovery.csv",
              "summary.json", "measure_config.json"):
        assert (tmp_path / "m" / f).exists(), f
    back = json.loads((tmp_path / "m" / "summary.json").read_text())
    assert set(back) >= {"target_phase", "particles", "modal_3d", "liberation_3d", "liberation_2d"}
    lt = pd.read_csv(tmp_path / "m" / "liberation.csv")
    assert set(lt.method) == {"3d", "2d-virtual"}
    shares = lt[(lt.size_class == "all")].groupby(["method", "basis"]).target_share.sum()
    np.testing.assert_allclose(shares, 1.0)
    pq = pd.read_parquet(tmp_path / "m" / "particles.parquet")
    assert len(pq) == summ["particles"]


def test_particle_table_without_surfaces_keeps_every_other_column():
    rng = np.random.default_rng(0)
    labels = np.zeros((20, 30, 30), np.uint32)
    labels[2:8, 3:10, 3:10], labels[10:18, 12:25, 5:20] = 1, 2
    phases = np.where(labels > 0, rng.integers(1, 3, labels.shape), 0).astype(np.uint8)
    table = PhaseTable((Phase(0, "resin", (0, 0, 0)), Phase(1, "a", (1, 1, 1)), Phase(2, "b", (2, 2, 2))), target="a")
    full = particle_table(labels, phases, voxel_size_um=2.0, phase_table=table, calipers=False, exposure=False)
    bare = particle_table(labels, phases, voxel_size_um=2.0, phase_table=table, calipers=False, exposure=False,
                          surfaces=False)
    assert list(bare.columns) == list(full.columns)
    assert bare["surface_um2"].isna().all() and full["surface_um2"].gt(0).all()
    keep = [c for c in full.columns if c not in ("surface_um2", "sphericity") and not c.startswith("surf_")]
    pd.testing.assert_frame_equal(bare[keep], full[keep])


def test_every_particle_table_column_is_described_with_its_dtype():
    """measure/columns.py owns the schema: each column of a real table matches one entry and its dtype kind."""
    from pathlib import Path

    from mineral3d.measure.columns import PARTICLE_COLUMNS, column, markdown_table
    lab = np.zeros((20, 20, 20), np.uint32)
    lab[2:8, 2:8, 2:8] = 1
    lab[10:18, 10:18, 3:12] = 2
    ph = np.where(lab > 0, 1, 0).astype(np.uint8)
    ph[12:18, 10:18, 3:12] = 2
    t = particle_table(lab, ph, voxel_size_um=2.0, phase_table=TABLE)
    for name in t.columns:
        assert t[name].dtype.kind == column(name).dtype, name
    described = {c.name for c in PARTICLE_COLUMNS}
    used = {column(n).name for n in t.columns}
    assert described - used == {"grade", "grade_sd"}  # a run adds those (test_run checks them)
    with pytest.raises(KeyError):
        column("nonsense")
    docs = (Path(__file__).resolve().parents[1] / "docs" / "measure.md").read_text()
    assert markdown_table() in docs  # the docs' table is generated from the module

"""The 2D -> 3D liberation correction with a measured kernel, on analytic particle volumes."""

from __future__ import annotations

import numpy as np
import pytest

from mineral3d.measure import kernel as K
from mineral3d.measure import liberation as lib
from mineral3d.measure.sections2d import virtual_sections


def sphere_pack(seed: int, *, n: int = 6, r: float = 7.0, pitch: int = 18, single_phase: bool = False):
    """n^3 spheres; each split by a random plane into target (1) and gangue (2) at a random grade."""
    rng = np.random.default_rng(seed)
    size = n * pitch
    zz, yy, xx = np.indices((size, size, size), dtype=np.float32)
    labels = np.zeros((size,) * 3, np.uint32)
    phases = np.zeros((size,) * 3, np.uint8)
    pid = 0
    for cz in range(n):
        for cy in range(n):
            for cx in range(n):
                pid += 1
                c = (np.array([cz, cy, cx]) + 0.5) * pitch + rng.uniform(-2, 2, 3)
                sl = tuple(slice(int(ci - r - 1), int(ci + r + 2)) for ci in c)
                d = np.stack([zz[sl] - c[0], yy[sl] - c[1], xx[sl] - c[2]])
                inside = (d ** 2).sum(0) <= r * r
                labels[sl][inside] = pid
                if single_phase:
                    phases[sl][inside] = 1 if rng.random() < 0.4 else 2
                    continue
                normal = rng.normal(size=3)
                normal /= np.linalg.norm(normal)
                cut = rng.choice([-2 * r, 2 * r]) if rng.random() < 0.25 else rng.uniform(-r, r)
                proj = np.tensordot(normal, d, axes=1)
                phases[sl][inside] = np.where(proj[inside] < cut, 1, 2)
    return labels, phases


def population(labels, phases):
    n = int(labels.max()) + 1
    material = np.bincount(labels.ravel(), weights=(phases > 0).ravel(), minlength=n)[1:]
    target = np.bincount(labels.ravel(), weights=(phases == 1).ravel(), minlength=n)[1:]
    return lib.Population(material, target, np.zeros(n - 1), np.full(n - 1, 18.0), np.arange(1, n))


def test_classes_give_liberation_exactly():
    g = np.array([0.0, 0.05, 0.1, 0.79999999999, 0.8, 0.9, 0.95, 0.97, 1.0])
    t = np.array([1.0, 1, 1, 1, 2, 3, 4, 5, 6])
    s = K.spectrum(t, g)
    pop = lib.Population(t / np.maximum(g, 1e-9), t, g, np.ones(9), np.arange(9))
    np.testing.assert_allclose(K.liberation_from_spectrum(s), lib.cumulative_liberation(pop), atol=1e-12)


def test_own_sections_are_corrected_to_the_3d_spectrum():
    labels, phases = sphere_pack(1)
    pop = population(labels, phases)
    k = K.build_kernel(labels, phases, pop, target_id=1, voxel_size_um=1.0, n_directions=12, seed=0)
    assert k.provenance["particles"] == 216 and k.provenance["sections"] > 1000
    s2 = k.contributions.sum(axis=0) / k.contributions.sum()
    x = K.invert(k.matrix(), s2, 0.0)
    l3 = lib.cumulative_liberation(pop)
    np.testing.assert_allclose(K.liberation_from_spectrum(x), l3, atol=0.03)
    assert np.all(K.liberation_from_spectrum(s2)[:2] > l3[:2] + 0.03)  # 2D overestimates


def test_kernel_from_one_pack_corrects_another():
    a_lab, a_ph = sphere_pack(1)
    b_lab, b_ph = sphere_pack(2)
    ka = K.build_kernel(a_lab, a_ph, population(a_lab, a_ph), target_id=1, voxel_size_um=1.0, n_directions=12,
                        seed=0)
    truth = lib.cumulative_liberation(population(b_lab, b_ph))
    sections = virtual_sections(b_lab, b_ph, step=3, voxel_size_um=1.0, target_id=1)
    r = K.correct(ka, sections, n_boot=100, seed=0)
    for i, t in enumerate(("0.8", "0.9")):
        before = abs(r["liberation_2d"][t] - truth[i])
        after = abs(r["liberation_3d_corrected"][t] - truth[i])
        assert after < 0.6 * before, (t, r["liberation_2d"][t], r["liberation_3d_corrected"][t], truth[i])
        lo, hi = r["ci95"][t]
        assert lo - 1e-9 <= truth[i] <= hi + 1e-9


def test_single_phase_particles_are_left_unchanged():
    labels, phases = sphere_pack(3, single_phase=True)
    k = K.build_kernel(labels, phases, population(labels, phases), target_id=1, voxel_size_um=1.0,
                       n_directions=6, seed=0)
    sections = virtual_sections(labels, phases, step=4, voxel_size_um=1.0, target_id=1)
    r = K.correct(k, sections, n_boot=50)
    for key in ("liberation_2d", "liberation_3d_corrected"):
        assert r[key] == pytest.approx({"0.8": 1.0, "0.9": 1.0, "0.95": 1.0}, abs=1e-12), key


@pytest.mark.parametrize("total", [1.0, 49.0, 0.1 + 0.2, 3e-7])
def test_a_spectrum_held_in_one_class_is_exactly_liberated(total):
    # invert() rescales its solution by total / x.sum(): 49 * (1 / 49) == 0.9999999999999999
    x = np.zeros(K.N_CLASSES)
    x[-1] = total * (1 / total)
    assert K.liberation_from_spectrum(x).tolist() == [1.0, 1.0, 1.0]
    x[-1] = 0.0
    x[2] = total
    assert K.liberation_from_spectrum(x).tolist() == [0.0, 0.0, 0.0]
    assert K.liberation_from_spectrum(np.zeros(K.N_CLASSES)).tolist() == [0.0, 0.0, 0.0]


def test_prisms_cut_across_their_axis_are_left_unchanged():
    rng = np.random.default_rng(5)
    labels = np.zeros((40, 60, 60), np.uint32)
    phases = np.zeros_like(labels, np.uint8)
    pid = 0
    for y0 in range(2, 50, 12):
        for x0 in range(2, 50, 12):
            pid += 1
            w = 10
            labels[2:38, y0:y0 + w, x0:x0 + w] = pid
            cut = int(rng.integers(0, w + 1))  # target fills the first `cut` columns: grade cut / w
            phases[2:38, y0:y0 + w, x0:x0 + w] = 2
            phases[2:38, y0:y0 + w, x0:x0 + cut] = 1
    pop = population(labels, phases)
    k = K.build_kernel(labels, phases, pop, target_id=1, voxel_size_um=1.0, directions=np.array([[1.0, 0, 0]]),
                       spacing_vox=3.0, seed=0)
    sections = virtual_sections(labels, phases, step=3, voxel_size_um=1.0, target_id=1, axes=(0,))
    r = K.correct(k, sections, n_boot=50)
    l3 = lib.cumulative_liberation(pop)
    for i, t in enumerate(("0.8", "0.9", "0.95")):
        assert r["liberation_2d"][t] == pytest.approx(l3[i])
        assert r["liberation_3d_corrected"][t] == pytest.approx(r["liberation_2d"][t], abs=1e-9)
    np.testing.assert_allclose(r["spectrum_3d_corrected"], r["spectrum_2d"], atol=1e-9)


def test_cli_kernel_and_correct(tmp_path, capsys):
    import json

    import tifffile

    from mineral3d.cli import main
    from mineral3d.io import write_sample
    from mineral3d.phase_table import Phase, PhaseTable
    from mineral3d.pipeline.measure import MeasureConfig, measure, write_measurements

    table = PhaseTable((Phase(0, "resin", (0, 0, 0)), Phase(1, "ore", (255, 0, 0)), Phase(2, "gangue", (0, 0, 255))),
                       target="ore")
    a_lab, a_ph = sphere_pack(1)
    b_lab, b_ph = sphere_pack(2)
    sample = tmp_path / "a"
    write_sample(sample, name="packs", ct=(a_ph * 100).astype(np.uint8), voxel_size_um=1.0, phase_table=table,
                 sections=[])
    tifffile.imwrite(tmp_path / "a_ph.tif", a_ph)
    tifffile.imwrite(tmp_path / "a_lab.tif", a_lab)
    with pytest.raises(SystemExit) as exc:
        main(["kernel", "--phases", str(tmp_path / "a_ph.tif"), "--particles", str(tmp_path / "a_lab.tif"),
              "--sample", str(sample), "--directions", "12", "--out", str(tmp_path / "kernel")])
    assert exc.value.code in (0, None)
    assert json.loads((tmp_path / "kernel" / "kernel.json").read_text())["provenance"]["particles"] >= 150  # inside
    # 2D input 1: the liberation.csv that `mineral3d measure` writes for sample B
    result = measure(b_lab, b_ph, voxel_size_um=1.0, phase_table=table, config=MeasureConfig(n_boot=20))
    write_measurements(tmp_path / "b_measure", result, MeasureConfig(n_boot=20), inputs={})
    with pytest.raises(SystemExit) as exc:
        main(["correct", str(tmp_path / "kernel"), "--liberation-2d", str(tmp_path / "b_measure" / "liberation.csv"),
              "--boot", "100", "--out", str(tmp_path / "corr")])
    assert exc.value.code in (0, None)
    r = json.loads((tmp_path / "corr" / "corrected.json").read_text())
    truth = lib.cumulative_liberation(population(b_lab, b_ph))
    assert set(r["liberation_3d_corrected"]) == {"0.8", "0.9", "0.95"} and set(r["ci95"]) == {"0.8", "0.9", "0.95"}
    assert r["liberation_2d"]["0.9"] == pytest.approx(result["summary"]["liberation_2d"]["0.9"])
    assert abs(r["liberation_3d_corrected"]["0.9"] - truth[1]) < abs(r["liberation_2d"]["0.9"] - truth[1])
    # 2D input 2: mineral maps (a plane of B as a map image with its phase table)
    tifffile.imwrite(tmp_path / "map.tif", np.ascontiguousarray(b_ph[50]))
    (tmp_path / "phases.csv").write_text(table.to_csv_text())
    with pytest.raises(SystemExit) as exc:
        main(["correct", str(tmp_path / "kernel"), "--maps", str(tmp_path / "map.tif"), "--phase-table",
              str(tmp_path / "phases.csv"), "--pixel-um", "1", "--boot", "50", "--out", str(tmp_path / "corr2")])
    assert exc.value.code in (0, None)
    assert json.loads((tmp_path / "corr2" / "corrected.json").read_text())["n_sections"] >= 20
    # errors are one line with exit code 2
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["correct", str(tmp_path / "kernel"), "--out", str(tmp_path / "c3")])
    assert exc.value.code == 2 and "give --maps" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["correct", str(tmp_path / "nokernel"), "--liberation-2d", "x.csv", "--out", str(tmp_path / "c4")])
    assert exc.value.code == 2 and "nokernel: file not found" in capsys.readouterr().err


def test_report_figure_of_the_correction():
    import base64
    import io

    import matplotlib.image

    from mineral3d.report import fig_correction

    corr = {"liberation_2d": {"0.8": 0.3, "0.9": 0.2, "0.95": 0.1},
            "ci95_2d": {"0.8": [0.2, 0.4], "0.9": [0.1, 0.3], "0.95": [0.05, 0.15]},
            "liberation_3d_corrected": {"0.8": 0.15, "0.9": 0.08, "0.95": 0.03},
            "ci95": {"0.8": [0.1, 0.2], "0.9": [0.04, 0.12], "0.95": [0.0, 0.06]}}
    uri = fig_correction(corr, {"liberation_3d": {"0.8": 0.14, "0.9": 0.07, "0.95": None}}, "LiAlO2")
    img = matplotlib.image.imread(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])), format="png")
    assert img.ndim == 3 and min(img.shape[:2]) > 100

"""suggest-section: planes where the model is unsure about the target, away from sections already cut."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from mineral3d.suggest import SuggestConfig, plane_scores, suggest_planes, useful_uncertainty


def test_useful_uncertainty_is_entropy_where_the_target_is_plausible():
    p = np.zeros((3, 4))
    p[:, 0] = [1, 0, 0]            # certain: 0
    p[:, 1] = [1 / 3, 1 / 3, 1 / 3]  # uniform, target plausible: 1
    p[:, 2] = [0.5, 0.5, 0.0]      # unsure between two others, target (2) impossible: 0
    p[:, 3] = [0.0, 0.5, 0.5]      # half the classes: log 2 / log 3
    u = useful_uncertainty(p, 2)
    np.testing.assert_allclose(u, [0.0, 1.0, 0.0, np.log(2) / np.log(3)], atol=1e-5)
    np.testing.assert_allclose(useful_uncertainty(np.round(p * 255).astype(np.uint8), 2), u, atol=0.02)


def test_suggestions_avoid_cut_sections_and_each_other():
    scores = np.zeros(100)
    scores[20] = 10.0   # the best plane, but a section is cut at 24
    scores[60] = 5.0
    scores[63] = 4.0    # too close to 60
    scores[85] = 3.0
    scores[1] = 50.0    # next to the volume's face: not suggested
    t = suggest_planes(scores, taken=[24.0], config=SuggestConfig(count=3, min_gap=8, smooth=0), voxel_size_um=2.0)
    assert t["position_voxel"].tolist() == [60, 85]  # 20 is taken, 63 too close to 60, nothing else scores
    assert t["position_um"].tolist() == [120.0, 170.0]
    np.testing.assert_allclose(t["nearest_section_um"], [72.0, 122.0])
    np.testing.assert_allclose(t["beyond_last_um"], [72.0, 122.0])
    np.testing.assert_allclose(t["share"], [5 / 12, 3 / 12])  # of the free planes' total
    u = np.zeros((5, 3, 3))
    u[2] = 1.0
    np.testing.assert_allclose(plane_scores(u, 0), [0, 0, 9, 0, 0])
    np.testing.assert_allclose(plane_scores(u, 1), [3, 3, 3])


@pytest.mark.slow
def test_suggest_section_on_a_run_output(full_run, tmp_path, capsys):
    from mineral3d.cli import main

    out = tmp_path / "run"
    shutil.copytree(full_run, out)
    with pytest.raises(SystemExit) as exc:
        main(["suggest-section", str(out), "--count", "2", "--device", "cpu"])
    assert exc.value.code == 0
    printed = capsys.readouterr().out
    folder = out / "suggest"
    t = pd.read_csv(folder / "suggestions.csv")
    rec = json.loads((folder / "suggestions.json").read_text())
    assert 1 <= len(t) <= 2 and "#1: z = " in printed
    gap = rec["settings"]["min_gap_voxels"]
    for z in t["position_voxel"]:
        assert all(abs(z - s) >= gap for s in rec["sections"].values())
    assert len(rec["sections"]) == 3
    prof = pd.read_csv(folder / "plane_scores.csv")
    assert len(prof) == 80 and prof["score"].max() > 0
    assert (folder / "suggestions.png").stat().st_size > 5000 and (folder / "uncertainty" / "zarr.json").is_file()
    assert not (folder / "probabilities.zarr").exists()
    assert "Where to cut the next section" in (out / "report.html").read_text()
    from mineral3d.viewer.layers import UNCERTAINTY, run_layers

    assert UNCERTAINTY in [kw["name"] for _, kw, _ in run_layers(out)]

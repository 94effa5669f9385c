"""`mineral3d run`: the whole pipeline, resuming after an interruption, skipping finished steps."""

from __future__ import annotations

import json

import pytest

from mineral3d.pipeline import run_steps
from mineral3d.pipeline.run import RunConfig, load_config, open_run, run

FAST = {"train": {"iterations": 6, "features": [4, 4, 8, 8, 16, 4], "precision": "fp32"},
        "segment": {"precision": "fp32"}, "measure": {"n_boot": 50}, "device": "cpu"}


@pytest.fixture(scope="module")
def fast_config(tmp_path_factory):
    p = tmp_path_factory.mktemp("cfg") / "fast.json"
    p.write_text(json.dumps(FAST))
    return load_config(p)


@pytest.fixture(scope="module")
def full_run(small_sample, fast_config, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "out"
    ctx = open_run(small_sample, out, config=fast_config, log=lambda m: None)
    run(ctx)
    return out


def test_run_writes_every_output(full_run):
    for name in ("registration/registration.json", "model/model.json", "segmentation.zarr/phases/zarr.json",
                 "segmentation.zarr/particles/zarr.json", "particles.csv", "particles.parquet", "liberation.csv",
                 "validation.json", "summary.json", "report.html", "config.json", "run.json"):
        assert (full_run / name).exists(), name
    html = (full_run / "report.html").read_text()
    assert html.count("<img") >= 8 and "data:image/png;base64," in html
    assert json.loads((full_run / "config.json").read_text())["train"]["iterations"] == 6


def test_interrupted_run_resumes_to_the_same_summary(small_sample, fast_config, full_run, tmp_path, monkeypatch):
    out = tmp_path / "out"
    calls = {"n": 0}
    real = run_steps.step_measure

    def interrupted(ctx):
        calls["n"] += 1
        raise KeyboardInterrupt  # as if Ctrl-C in the middle of the measure step

    monkeypatch.setattr(run_steps, "step_measure", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(open_run(small_sample, out, config=fast_config, log=lambda m: None))
    assert not (out / "summary.json").exists() and not (out / "report.html").exists()
    monkeypatch.setattr(run_steps, "step_measure", real)
    t = run(open_run(small_sample, out, config=fast_config, log=lambda m: None))
    assert [k for k, v in t.items() if not v["skipped"]] == ["measure", "validate", "report"]
    assert json.loads((out / "summary.json").read_text()) == json.loads((full_run / "summary.json").read_text())
    again = run(open_run(small_sample, out, config=fast_config, log=lambda m: None))
    assert all(v["skipped"] for v in again.values())


def test_changed_setting_reruns_only_what_depends_on_it(small_sample, fast_config, full_run, tmp_path):
    import dataclasses
    import shutil

    out = tmp_path / "out"
    shutil.copytree(full_run, out)
    cfg = dataclasses.replace(fast_config, particles=dataclasses.replace(fast_config.particles, neck_ratio=0.8))
    t = run(open_run(small_sample, out, config=cfg, log=lambda m: None))
    assert [k for k, v in t.items() if not v["skipped"]] == ["particles", "measure", "report"]


def test_config_validation(tmp_path):
    from mineral3d.errors import InputError

    assert RunConfig.from_dict(RunConfig().to_dict()) == RunConfig()
    with pytest.raises(InputError, match="unknown setting"):
        RunConfig.from_dict({"train": {"iteratoins": 3}})
    with pytest.raises(InputError, match="must be a number"):
        RunConfig.from_dict({"train": {"iterations": "many"}})
    p = tmp_path / "c.json"
    p.write_text("{nope")
    with pytest.raises(InputError, match="not valid JSON"):
        load_config(p)

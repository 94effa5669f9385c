"""`mineral3d run`: the whole pipeline, resuming after an interruption, skipping finished steps."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mineral3d.pipeline.run import RunConfig, load_config, open_run, run

pytestmark = pytest.mark.slow  # end-to-end: trains networks (`make test` runs all; `make test-fast` skips)

# fast_config and full_run (a finished run of small_sample, 6 iterations) come from conftest.py


def test_run_writes_every_output(full_run):
    for name in ("registration/registration.json", "model/model.json", "segmentation.zarr/phases/zarr.json",
                 "segmentation.zarr/particles/zarr.json", "particles.csv", "particles.parquet", "liberation.csv",
                 "validation.json", "summary.json", "report.html", "config.json", "run.json", "kernel/status.json",
                 "grades/trust.json", "grades/calibration.json", "grades/section_pairs.csv"):
        assert (full_run / name).exists(), name
    from mineral3d.io.layout import RunLayout
    from mineral3d.pipeline.run import STEPS
    from mineral3d.pipeline.run_steps import GRAPH
    assert tuple(s.name for s in GRAPH) == STEPS
    layout = RunLayout(full_run)
    ran = [s for s in STEPS if s != "correct"]  # `correct` runs only with --corrections (tests/test_view.py)
    assert all(layout.done(step) for step in ran)  # the layout's markers are the files the steps write
    assert not (full_run / ".steps" / "correct.json").exists() and "correct" not in json.loads(
        (full_run / "run.json").read_text())["timings"]
    assert {layout.marker(s).relative_to(full_run).as_posix() for s in ran} <= {
        "registration/registration.json", "model/model.json", "segmentation.zarr/phases/zarr.json",
        "segmentation.zarr/particles/zarr.json", "grades/trust.json", "summary.json", "kernel/status.json",
        "validation.json", "report.html"}
    status = json.loads((full_run / "kernel" / "status.json").read_text())
    inside = json.loads((full_run / "summary.json").read_text())["particles_inside"]
    # a kernel needs at least 10 whole particles (pipeline.kernel): the status says so, with a note, or the
    # kernel was measured on exactly the run's whole particles
    if inside < 10:
        assert status["kernel"] is False and "particles lie inside" in status["note"], status
        assert not (full_run / "kernel" / "kernel.json").exists()
    else:
        assert status["kernel"] is True and status["particles"] == inside, status
        assert json.loads((full_run / "kernel" / "kernel.json").read_text())["provenance"]["particles"] == inside
    html = (full_run / "report.html").read_text()
    # the model was trained with the CT's radial grey trend removed, and the report says how large it was
    model = json.loads((full_run / "model" / "model.json").read_text())
    assert "trend" in model["normalisation"], model["normalisation"]
    assert "Grey trend: the mineral grey level is" in html
    # the training labels per phase, and the table's phases the model never saw, are stated
    counts = model["info"]["labels"]["per_phase"]
    assert f"LiAlO2 {counts['LiAlO2']:,}" in html
    never = [n for n in ("spinel", "metal") if not counts.get(n)]
    assert ("not in the train sections: " + ", ".join(never) in html) if never else ("not in the train" not in html)
    import base64
    import io
    import re

    import matplotlib.image

    images = re.findall(r'<img alt="([^"]*)" src="data:image/png;base64,([^"]+)"', html)
    titles = {t for t, _ in images}
    for want in ("Registered sections", "CT with phases and particles", "Validation against held-out sections",
                 "Modal mineralogy", "Particle size distribution", "Liberation spectrum",
                 "Cumulative liberation, 3D vs 2D", "Grade-recovery", "Liberation by size class"):
        assert want in titles, want
    for _, data in images:  # every image decodes to a non-empty picture
        img = matplotlib.image.imread(io.BytesIO(base64.b64decode(data)), format="png")
        assert img.ndim == 3 and min(img.shape[:2]) > 50
    assert "<img" in html and html.count("<img") == len(images)
    # the held-out sections' verdict on the liberation: in the summary, validation.json and atop the report
    summary = json.loads((full_run / "summary.json").read_text())
    verdict = summary["liberation_trust"]["status"]
    assert verdict in ("trusted", "untrusted", "inconclusive", "unchecked")
    assert json.loads((full_run / "validation.json").read_text())["liberation_trust"]["status"] == verdict
    assert html.index('id="liberation-trust"') < html.index("<h2>Sample and run</h2>")
    # each particle's grade uncertainty, and the 3D liberation's interval from it, where it could be estimated
    import pandas as pd
    parts = pd.read_csv(full_run / "particles.csv")
    sd = parts.loc[~parts["touches_border"], "grade_sd"].to_numpy(float)
    ci = summary["liberation_3d_ci95"]
    known = summary["grade_uncertainty"]["median_grade_sd"] is not None
    assert known == (len(sd) > 0 and bool(np.isfinite(sd).all()))
    if known:
        assert (sd >= summary["grade_uncertainty"]["particle_sd"] - 1e-12).all()
        for t, v in summary["liberation_3d"].items():
            if v is not None:
                assert 0 <= ci[t][0] <= ci[t][1] <= 1
        assert "grade uncertainty" in html
    else:
        assert all(v is None for v in ci.values())
    assert json.loads((full_run / "config.json").read_text())["train"]["iterations"] == 6
    # run.json: the process's peak memory after each step (it only grows)
    peaks = [t["peak_rss_mb"] for t in json.loads((full_run / "run.json").read_text())["timings"].values()]
    assert len(peaks) == 9 and peaks[0] > 50 and peaks == sorted(peaks), peaks


def test_interrupted_run_resumes_to_the_same_summary(small_sample, fast_config, full_run, tmp_path):
    out = tmp_path / "out"

    def ctrl_c_in_training(stage, done, total):
        if stage == "training" and done == 3:   # in the middle of the training step
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(open_run(small_sample, out, config=fast_config, log=lambda m: None, progress=ctrl_c_in_training))
    assert not (out / "model").exists() and not (out / "summary.json").exists()
    assert (out / ".steps" / "register.json").exists() and not (out / ".steps" / "train.json").exists()
    t = run(open_run(small_sample, out, config=fast_config, log=lambda m: None))
    assert t["register"]["skipped"] and not t["train"]["skipped"]
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
    assert [k for k, v in t.items() if not v["skipped"]] == ["particles", "measure", "kernel", "report"]


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


def test_report_renders_in_headless_chromium(full_run, tmp_path):
    import shutil
    import subprocess

    exe = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome", "chrome")
                if shutil.which(n)), None)
    if exe is None:
        pytest.skip("Chromium is not installed here (apt install chromium to run this check)")
    page = (full_run / "report.html").resolve().as_uri()
    # every <img> must have loaded with a size: the script writes the verdict into the DOM
    probe = tmp_path / "probe.html"
    probe.write_text(f"""<iframe id=f src="{page}" width=1200 height=800></iframe><pre id=r>wait</pre><script>
    document.getElementById('f').onload = () => {{ const d = document.getElementById('f').contentDocument;
      const imgs = [...d.images]; const bad = imgs.filter(i => !i.complete || i.naturalWidth === 0);
      document.getElementById('r').textContent = 'images=' + imgs.length + ' broken=' + bad.length; }};
    </script>""")
    r = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
                        "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert "broken=0" in r.stdout, r.stdout[-500:] + r.stderr[-500:]
    n_img = (full_run / "report.html").read_text().count("<img ")
    assert n_img >= 10 and f"images={n_img} " in r.stdout  # every figure of the file was rendered


def test_apply_uses_the_model_without_training(small_sample, full_run, tmp_path, capsys):
    from mineral3d.cli import main

    out = tmp_path / "applied"
    cfg = tmp_path / "apply.json"
    cfg.write_text(json.dumps({"segment": {"precision": "fp32"}, "measure": {"n_boot": 50}}))
    with pytest.raises(SystemExit) as exc:
        main(["apply", str(full_run / "model"), str(small_sample), "--out", str(out), "--device", "cpu",
              "--config", str(cfg)])
    assert exc.value.code in (0, None)
    assert (out / "report.html").exists() and (out / "summary.json").exists()
    assert not (out / "model").exists()  # no training
    # same model, same sample: the same phases as the run that trained it
    import zarr

    a = zarr.open_array(store=str(out / "segmentation.zarr" / "phases"), mode="r")[...]
    b = zarr.open_array(store=str(full_run / "segmentation.zarr" / "phases"), mode="r")[...]
    assert (a == b).mean() > 0.999
    # the CT is the model's own: its edge blur is compared and found alike, the verdict's words unchanged
    trust = json.loads((out / "summary.json").read_text())["liberation_trust"]
    assert trust["scan"]["differs"] is False and abs(trust["scan"]["relative"]) < 0.05
    assert "not like the model's training CT" not in trust["reason"]


def test_apply_to_a_bare_ct(small_sample, full_run, tmp_path, capsys):
    from mineral3d.cli import main

    out = tmp_path / "bare"
    cfg = tmp_path / "apply.json"
    cfg.write_text(json.dumps({"segment": {"precision": "fp32"}, "measure": {"n_boot": 50}}))
    with pytest.raises(SystemExit) as exc:
        main(["apply", str(full_run / "model"), str(small_sample / "ct.tif"), "--out", str(out), "--device", "cpu",
              "--config", str(cfg)])
    assert exc.value.code == 2 and "give --voxel-um" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["apply", str(full_run / "model"), str(small_sample / "ct.tif"), "--voxel-um", "2", "--out", str(out),
              "--device", "cpu", "--config", str(cfg), "--workers", "2"])  # on a 2-worker LocalCluster
    assert exc.value.code in (0, None)
    assert (out / "report.html").exists() and (out / "sample" / "sample.toml").exists()
    # the TIFF was converted to Zarr once: the sample points at it, a rerun reuses it and does no work
    zarr_ct = out / "sample" / "ct.zarr"
    assert "ct.zarr" in (out / "sample" / "sample.toml").read_text()
    stamp = (zarr_ct / "zarr.json").stat().st_mtime_ns
    with pytest.raises(SystemExit) as exc:
        main(["apply", str(full_run / "model"), str(small_sample / "ct.tif"), "--voxel-um", "2", "--out", str(out),
              "--device", "cpu", "--config", str(cfg)])
    assert exc.value.code in (0, None) and (zarr_ct / "zarr.json").stat().st_mtime_ns == stamp
    assert all(t["skipped"] for t in json.loads((out / "run.json").read_text())["timings"].values())
    import zarr

    a = zarr.open_array(store=str(out / "segmentation.zarr" / "phases"), mode="r")[...]
    b = zarr.open_array(store=str(full_run / "segmentation.zarr" / "phases"), mode="r")[...]
    assert (a == b).mean() > 0.999
    # the grade calibration stored with the model by the run that trained it is the one apply uses
    stored = json.loads((full_run / "model" / "grade_calibration.json").read_text())
    used = json.loads((out / "grades" / "calibration.json").read_text())
    assert used["calibration"] == stored and "stored with the model" in used["source"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["grade_calibration"]["applied"] == stored["applied"]
    assert summary["liberation_trust"]["status"] == "unchecked"  # a bare CT has no section to check against


def test_particles_of_a_bare_ct_with_the_model(small_sample, full_run, tmp_path):
    from mineral3d.cli import main

    out = tmp_path / "parts"
    with pytest.raises(SystemExit) as exc:
        main(["particles", str(small_sample / "ct.tif"), "--voxel-um", "2", "--model", str(full_run / "model"),
              "--device", "cpu", "--out", str(out)])
    assert exc.value.code in (0, None)
    summary = json.loads((out / "particles_summary.json").read_text())
    assert summary["foreground"]["method"].startswith("phase segmentation") and summary["particles"] > 0
    import pandas as pd

    table = pd.read_csv(out / "particles.csv")
    assert len(table) == summary["particles"] and "vol_LiAlO2" in table.columns  # the model's phase table


def test_commands_work_on_a_run_output_alone(full_run, tmp_path, capsys):
    """kernel, measure, particles, validate and report need nothing but the run folder (it records its sample)."""
    import shutil

    from mineral3d.cli import main

    rec = json.loads((full_run / "sample.json").read_text())
    assert rec["target"] == "LiAlO2" and "LiAlO2" in rec["phase_table"] and rec["voxel_size_um"] > 0
    status = json.loads((full_run / "kernel" / "status.json").read_text())
    with pytest.raises(SystemExit) as exc:
        main(["kernel", str(full_run), "--out", str(tmp_path / "k"), "--directions", "4"])
    err = capsys.readouterr().err
    assert "give --sample" not in err and "phase table" not in err, err
    if status["kernel"]:  # a small sample may hold too few whole particles for a kernel
        assert exc.value.code in (0, None) and (tmp_path / "k" / "kernel.json").is_file(), err
    else:
        assert exc.value.code == 2 and "particles lie inside" in err, err
    seg = full_run / "segmentation.zarr"
    with pytest.raises(SystemExit) as exc:
        main(["measure", "--phases", str(seg / "phases"), "--particles", str(seg / "particles"), "--out",
              str(tmp_path / "m"), "--boot", "20"])
    assert exc.value.code in (0, None), capsys.readouterr().err
    m = json.loads((tmp_path / "m" / "summary.json").read_text())
    assert m["target_phase"] == "LiAlO2" and m["particles"] == json.loads((full_run / "summary.json").read_text())[
        "particles"]
    out = tmp_path / "run"
    shutil.copytree(full_run, out)
    # particles of the run's segmentation, with the sieve of the sample the run recorded: the run's own labels
    import zarr

    shutil.rmtree(out / "segmentation.zarr" / "particles")
    with pytest.raises(SystemExit) as exc:
        main(["particles", str(out / "segmentation.zarr")])
    assert exc.value.code in (0, None), capsys.readouterr().err
    np.testing.assert_array_equal(zarr.open_array(store=str(out / "segmentation.zarr" / "particles"), mode="r")[...],
                                  zarr.open_array(store=str(seg / "particles"), mode="r")[...])
    with pytest.raises(SystemExit) as exc:  # the run's registration, segmentation and model
        main(["validate", str(out), "--out", str(tmp_path / "v")])
    assert exc.value.code in (0, None), capsys.readouterr().err
    mine = json.loads((tmp_path / "v" / "validation.json").read_text())
    runs = json.loads((full_run / "validation.json").read_text())
    assert mine["sections"] == runs["sections"] and mine["all"] == runs["all"]
    (out / "report.html").unlink()
    with pytest.raises(SystemExit) as exc:
        main(["report", str(out)])
    assert exc.value.code in (0, None), capsys.readouterr().err
    assert 'id="liberation-trust"' in (out / "report.html").read_text()


def _finished_outputs_are_whole(out):
    """Every output under its final name is complete: JSON parses, tables and arrays read whole."""
    import pandas as pd
    import zarr

    for name in ("config.json", "sample.json", "registration/registration.json", "model/model.json",
                 "grades/trust.json", "grades/calibration.json", "summary.json", "validation.json",
                 "kernel/status.json", "measure_config.json"):
        if (out / name).exists():
            json.loads((out / name).read_text())
    for name in ("particles.csv", "liberation.csv", "grades/section_pairs.csv"):
        if (out / name).exists() and (out / name).stat().st_size:
            pd.read_csv(out / name)
    for name in ("phases", "particles"):
        if (out / "segmentation.zarr" / name / "zarr.json").exists():
            zarr.open_array(store=str(out / "segmentation.zarr" / name), mode="r")[...]
    if (out / "report.html").exists():
        assert (out / "report.html").read_text().rstrip().endswith("</html>")
    if (out / "summary.json").exists():  # summary.json is written last by measure
        assert (out / "particles.csv").exists() and (out / "liberation.csv").exists()


def test_killed_run_resumes_to_the_same_summary(small_sample, fast_config, full_run, tmp_path):
    """SIGKILL (no cleanup at all) at several points, each rerun resuming and killed further on."""
    import os
    import signal
    import subprocess
    import sys
    import time

    cfg = tmp_path / "fast.json"
    cfg.write_text(json.dumps(fast_config.to_dict()))
    out = tmp_path / "out"
    cmd = [sys.executable, "-c", "from mineral3d.cli import main; main()", "run", str(small_sample), "--out", str(out),
           "--config", str(cfg)]
    # kill as soon as each marker appears: inside training (its step started), segmentation (its partial
    # array), particles, measure and report (the record of the step before them)
    markers = [".steps/register.json", ".phases.partial", ".steps/segment.json", ".steps/grades.json",
               ".steps/validate.json"]
    killed = 0
    for marker in markers:
        path = out / marker if not marker.startswith(".phases") else out / "segmentation.zarr" / marker
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t0 = time.time()
        while proc.poll() is None and not path.exists() and time.time() - t0 < 300:
            time.sleep(0.02)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            killed += 1
        proc.wait()
        _finished_outputs_are_whole(out)
        for rec in (out / ".steps").glob("*.json"):  # a recorded step's outputs are all there
            assert json.loads(rec.read_text())["key"]
    assert killed >= 3  # the run was really cut short several times
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _finished_outputs_are_whole(out)
    assert json.loads((out / "summary.json").read_text()) == json.loads((full_run / "summary.json").read_text())

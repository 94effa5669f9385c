"""Shared fixtures: small generated samples (a few seconds each, generated once per session)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mineral3d.phantom import PhantomConfig, generate_sample

SMALL = dict(shape=(80, 128, 128), sections=3)


@pytest.fixture(scope="session")
def small_sample(tmp_path_factory) -> Path:
    """A fine sample, 80 x 128 x 128 voxels, 3 sections (read-only: copy before changing it)."""
    out = tmp_path_factory.mktemp("samples") / "fine"
    generate_sample(out, PhantomConfig(fraction="fine", seed=7, **SMALL))
    return out


@pytest.fixture()
def sample_copy(small_sample, tmp_path) -> Path:
    """A private copy of the small sample that a test may damage."""
    dst = tmp_path / "sample"
    shutil.copytree(small_sample, dst)
    return dst


@pytest.fixture(scope="session")
def sectioned_sample(tmp_path_factory) -> Path:
    """A fine sample at 3 µm voxels, 64 x 224 x 224, whose maps hold ~15 particle sections each (~1 min)."""
    out = tmp_path_factory.mktemp("samples") / "fine3um"
    generate_sample(out, PhantomConfig(fraction="fine", seed=5, shape=(64, 224, 224), voxel_um=3.0, sections=3))
    return out


FAST = {"train": {"iterations": 6, "features": [4, 4, 8, 8, 16, 4], "precision": "fp32"},
        "segment": {"precision": "fp32"}, "measure": {"n_boot": 50}, "device": "cpu", "correct": {"iterations": 40}}
"""Settings of the end-to-end tests: a tiny network trained for 6 iterations (seconds, not minutes)."""


@pytest.fixture(scope="session")
def fast_config(tmp_path_factory):
    from mineral3d.pipeline.run import load_config

    p = tmp_path_factory.mktemp("cfg") / "fast.json"
    p.write_text(json.dumps(FAST))
    return load_config(p)


@pytest.fixture(scope="session")
def full_run(small_sample, fast_config, tmp_path_factory) -> Path:
    """A finished `mineral3d run` of ``small_sample`` with ``FAST`` settings (read-only: copy before changing it)."""
    from mineral3d.pipeline.run import open_run, run

    out = tmp_path_factory.mktemp("run") / "out"
    run(open_run(small_sample, out, config=fast_config, log=lambda m: None))
    return out

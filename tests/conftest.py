"""Shared fixtures: small generated samples (a few seconds each, generated once per session)."""

from __future__ import annotations

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

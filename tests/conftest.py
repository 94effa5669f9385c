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


@pytest.fixture(scope="session")
def sectioned_sample(tmp_path_factory) -> Path:
    """A fine sample at 3 µm voxels, 64 x 224 x 224, whose maps hold ~15 particle sections each (~1 min)."""
    out = tmp_path_factory.mktemp("samples") / "fine3um"
    generate_sample(out, PhantomConfig(fraction="fine", seed=5, shape=(64, 224, 224), voxel_um=3.0, sections=3))
    return out

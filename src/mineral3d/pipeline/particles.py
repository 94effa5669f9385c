"""Particle instance step with files: ``segmentation.zarr/phases`` -> ``segmentation.zarr/particles``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import zarr

from mineral3d.instances import InstanceConfig, particle_labels, particle_labels_chunked

IN_MEMORY_VOXELS = 512 ** 3
"""Volumes up to this many voxels are separated in memory (same result as chunked)."""


def segment_particles(group: str | os.PathLike, config: InstanceConfig, *, chunks=(128, 128, 128),
                      in_memory: bool | None = None,
                      progress: Callable[[str, int, int], None] | None = None) -> int:
    """Write array ``particles`` (uint32 ids, 0 = no particle) beside ``phases`` in a segmentation group.

    Every voxel whose phase is not 0 (resin) belongs to exactly one particle. The array is
    built under ``.particles.partial`` and renamed when complete. Returns the number of
    particles.
    """
    group = Path(group)
    phases = zarr.open_array(store=str(group / "phases"), mode="r")
    shape = phases.shape
    partial = group / ".particles.partial"
    if partial.exists():
        shutil.rmtree(partial)
    g = zarr.open_group(store=str(partial), mode="w", zarr_format=3)
    out_chunks = tuple(min(64, s) for s in shape)
    out = g.create_array("particles", shape=shape, dtype=np.uint32, chunks=out_chunks, fill_value=0)
    if in_memory is None:
        in_memory = int(np.prod(shape)) <= IN_MEMORY_VOXELS
    if in_memory:
        if progress is not None:
            progress("separating particles", 0, 1)
        lab = particle_labels(phases[...] != 0, config,
                              progress=None if progress is None else lambda d, n: progress("separating particles", d, n))
        out[...] = lab
        n = int(lab.max())
    else:
        scratch = g.create_array("scratch", shape=shape, dtype=np.int64, chunks=chunks, fill_value=0)
        n = particle_labels_chunked(phases, out, config, chunks=chunks, scratch=scratch, progress=progress)
    out.attrs.update({"voxel_size_um": phases.attrs.get("voxel_size_um"), "labels": True, "particles": n,
                      "instance_config": dict(config.__dict__)})
    if (group / "particles").exists():
        shutil.rmtree(group / "particles")
    os.replace(partial / "particles", group / "particles")
    shutil.rmtree(partial)
    return n

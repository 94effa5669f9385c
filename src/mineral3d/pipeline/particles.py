"""Particle instance step with files: ``segmentation.zarr/phases`` -> ``segmentation.zarr/particles``."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import zarr

from mineral3d.separation import InstanceConfig, particle_labels, particle_labels_chunked

IN_MEMORY_VOXELS = 512 ** 3
"""Volumes up to this many voxels are separated in memory (same result as chunked)."""


def segment_particles(group: str | os.PathLike, config: InstanceConfig, *, chunks=(128, 128, 128),
                      in_memory: bool | None = None,
                      progress: Callable[[str, int, int], None] | None = None, scheduler=None) -> int:
    """Write array ``particles`` (uint32 ids, 0 = no particle) beside ``phases`` in a segmentation group.

    Every voxel whose phase is not 0 (resin) belongs to exactly one particle. The array is
    built under ``.particles.partial`` and renamed when complete. Returns the number of
    particles. Volumes over ``IN_MEMORY_VOXELS`` are separated chunk by chunk
    (:func:`~mineral3d.separation.particle_labels_chunked`, on ``scheduler``'s workers when
    it is a dask.distributed one); the result is the same.
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
                              progress=None if progress is None
                              else lambda d, n: progress("separating particles", d, n))
        out[...] = lab
        n = int(lab.max())
    else:
        scratch = g.create_array("scratch", shape=shape, dtype=np.uint32, chunks=chunks, fill_value=0)
        n = particle_labels_chunked(phases, out, config, chunks=chunks, scratch=scratch, progress=progress,
                                    scheduler=scheduler, foreground_path=group / "phases",
                                    scratch_path=partial / "scratch")
    out.attrs.update({"voxel_size_um": phases.attrs.get("voxel_size_um"), "labels": True, "particles": n,
                      "instance_config": dict(config.__dict__)})
    if (group / "particles").exists():
        shutil.rmtree(group / "particles")
    os.replace(partial / "particles", group / "particles")
    shutil.rmtree(partial)
    return n


def particle_slices_png(path: str | os.PathLike, ct: np.ndarray, labels: np.ndarray) -> None:
    """Three orthogonal centre slices of the CT with particle outlines (one colour per particle)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mineral3d.figures import _grey_rgb, boundaries
    from mineral3d.io.atomic import atomic_file

    tab = (np.asarray(plt.get_cmap("tab10").colors) * 255).astype(np.uint8)
    colours = tab[np.arange(int(labels.max()) + 1) % len(tab)]
    centre = [s // 2 for s in ct.shape]
    views = []
    for axis, name in ((0, "z"), (1, "y"), (2, "x")):
        grey = np.take(ct, centre[axis], axis=axis).astype(np.float32)
        lab = np.take(labels, centre[axis], axis=axis)
        rgb = _grey_rgb(grey)
        edge = boundaries(lab) & (lab > 0)
        rgb[edge] = colours[lab[edge]]
        views.append((f"{name} = {centre[axis]}", rgb))
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.4))
    for ax, (title, rgb) in zip(axes, views):
        ax.imshow(rgb, interpolation="nearest")
        ax.set_title(title)
        ax.set_axis_off()
    fig.suptitle(f"{int(labels.max())} particles: outlines on orthogonal centre slices")
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def size_distribution(table):
    """Cumulative volume-weighted size distribution (ESD classes of a sqrt(2) series) and D10/D50/D90."""
    import pandas as pd

    from mineral3d.measure.liberation import default_size_edges

    d = table["esd_um"].to_numpy(float)
    v = table["volume_um3"].to_numpy(float)
    edges = default_size_edges(d)
    count, _ = np.histogram(d, edges)
    vol, _ = np.histogram(d, edges, weights=v)
    psd = pd.DataFrame({"esd_from_um": edges[:-1], "esd_to_um": edges[1:], "particles": count,
                        "volume_percent": 100 * vol / max(v.sum(), 1e-12),
                        "cumulative_passing_percent": 100 * np.cumsum(vol) / max(v.sum(), 1e-12)})
    order = np.argsort(d)
    cum = np.cumsum(v[order]) / max(v.sum(), 1e-12)
    dxx = {f"D{int(q * 100)}_um": float(d[order][min(np.searchsorted(cum, q), len(d) - 1)]) if len(d) else None
           for q in (0.1, 0.5, 0.9)}
    return psd, dxx


def particles_from_ct(ct: np.ndarray, out: str | os.PathLike, *, voxel_size_um: float,
                      sieve_um: tuple[float, float] | None = None, min_diameter_um: float | None = None,
                      neck_ratio: float = 0.7, phases: np.ndarray | None = None, phase_table=None,
                      progress: Callable[[str, int, int], None] | None = None) -> dict:
    """Particles of a CT without sections: foreground, separation, table, size distribution, figure.

    ``phases`` (a phase segmentation, e.g. from a model, with its ``phase_table``) gives the
    foreground (phase != 0);
    without it the foreground is :func:`~mineral3d.intensity.grey_foreground`. Without a
    sieve fraction or ``min_diameter_um`` the size scale is the foreground's median local
    thickness (:func:`~mineral3d.separation.typical_thickness`).

    Writes ``out/segmentation.zarr`` (``phases``: 1 = particle when no phases were given;
    ``particles``), ``particles.csv`` / ``.parquet``, ``size_distribution.csv``,
    ``particles_slices.png`` and, last, ``particles_summary.json``.
    """
    from mineral3d.intensity import GreyLevels, grey_foreground
    from mineral3d.io.atomic import atomic_file, write_json
    from mineral3d.measure.particles import particle_table
    from mineral3d.phase_table import Phase, PhaseTable
    from mineral3d.separation import typical_thickness

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    done = out / "particles_summary.json"
    if done.exists():
        done.unlink()
    info: dict = {"voxel_size_um": float(voxel_size_um)}
    if phases is None:
        levels = GreyLevels.from_volume(ct)
        fg = grey_foreground(ct, levels=levels)
        phases = fg.astype(np.uint8)
        table = PhaseTable((Phase(0, "background", (0, 0, 0)), Phase(1, "particle", (200, 200, 200))))
        info["foreground"] = {"method": "Otsu threshold after a 3x3x3 median", "threshold": levels.threshold}
    else:
        if phase_table is None:
            raise ValueError("a phase segmentation needs its phase table")
        table = phase_table
        info["foreground"] = {"method": "phase segmentation (phase != 0)"}
    fg_thickness = typical_thickness(phases != 0)
    if min_diameter_um is None and sieve_um is None:
        min_diameter_um = fg_thickness * voxel_size_um
        info["size_scale"] = "median local thickness of the foreground"
    config = InstanceConfig.for_sample(voxel_size_um=voxel_size_um, sieve_um=sieve_um,
                                       min_diameter_um=min_diameter_um, neck_ratio=neck_ratio)
    info["instance_config"] = dict(config.__dict__)
    info["median_local_thickness_voxels"] = fg_thickness
    group = out / "segmentation.zarr"
    g = zarr.open_group(store=str(group), mode="a", zarr_format=3)
    g.attrs["voxel_size_um"] = float(voxel_size_um)
    arr = g.create_array("phases", shape=phases.shape, dtype=np.uint8, chunks=tuple(min(64, s) for s in phases.shape),
                         fill_value=0, overwrite=True)
    arr[...] = phases
    arr.attrs.update({"voxel_size_um": float(voxel_size_um), "labels": True})
    n = segment_particles(group, config, progress=progress)
    labels = zarr.open_array(store=str(group / "particles"), mode="r")[...]
    if progress is not None:
        progress("measuring particles", 0, 1)
    parts = particle_table(labels, phases, voxel_size_um=voxel_size_um, phase_table=table, exposure=False)
    if progress is not None:
        progress("measuring particles", 1, 1)
    with atomic_file(out / "particles.csv") as tmp:
        parts.to_csv(tmp, index=False)
    with atomic_file(out / "particles.parquet") as tmp:
        parts.to_parquet(tmp, index=False)
    psd, dxx = size_distribution(parts)
    with atomic_file(out / "size_distribution.csv") as tmp:
        psd.to_csv(tmp, index=False)
    particle_slices_png(out / "particles_slices.png", ct, labels)
    vol = parts["volume_um3"].to_numpy(float)
    summary = dict(info, particles=int(n), particles_inside=int((~parts["touches_border"]).sum()),
                   largest_share_of_volume=float(vol.max() / vol.sum()) if len(vol) else None,
                   foreground_fraction=float((phases != 0).mean()), **dxx)
    write_json(done, summary)
    return summary

"""What `mineral3d view` shows of a run output, as napari layer-data tuples (no napari import).

Every layer is in world coordinates of µm, (z, y, x), origin at the centre of voxel
(0, 0, 0): volumes get ``scale`` = the voxel size; each section map is a (1, H, W)
layer whose 4 x 4 ``affine`` is the registered plane transform (``map_to_ct``, voxels
per pixel) times the voxel size, so map pixel (r, c) lands on CT position
``origin + r * row_step + c * col_step`` (:class:`mineral3d.plane.PlaneTransform`).

Volumes stay lazy: the CT is a multiscale pyramid of dask arrays over the memory-mapped
TIFF or the Zarr store (coarser levels are averaged only where napari reads them), and
the label volumes are the run's Zarr arrays, read chunk by chunk as slices are shown.

A layer-data tuple is ``(data, kwargs, layer_type)``, the form napari readers return, so
the same function serves ``mineral3d view`` and napari's File > Open of a run folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mineral3d.errors import InputError
from mineral3d.io.layout import RunLayout

__all__ = ["run_layers", "section_affine", "phase_colormap", "ct_pyramid", "CORRECTIONS", "UNCERTAINTY"]

CORRECTIONS = "corrections"
"""Name of the labels layer the user paints phase ids on."""

UNCERTAINTY = "uncertainty"
"""Name of the per-voxel uncertainty layer (``OUT/suggest/uncertainty``, written by ``suggest-section``)."""

MIN_LEVEL_EDGE = 256
"""The CT pyramid halves the volume until its largest edge is below this (voxels)."""


def section_affine(matrix, voxel_size_um: float) -> np.ndarray:
    """(4, 4) affine from a (1, H, W) section layer's (k, row, col) to world µm (z, y, x).

    ``matrix`` is the section's 3 x 3 ``map_to_ct`` (columns: row step, column step and
    origin, in CT voxels). The layer's first axis runs along the plane's unit normal, so
    the affine is invertible and a one-pixel-thick layer lies on the plane.
    """
    m = np.asarray(matrix, float)
    normal = np.cross(m[:, 0], m[:, 1])
    normal /= np.linalg.norm(normal)
    a = np.eye(4)
    a[:3, 0], a[:3, 1], a[:3, 2], a[:3, 3] = normal, m[:, 0], m[:, 1], m[:, 2]
    a[:3] *= float(voxel_size_um)
    return a


def phase_colormap(table) -> dict:
    """{phase id: RGBA 0-1} for a labels layer, from the phase table (resin 0 transparent)."""
    out: dict = {None: (0.0, 0.0, 0.0, 0.0), 0: (0.0, 0.0, 0.0, 0.0)}
    for p in table.phases:
        if p.id in (0, 255):
            continue
        out[int(p.id)] = tuple(c / 255 for c in p.color) + (1.0,)
    return out


def _phase_features(table):
    import pandas as pd

    ids = [int(p.id) for p in table.phases]
    return pd.DataFrame({"index": ids, "phase": [p.name for p in table.phases]})


def ct_pyramid(volume, path=None) -> list:
    """Lazy multiscale levels of a (Z, Y, X) volume: the stored OME-Zarr levels of ``path`` when it
    has them, else level 0 as is and 2x means above it (dask, computed only where read)."""
    import dask.array as da

    if path is not None and (Path(path) / "zarr.json").is_file():
        from mineral3d.io.zarr_io import read_volume_zarr

        stored = []
        while True:
            try:
                stored.append(da.from_array(read_volume_zarr(path, level=len(stored))[0]))
            except InputError:
                break
        if len(stored) > 1:
            return stored
    level0 = da.from_array(volume, chunks=_chunks(volume))
    levels = [level0]
    while max(levels[-1].shape) >= 2 * MIN_LEVEL_EDGE and min(levels[-1].shape) >= 4:
        a = levels[-1]
        trimmed = a[tuple(slice(0, s - s % 2) for s in a.shape)]
        levels.append(da.coarsen(np.mean, trimmed, {0: 2, 1: 2, 2: 2}, trim_excess=True).astype(volume.dtype))
    return levels


def _chunks(volume):
    c = getattr(volume, "chunks", None)
    if isinstance(c, tuple) and len(c) == 3 and all(isinstance(x, int) for x in c):
        return c
    z, y, x = volume.shape
    return (1, min(y, 1024), min(x, 1024))  # one slice at a time: what a 2D view reads


def _contrast(volume) -> tuple[float, float]:
    """0.5-99.5 percentiles of three slices (at 1/4, 1/2, 3/4 depth): reads three chunk rows, not the volume."""
    n = volume.shape[0]
    v = np.concatenate([np.asarray(volume[z]).reshape(-1) for z in sorted({n // 4, n // 2, 3 * n // 4})])
    lo, hi = np.percentile(v.astype(np.float64), [0.5, 99.5])
    return float(lo), float(max(hi, lo + 1e-6))


def _particle_features(layout: RunLayout, target: str):
    import pandas as pd

    from mineral3d.measure.liberation import GRADE_CLASSES, grade_class

    path = layout.particles_parquet if layout.particles_parquet.is_file() else layout.particles_csv
    if not path.is_file():
        return None
    t = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    grade = t["grade"].to_numpy(float) if "grade" in t else t[f"vol_{target}"].to_numpy(float)
    out = pd.DataFrame({"index": t["particle"].astype(int),
                        "esd_um": t["esd_um"].round(1),
                        "volume_um3": t["volume_um3"].round(0),
                        f"grade_{target}": np.round(grade, 3),
                        "liberation_class": np.asarray(GRADE_CLASSES)[grade_class(grade)],
                        "touches_border": t["touches_border"].astype(bool)})
    if "grade_sd" in t:
        out["grade_sd"] = t["grade_sd"].round(3)
    return out


def run_layers(out: str | os.PathLike, *, sample=None, sections: bool = True) -> list[tuple]:
    """The layers of a run output, bottom to top.

    Parameters
    ----------
    out : path
        A ``mineral3d run`` (or ``apply``) output folder.
    sample : Sample, optional
        The sample (default: the one the run recorded in ``sample.json``).
    sections : bool
        Include each registered section (map and the CT resampled on its plane).

    Returns
    -------
    list of (data, kwargs, layer_type)
        ``CT`` (image, multiscale), ``phases``, ``particles`` (labels; particle table as
        features), ``uncertainty`` (image) when stored, per section ``<name> map`` (labels)
        and ``<name> CT on plane`` (image), and ``corrections`` (labels, the latest saved
        round or empty).
    """
    import zarr

    from mineral3d.io.corrections import correction_rounds, read_corrections
    from mineral3d.io.volumes import open_volume

    layout = RunLayout(Path(out))
    if not layout.sample_record.is_file():
        raise InputError(layout.root, "not a mineral3d run output (no sample.json)")
    if sample is None:
        from mineral3d.pipeline.run import recorded_sample

        sample = recorded_sample(layout.root, need="view")
    table = sample.phase_table
    v = float(sample.voxel_size_um)
    scale = (v, v, v)
    ct, _ = open_volume(sample.config.ct)
    layers: list[tuple] = []
    levels = ct_pyramid(ct, sample.config.ct)
    layers.append((levels if len(levels) > 1 else levels[0],
                   {"name": "CT", "scale": scale, "multiscale": len(levels) > 1, "colormap": "gray",
                    "contrast_limits": _contrast(ct), "units": "µm",
                    "metadata": {"source": str(sample.config.ct), "voxel_size_um": v}}, "image"))
    colors = phase_colormap(table)
    if layout.done("segment"):
        layers.append((zarr.open_array(store=str(layout.phases), mode="r"),
                       {"name": "phases", "scale": scale, "colormap": colors, "opacity": 0.5,
                        "features": _phase_features(table), "units": "µm"}, "labels"))
    unc = layout.suggestions / UNCERTAINTY
    if (unc / "zarr.json").is_file():
        layers.append((zarr.open_array(store=str(unc), mode="r"),
                       {"name": UNCERTAINTY, "scale": scale, "colormap": "magma", "contrast_limits": (0, 255),
                        "visible": False, "units": "µm",
                        "metadata": {"doc": "entropy of the class probabilities where the target is plausible, "
                                                "0-255 = 0-1 (mineral3d.suggest)"}}, "image"))
    if layout.done("particles"):
        layers.append((zarr.open_array(store=str(layout.particle_labels), mode="r"),
                       {"name": "particles", "scale": scale, "opacity": 0.8, "units": "µm",
                        **({"features": f} if (f := _particle_features(layout, table.target)) is not None
                           else {})}, "labels"))
    if sections and layout.registration_record.is_file():
        layers += _section_layers(layout, sample, ct, colors)
    painted = np.zeros(ct.shape, np.uint8)  # calloc'd: costs memory only where painted
    if correction_rounds(layout.corrections):
        c = read_corrections(layout.corrections, shape=ct.shape)
        painted.reshape(-1)[c.index] = c.label
    layers.append((painted, {"name": CORRECTIONS, "scale": scale, "colormap": colors, "units": "µm",
                             "features": _phase_features(table),
                             "metadata": {"store": str(layout.corrections), "voxel_size_um": v}}, "labels"))
    return layers


def _section_layers(layout: RunLayout, sample, ct, colors) -> list[tuple]:
    from mineral3d.io.atomic import read_json
    from mineral3d.io.transforms import read_transform
    from mineral3d.plane import plane_box, sample_plane

    v = float(sample.voxel_size_um)
    out = []
    record = read_json(layout.registration_record)["sections"]
    for name, r in record.items():
        path = layout.registration / f"{name}.json"
        if not r.get("registered") or not path.is_file():
            continue
        transform = read_transform(path)[0]
        ids = sample.section_map(name)
        affine = section_affine(transform.matrix, v)
        meta = {"section": name, "role": r.get("role"), "map_to_ct": transform.matrix.tolist()}
        out.append((ids[None], {"name": f"{name} map", "affine": affine, "colormap": colors, "units": "µm",
                                "metadata": meta, "blending": "translucent"}, "labels"))
        lo, box = plane_box(transform, ids.shape, ct.shape, margin=(2, 3))
        sub = np.asarray(ct[box], np.float32)
        plane = sample_plane(sub, transform.shifted(-lo), ids.shape, order=1)
        out.append((plane[None].astype(np.float32), {"name": f"{name} CT on plane", "affine": affine, "units": "µm",
                                                     "colormap": "gray", "visible": False, "metadata": meta},
                    "image"))
    return out

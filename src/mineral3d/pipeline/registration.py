"""Registration with files: each section's transform JSON and overlay PNG, and ``registration.json``.

The one implementation behind ``mineral3d register`` and the ``register`` step of ``run``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mineral3d.io.atomic import atomic_file
from mineral3d.io.sample import Sample
from mineral3d.io.transforms import write_transform
from mineral3d.register import (
    CoarseLevel,
    RegisterConfig,
    RegistrationResult,
    register_section,
    register_section_coarse_to_fine,
)

COARSE_LEVEL_VOXELS = 1 << 24
"""Largest coarse level (voxels) of a CT too large to register whole: the block edge is the
smallest power of two that brings the CT under it (4 for a 1024³ CT). CTs over
:data:`~mineral3d.io.sample.WHOLE_CT_VOXELS` are registered this way."""


def coarse_level_of(ct, *, path=None) -> CoarseLevel:
    """The coarse registration level of a CT too large to register whole: its stored OME-Zarr
    level of that factor when ``path`` is a Zarr CT that has one, else block means read slab by slab."""
    from mineral3d.io.volumes import block_means
    from mineral3d.register import coarse_level

    n = int(np.prod(ct.shape))
    factor = 2
    while n / factor ** 3 > COARSE_LEVEL_VOXELS:
        factor *= 2
    means = None
    if path is not None and (Path(path) / "zarr.json").is_file():
        from mineral3d.errors import InputError
        from mineral3d.io.zarr_io import read_volume_zarr

        try:
            arr = read_volume_zarr(path, level=int(np.log2(factor)))[0]
            if tuple(arr.shape) == tuple(int(s) // factor for s in ct.shape):
                means = np.asarray(arr[...], np.float32)
        except InputError:
            means = None
    if means is None:
        means = block_means(ct, factor)
    return coarse_level(means, factor, ct.shape)


def register_and_write(sample: Sample, name: str, out_dir: Path, *, config: RegisterConfig, ct: np.ndarray,
                       indicator: np.ndarray) -> RegistrationResult:
    """Register section ``name``; write ``<name>_overlay.png`` then ``<name>.json`` into ``out_dir``.

    Raises :class:`~mineral3d.register.RegistrationError` (writing nothing) when the map
    cannot be registered with confidence.
    """
    import matplotlib.image

    from mineral3d.figures import registration_overlay
    from mineral3d.plane import plane_box, sample_plane

    ids = sample.section_map(name)
    if isinstance(indicator, CoarseLevel):
        r = register_section_coarse_to_fine(ct, ids, scale=sample.nominal_scale(name), level=indicator,
                                            config=config, bse=sample.section_bse(name))
        lo, box = plane_box(r.transform, ids.shape, ct.shape)
        grey = sample_plane(np.asarray(ct[box]), r.transform.shifted(-lo), ids.shape)
    else:
        r = register_section(ct, ids, scale=sample.nominal_scale(name), config=config, indicator=indicator,
                             bse=sample.section_bse(name))
        grey = sample_plane(ct, r.transform, ids.shape)
    out_dir.mkdir(parents=True, exist_ok=True)
    img = registration_overlay(grey, ids, sample.phase_table)
    with atomic_file(out_dir / f"{name}_overlay.png") as tmp:
        matplotlib.image.imsave(tmp, img, format="png")
    write_transform(out_dir / f"{name}.json", name, r.transform, **r.record())
    return r


def register_sections(sample: Sample, out_dir: Path, config: RegisterConfig, *, names: list[str] | None = None,
                      ct: np.ndarray | None = None, progress=None,
                      log=None) -> tuple[dict, dict[str, RegistrationResult]]:
    """Register sections ``names`` (default: all) of ``sample`` into ``out_dir``.

    A CT over :data:`~mineral3d.io.sample.WHOLE_CT_VOXELS` is not read whole: the maps are searched on its coarse
    level (:func:`coarse_level_of`) and finished on the CT's voxels around each plane.
    Writes ``<name>.json`` and ``<name>_overlay.png`` for each registered section; a
    section that cannot be registered writes nothing (a stale ``<name>.json`` is removed)
    and its reason goes into the record. Returns the record for ``registration.json``
    (``{"sections": {name: {"role", "registered", ...}}}``) and the results by name.
    ``progress(stage, done, total)`` and ``log(line)`` are optional callbacks.
    """
    from mineral3d.register import RegistrationError, ct_indicator

    names = [c.name for c in sample.config.sections] if names is None else list(names)
    n = len(names)
    ind = None
    if n and ct is None:
        ct = sample.ct_for_processing()
        if not isinstance(ct, np.ndarray):
            if progress:
                progress("reading the CT's coarse level", 0, 1)
            ind = coarse_level_of(ct, path=sample.config.ct)
    if n and ind is None:
        ind = ct_indicator(ct)
    out_dir.mkdir(parents=True, exist_ok=True)
    record: dict = {"sections": {}}
    results: dict[str, RegistrationResult] = {}
    for i, name in enumerate(names):
        role = sample.config.section(name).role
        if progress:
            progress("registering sections", i, n)
        try:
            r = register_and_write(sample, name, out_dir, config=config, ct=ct, indicator=ind)
        except RegistrationError as exc:
            record["sections"][name] = {"role": role, "registered": False, "reason": str(exc)}
            stale = out_dir / f"{name}.json"
            if stale.exists():
                stale.unlink()
            if log:
                log(f"  {name}: not registered: {exc}")
            continue
        results[name] = r
        record["sections"][name] = {"role": role, "registered": True, "score": r.score, "runner_up": r.runner_up,
                                    "tilt_deg": r.transform.tilt_deg, "mirrored": r.mirrored}
    if progress:
        progress("registering sections", n, n)
    return record, results

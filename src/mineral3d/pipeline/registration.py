"""Registration with files: each section's transform JSON and overlay PNG, and ``registration.json``.

The one implementation behind ``mineral3d register`` and the ``register`` step of ``run``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mineral3d.io.atomic import atomic_file
from mineral3d.io.sample import Sample
from mineral3d.io.transforms import write_transform
from mineral3d.register import RegisterConfig, RegistrationResult, register_section


def register_and_write(sample: Sample, name: str, out_dir: Path, *, config: RegisterConfig, ct: np.ndarray,
                       indicator: np.ndarray) -> RegistrationResult:
    """Register section ``name``; write ``<name>_overlay.png`` then ``<name>.json`` into ``out_dir``.

    Raises :class:`~mineral3d.register.RegistrationError` (writing nothing) when the map
    cannot be registered with confidence.
    """
    import matplotlib.image

    from mineral3d.figures import registration_overlay
    from mineral3d.plane import sample_plane

    ids = sample.section_map(name)
    r = register_section(ct, ids, scale=sample.nominal_scale(name), config=config, indicator=indicator,
                         bse=sample.section_bse(name))
    out_dir.mkdir(parents=True, exist_ok=True)
    img = registration_overlay(sample_plane(ct, r.transform, ids.shape), ids, sample.phase_table)
    with atomic_file(out_dir / f"{name}_overlay.png") as tmp:
        matplotlib.image.imsave(tmp, img, format="png")
    write_transform(out_dir / f"{name}.json", name, r.transform, **r.record())
    return r


def register_sections(sample: Sample, out_dir: Path, config: RegisterConfig, *, names: list[str] | None = None,
                      ct: np.ndarray | None = None, progress=None,
                      log=None) -> tuple[dict, dict[str, RegistrationResult]]:
    """Register sections ``names`` (default: all) of ``sample`` into ``out_dir``.

    Writes ``<name>.json`` and ``<name>_overlay.png`` for each registered section; a
    section that cannot be registered writes nothing (a stale ``<name>.json`` is removed)
    and its reason goes into the record. Returns the record for ``registration.json``
    (``{"sections": {name: {"role", "registered", ...}}}``) and the results by name.
    ``progress(stage, done, total)`` and ``log(line)`` are optional callbacks.
    """
    from mineral3d.register import RegistrationError, ct_indicator

    names = [c.name for c in sample.config.sections] if names is None else list(names)
    n = len(names)
    if n and ct is None:
        ct = sample.ct_array()
    ind = ct_indicator(ct) if n else None
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

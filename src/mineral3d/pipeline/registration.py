"""Registration step with files: one section's transform JSON and overlay PNG."""

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

"""Registration results on disk: one JSON file per section (``map_to_ct`` and scores)."""

from __future__ import annotations

import os

from mineral3d.errors import InputError
from mineral3d.io.atomic import read_json, write_json
from mineral3d.plane import PlaneTransform


def read_transform(path: str | os.PathLike) -> tuple[PlaneTransform, dict]:
    """Read a ``{"section": ..., "map_to_ct": [[...]], ...}`` file.

    Returns the transform and the whole record (for ``section``, ``score`` and extras).
    """
    record = read_json(path)
    if not isinstance(record, dict) or "map_to_ct" not in record:
        raise InputError(path, "no 'map_to_ct' entry")
    try:
        transform = PlaneTransform.from_dict(record)
    except (InputError, ValueError, TypeError) as exc:
        problem = exc.problem if isinstance(exc, InputError) else str(exc)
        raise InputError(path, problem) from None
    return transform, record


def write_transform(path: str | os.PathLike, section: str, transform: PlaneTransform, **extra) -> None:
    """Write a section's ``map_to_ct`` (and extras such as ``score``) atomically."""
    write_json(path, {"section": section, **transform.to_dict(), **extra})

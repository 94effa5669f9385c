"""Kernel and correction steps with files: a 3D result -> ``kernel.json``; 2D data -> ``corrected.json``.

See :mod:`mineral3d.measure.kernel` for the method. A kernel folder holds ``kernel.json``
(classes, matrix, per-particle contributions, provenance). ``corrected.json`` holds
``liberation_3d_corrected`` ({"0.8", "0.9", "0.95"}), ``ci95`` (95% intervals), the
uncorrected input ``liberation_2d`` with its own ``ci95_2d``, both spectra, ``lambda`` and
the kernel's provenance.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from mineral3d.errors import InputError
from mineral3d.io.atomic import atomic_dir, read_json, write_json
from mineral3d.measure import kernel as K
from mineral3d.measure import liberation as lib
from mineral3d.measure.liberation import GRADE_CLASSES, Population


def kernel_from_volumes(labels: np.ndarray, phases: np.ndarray, table: pd.DataFrame, *, target: str,
                        target_id: int, voxel_size_um: float, n_directions: int = 32, seed: int = 0,
                        source: str = "") -> K.Kernel:
    """Kernel of a 3D result: particle/phase volumes and their particle table."""
    from mineral3d.pipeline.measure import population_3d

    if f"vol_{target}" not in table.columns:
        raise InputError(source or "particle table", f"has no column vol_{target}: measure it with target {target!r}")
    pop = population_3d(table, target, calibrated=False)  # the kernel's sections are cut from the same voxels
    if len(pop) < 10:
        raise InputError(source or "3D result", f"only {len(pop)} particles lie inside the volume: a kernel needs "
                                                f"many (hundreds) to be trusted")
    return K.build_kernel(labels, phases, pop, target_id=target_id, voxel_size_um=voxel_size_um,
                          n_directions=n_directions, seed=seed,
                          provenance={"source": source, "target": target})


def write_kernel(folder: str | os.PathLike, kernel: K.Kernel) -> None:
    with atomic_dir(folder, overwrite=True) as tmp:
        write_json(tmp / "kernel.json", kernel.to_dict())


def read_kernel(folder: str | os.PathLike) -> K.Kernel:
    folder = Path(folder)
    path = folder / "kernel.json" if folder.is_dir() else folder
    data = read_json(path)
    try:
        return K.Kernel.from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(path, f"not a mineral3d kernel ({exc})") from None


def population_from_liberation_csv(path: str | os.PathLike, *, method: str | None = None) -> tuple[Population, str]:
    """2D sections summarised by a ``liberation.csv`` (as ``mineral3d measure`` writes it).

    Uses the rows of ``method`` (default ``2d-map`` where present, else ``2d-virtual``),
    size class ``all``, basis ``grade``. Each grade class becomes ``particles`` equal units
    at the class's mid grade carrying its target amount: enough for the spectrum, and the
    bootstrap resamples these units (an approximation of resampling the sections).
    """
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype={"grade_class": str, "size_class": str})
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise InputError(path, f"cannot read the liberation table ({exc})") from None
    need = {"method", "basis", "size_class", "grade_class", "particles", "amount", "target_amount"}
    if not need <= set(df.columns):
        raise InputError(path, f"missing columns: {', '.join(sorted(need - set(df.columns)))}")
    methods = list(dict.fromkeys(df["method"]))
    if method is None:
        method = "2d-map" if "2d-map" in methods else "2d-virtual" if "2d-virtual" in methods else None
    if method not in methods:
        raise InputError(path, f"no rows of method {method!r} (methods: {', '.join(map(str, methods))})")
    d = df[(df["method"] == method) & (df["size_class"] == "all") & (df["basis"] == "grade")]
    if list(d["grade_class"]) != GRADE_CLASSES:
        raise InputError(path, f"grade classes {list(d['grade_class'])} differ from this version's "
                               f"{GRADE_CLASSES}: rerun `mineral3d measure`")
    mid = np.array([0.0, 0.05] + [(a + b) / 2 for a, b in zip(lib.LOWER_EDGES[1:], lib.LOWER_EDGES[2:] + (1.0,))]
                   + [1.0])
    n = d["particles"].to_numpy(int)
    tgt = d["target_amount"].to_numpy(float)
    amt = d["amount"].to_numpy(float)
    cls = np.repeat(np.arange(len(n)), n)
    per_t = np.divide(tgt, n, out=np.zeros(len(n)), where=n > 0)[cls]
    per_a = np.divide(amt, n, out=np.zeros(len(n)), where=n > 0)[cls]
    # each unit: its class's mean target at the class's mid grade (amount = target / grade)
    amount = np.where(mid[cls] > 0, per_t / np.maximum(mid[cls], 1e-12), per_a)
    pop = Population(amount=amount, target=per_t, exposure=np.zeros(len(cls)), size_um=np.zeros(len(cls)),
                     group=np.arange(len(cls)))
    return pop, method


def correction(kernel: K.Kernel, pop2d: Population, *, n_boot: int = 500, seed: int = 0,
               size_class: int | None = None, source: str = "") -> dict:
    """:func:`mineral3d.measure.kernel.correct` plus provenance, as written to ``corrected.json``."""
    if len(pop2d) == 0:
        raise InputError(source or "2D data", "no particle sections to correct")
    result = K.correct(kernel, pop2d, n_boot=n_boot, seed=seed, size_class=size_class)
    result["kernel"] = kernel.provenance
    result["input"] = source
    result["n_boot"] = n_boot
    result["seed"] = seed
    return result


def write_correction(out_dir: str | os.PathLike, result: dict) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "corrected.json", result)

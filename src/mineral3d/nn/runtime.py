"""Process-level torch settings that decide CPU speed: allocator, threads, precision, device.

Measured on the 2-core CI machines (docs/benchmarks.md, ../shared/perf-notes.md): glibc
malloc hands every large activation buffer back to the kernel, so each U-Net pass
re-faults hundreds of MB; raising its mmap and trim thresholds (``mallopt``, done once per
process here, or jemalloc via ``LD_PRELOAD``) makes training ~1.3x and inference up to
~1.8x faster. bf16 autocast is used where the CPU has native bf16 (AVX512-BF16 or AMX)
or the GPU supports it.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os

import torch

from mineral3d.errors import ParameterError

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


@functools.cache
def tune_allocator() -> bool:
    """Keep freed large blocks in the glibc heap (no effect under jemalloc or on other libcs).

    Returns True when the thresholds were set. Set ``MINERAL3D_NO_MALLOPT=1`` to skip.
    """
    if os.environ.get("MINERAL3D_NO_MALLOPT") or "jemalloc" in os.environ.get("LD_PRELOAD", ""):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    ok = libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30) or libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)
    ok = ok and libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30) and libc.mallopt(_M_TOP_PAD, 64 << 20)
    return bool(ok)


def release_memory() -> None:
    """Return freed heap memory to the system (glibc ``malloc_trim``; no-op elsewhere).

    With the thresholds of :func:`tune_allocator` freed blocks stay in the heap, which is
    what makes inference fast; between pipeline steps they would keep one step's peak
    resident through all later steps, so :func:`mineral3d.pipeline.run.run` trims after each.
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def resolve_device(name: str = "auto") -> torch.device:
    """``cpu``, ``cuda`` (error when torch sees no GPU), ``cuda:N`` or ``auto`` (cuda when present)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ParameterError("device", f"{name} requested but torch sees no CUDA GPU (use the cpu device)")
        return torch.device(name)
    raise ParameterError("device", f"must be cpu, cuda, cuda:N or auto, got {name!r}")


@functools.cache
def cpu_has_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX512-BF16 or AMX): autocast then pays off."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def use_bf16(precision: str, device: torch.device, *, training: bool = False) -> bool:
    """Resolve ``precision`` (auto, fp32, bf16) for ``device``.

    ``auto`` is bf16 on a GPU that supports it, and on a CPU with native bf16 for inference
    only: oneDNN's bf16 weight gradients differ from process to process (measured: the
    deepest U-Net level's, at 1 and 2 threads; forward passes are reproducible), so CPU
    training runs in fp32 (~1.2x slower) to stay deterministic for a seed.
    """
    if precision not in ("auto", "fp32", "bf16"):
        raise ParameterError("precision", f"must be auto, fp32 or bf16, got {precision!r}")
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return cpu_has_bf16() and not training


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on ``device`` when ``enabled``, else a no-op context."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def prepare(device: torch.device, threads: int | None = None) -> None:
    """Allocator and thread settings for a run on ``device``.

    threads: in a dask worker, ``OMP_NUM_THREADS`` (dask's nanny sets 1: one task per
    core, no oversubscription); elsewhere every core this process may use (a LocalCluster
    also sets ``OMP_NUM_THREADS=1`` in the process that starts it, which must not slow it).
    """
    tune_allocator()
    if device.type == "cpu":
        if threads is None:
            env = os.environ.get("OMP_NUM_THREADS", "")
            if _in_dask_worker() and env.isdigit() and int(env) > 0:
                threads = int(env)
            else:
                threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        torch.set_num_threads(max(1, int(threads or 1)))


def _in_dask_worker() -> bool:
    try:
        from distributed import get_worker

        get_worker()
        return True
    except (ImportError, ValueError):
        return False

"""Training a voxel classifier on sparse labels: the loss counts labelled voxels only.

Patches are centred on labelled voxels (nnU-Net style): a class is drawn with
probability proportional to ``count ** (1 - class_balance)`` (0: as often as it is
labelled, 1: every class equally often), then one of its voxels, then the patch is
jittered by up to a quarter of its size so the labelled voxel is not always central.
Augmentations move labels with the image (flips along every axis, 90° rotations about
z) and jitter the normalised grey values (gain and offset). The loss is cross-entropy over
the labelled voxels, each weighted by its class's labelled count to the power
``-class_weight`` (:func:`class_weights`): sampling alone shows rare phases often, but
inside a patch a few spinel voxels among thousands of others barely move an unweighted
loss. The learning rate follows a warm-up then a cosine decay over ``iterations``.

Every random draw comes from one ``numpy.random.Generator`` (and torch's seeded
generator for the initial weights), whose state is saved in the checkpoint with the
weights and the optimiser: a run resumed after an interruption continues exactly where
it stopped and ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from mineral3d.errors import InputError
from mineral3d.io.atomic import atomic_file
from mineral3d.nn import runtime
from mineral3d.nn.network import NetworkConfig

IGNORE = -100
"""Target value of unlabelled voxels (torch's cross-entropy ``ignore_index``)."""


@dataclass(frozen=True)
class TrainConfig:
    """Training settings.

    Attributes
    ----------
    iterations : int
        Optimiser steps. The default (1200 at batch 2 of 32x96x96 voxels) takes 13.5-15 min on
        2 CPU cores with the default network.
    batch_size : int
    patch : (3,) tuple of int
        Patch shape (z, y, x), voxels; multiples of 16; y == x (90° rotations). Thin in z
        because section labels lie on near-z planes: more labelled voxels per patch.
    learning_rate : float
        Peak Adam learning rate.
    warmup : int
        Iterations of linear warm-up.
    class_balance : float
        0-1, see the module docstring.
    class_weight : float
        Loss weight of each class proportional to its labelled voxel count to the power
        ``-class_weight`` (0: every labelled voxel counts the same; 1: every class the same
        in total), normalised to a mean weight of 1 over the labelled voxels.
    gain_jitter, offset_jitter : float
        Intensity augmentation: grey * U(1 ± gain) + U(± offset), in normalised units
        (resin 0, mineral 1). Kept small: phases may differ by < 0.1 in these units
        (LiAlO2 vs gehlenite), and each volume is normalised by its own grey levels,
        which removes most scan-to-scan drift.
    checkpoint_every : int
        Iterations between checkpoints.
    clip_grad : float
        Largest gradient norm (larger ones are scaled down).
    seed : int
    precision : str
        ``auto``: bf16 autocast on a GPU that supports it, fp32 on CPU (bf16 backward
        passes on CPU are not reproducible run to run); ``fp32`` or ``bf16``.
    """

    iterations: int = 1200
    batch_size: int = 2
    patch: tuple[int, int, int] = (32, 96, 96)
    learning_rate: float = 3e-3
    warmup: int = 50
    class_balance: float = 0.5
    class_weight: float = 0.75
    gain_jitter: float = 0.03
    offset_jitter: float = 0.02
    checkpoint_every: int = 100
    clip_grad: float = 2.0
    seed: int = 0
    precision: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "patch", tuple(int(p) for p in self.patch))
        if len(self.patch) != 3 or any(p < 16 or p % 16 for p in self.patch):
            raise InputError("train config", f"patch edges must be multiples of 16, got {self.patch}")
        if self.patch[1] != self.patch[2]:
            raise InputError("train config", f"patch y and x must be equal (90° rotations), got {self.patch}")
        if self.iterations < 1 or self.batch_size < 1:
            raise InputError("train config", "iterations and batch_size must be positive")
        if not 0 <= self.class_balance <= 1:
            raise InputError("train config", f"class_balance must be in 0-1, got {self.class_balance}")
        if not 0 <= self.class_weight <= 1:
            raise InputError("train config", f"class_weight must be in 0-1, got {self.class_weight}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["patch"] = list(self.patch)
        return d


@dataclass
class TrainResult:
    """Weights and record of a finished training run."""

    state: dict
    losses: list[float]
    seconds: float
    resumed_at: int
    skipped: int = 0

    def record(self) -> dict:
        n = len(self.losses)
        tail = self.losses[-max(1, n // 10):]
        return {"iterations": n + self.skipped, "skipped_non_finite": self.skipped, "seconds": round(self.seconds, 1),
                "resumed_at": self.resumed_at,
                "final_loss": float(np.mean(tail)) if tail else None,
                "loss_every_50": [round(float(np.mean(self.losses[i:i + 50])), 4) for i in range(0, n, 50)]}


def _lr_factor(it: int, config: TrainConfig) -> float:
    if it < config.warmup:
        return (it + 1) / config.warmup
    t = (it - config.warmup) / max(1, config.iterations - config.warmup)
    return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


class PatchSampler:
    """Draws augmented (image, target) patch batches around labelled voxels.

    Parameters
    ----------
    image : (Z, Y, X) float32 ndarray, or a lazy array-like
        Normalised CT; anything sliceable that is not an ndarray (e.g.
        :class:`~mineral3d.intensity.NormalisedVolume` of a Zarr CT) is read patch by patch,
        and the labels are then looked up per patch instead of held as a dense volume.
    zyx : (N, 3) int ndarray
        Labelled voxels.
    target : (N,) int ndarray
        Class index (0..K-1) of each labelled voxel.
    n_classes : int
    config : TrainConfig
    """

    def __init__(self, image: np.ndarray, zyx: np.ndarray, target: np.ndarray, n_classes: int,
                 config: TrainConfig, *, weight: np.ndarray | None = None, focus: np.ndarray | None = None,
                 focus_share: float = 0.5) -> None:
        self.config = config
        patch = np.array(config.patch)
        pad = np.maximum(0, patch - np.array(image.shape))
        widths = [(int(p) // 2, int(p) - int(p) // 2) for p in pad]
        self.image = np.pad(image, widths, mode="reflect") if pad.any() else image
        self.offset = np.array([w[0] for w in widths])
        zyx = np.asarray(zyx) + self.offset
        # labels as a dense volume (2 bytes per voxel), or, for a lazy image that is not held in
        # memory, sorted by flat index and looked up per patch: the same targets either way
        self.lazy = not isinstance(self.image, np.ndarray)
        if self.lazy:
            flat = np.ravel_multi_index(tuple(zyx.T), self.image.shape)
            order = np.argsort(flat, kind="stable")
            self.flat, self.flat_target = flat[order], np.asarray(target)[order].astype(np.int16)
            self.flat_weight = None if weight is None else np.asarray(weight, np.float32)[order]
        else:
            self.dense = np.full(self.image.shape, IGNORE, dtype=np.int16)
            self.dense[tuple(zyx.T)] = target
        counts = np.bincount(target, minlength=n_classes).astype(float)
        self.present = np.flatnonzero(counts)
        if self.present.size == 0:
            raise InputError("labels", "no labelled voxels to train on")
        p = counts[self.present] ** (1.0 - config.class_balance)
        self.class_p = p / p.sum()
        order = np.argsort(target, kind="stable")
        self.by_class = {int(c): zyx[order][target[order] == c] for c in self.present}
        self.weight = None
        if weight is not None and not self.lazy:  # per-voxel loss weights (e.g. the user's corrections count more)
            self.weight = np.zeros(self.image.shape, np.float32)
            self.weight[tuple(zyx.T)] = np.asarray(weight, np.float32)
        self.focus = None
        if focus is not None and np.any(focus):  # a share of the patches is centred on these voxels
            self.focus, self.focus_share = zyx[np.asarray(focus, bool)], float(focus_share)

    def _origin(self, rng: np.random.Generator) -> np.ndarray:
        if self.focus is not None and rng.random() < self.focus_share:
            pts = self.focus
        else:
            pts = self.by_class[int(rng.choice(self.present, p=self.class_p))]
        centre = pts[rng.integers(0, len(pts))]
        patch = np.array(self.config.patch)
        jitter = rng.integers(-(patch // 4), patch // 4 + 1)
        origin = centre - patch // 2 + jitter
        return np.clip(origin, 0, np.array(self.image.shape) - patch)

    def _sparse_patch(self, sl: tuple[slice, ...]) -> tuple[np.ndarray, np.ndarray | None]:
        """Targets (and weights) of a patch from the sorted flat labels: one index range per (z, y) row."""
        shape = tuple(s.stop - s.start for s in sl)
        zz, yy = np.meshgrid(np.arange(sl[0].start, sl[0].stop), np.arange(sl[1].start, sl[1].stop), indexing="ij")
        start = np.ravel_multi_index((zz.reshape(-1), yy.reshape(-1), np.full(zz.size, sl[2].start)),
                                     self.image.shape)
        lo = np.searchsorted(self.flat, start)
        hi = np.searchsorted(self.flat, start + shape[2])
        y = np.full(shape, IGNORE, dtype=np.int16)
        w = None if self.flat_weight is None else np.zeros(shape, np.float32)
        n = hi - lo
        if n.sum():
            row = np.repeat(np.arange(n.size), n)
            idx = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n) + np.repeat(lo, n)
            col = self.flat[idx] - start[row]
            y.reshape(-1, shape[2])[row, col] = self.flat_target[idx]
            if w is not None:
                w.reshape(-1, shape[2])[row, col] = self.flat_weight[idx]
        return y, w

    def batch(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(B, 1, z, y, x) float32 images and (B, z, y, x) int64 targets."""
        x, y, _ = self.weighted_batch(rng)
        return x, y

    def weighted_batch(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """:meth:`batch` and the (B, z, y, x) float32 per-voxel loss weights (None without weights)."""
        cfg = self.config
        xs, ys, ws = [], [], []
        for _ in range(cfg.batch_size):
            o = self._origin(rng)
            sl = tuple(slice(int(a), int(a) + p) for a, p in zip(o, cfg.patch))
            if self.lazy:
                x = np.asarray(self.image[sl])
                y, w = self._sparse_patch(sl)
            else:
                x, y = self.image[sl], self.dense[sl]
                w = self.weight[sl] if self.weight is not None else None
            flips = tuple(int(a) for a in np.flatnonzero(rng.random(3) < 0.5))
            if flips:
                x, y = np.flip(x, flips), np.flip(y, flips)
                w = None if w is None else np.flip(w, flips)
            k = int(rng.integers(0, 4))
            if k:
                x, y = np.rot90(x, k, axes=(1, 2)), np.rot90(y, k, axes=(1, 2))
                w = None if w is None else np.rot90(w, k, axes=(1, 2))
            gain = 1.0 + rng.uniform(-cfg.gain_jitter, cfg.gain_jitter)
            off = rng.uniform(-cfg.offset_jitter, cfg.offset_jitter)
            xs.append(np.ascontiguousarray(x, dtype=np.float32) * np.float32(gain) + np.float32(off))
            ys.append(np.ascontiguousarray(y))
            if w is not None:
                ws.append(np.ascontiguousarray(w))
        return np.stack(xs)[:, None], np.stack(ys).astype(np.int64), (np.stack(ws) if ws else None)


def class_weights(target: np.ndarray, n_classes: int, power: float, device) -> torch.Tensor | None:
    """Per-class loss weights ``count ** -power``, mean 1 over the labelled voxels (None for power 0)."""
    if power == 0:
        return None
    counts = np.bincount(target, minlength=n_classes).astype(np.float64)
    w = np.where(counts > 0, np.maximum(counts, 1.0) ** -power, 0.0)
    w *= counts.sum() / max((w * counts).sum(), 1e-12)
    return torch.tensor(w, dtype=torch.float32, device=device)


def _weighted_loss(logits: torch.Tensor, target: torch.Tensor, voxel_w: torch.Tensor,
                   class_w: torch.Tensor | None) -> torch.Tensor:
    """Cross-entropy weighted per class and per voxel, normalised by the total weight."""
    ce = torch.nn.functional.cross_entropy(logits, target, ignore_index=IGNORE, reduction="none")
    labelled = target != IGNORE
    w = voxel_w * labelled
    if class_w is not None:
        w = w * class_w[target.clamp(min=0)]
    return (ce * w).sum() / w.sum().clamp(min=1e-12)


def _fingerprint(network: NetworkConfig, config: TrainConfig, image: np.ndarray, zyx: np.ndarray,
                 target: np.ndarray) -> str:
    h = hashlib.sha256(json.dumps([network.to_dict(), config.to_dict()], sort_keys=True).encode())
    h.update(str(image.shape).encode())
    h.update(np.ascontiguousarray(image[::7, ::7, ::7]).tobytes())
    h.update(np.ascontiguousarray(zyx).tobytes())
    h.update(np.ascontiguousarray(target).tobytes())
    return h.hexdigest()[:16]


def train(image: np.ndarray, zyx: np.ndarray, target: np.ndarray, network: NetworkConfig, config: TrainConfig,
          *, device: torch.device | str = "cpu", checkpoint: str | os.PathLike | None = None,
          progress: Callable[[int, int, float], None] | None = None, weight: np.ndarray | None = None,
          focus: np.ndarray | None = None, init_state: dict | None = None) -> TrainResult:
    """Train ``network`` on labelled voxels of one volume.

    Parameters
    ----------
    image : (Z, Y, X) float32 ndarray
        Normalised CT (:meth:`mineral3d.intensity.GreyLevels.normalise`).
    zyx : (N, 3) int ndarray
        Labelled voxel coordinates.
    target : (N,) int ndarray
        Class index (0 .. ``network.out_channels`` - 1) of each labelled voxel.
    network, config
    device : torch.device or str
    checkpoint : path, optional
        File for periodic checkpoints. If it exists and was written by a run with the same
        inputs and settings, training resumes from it; it is deleted when training ends.
    progress : callable(iteration, total, loss), optional
    weight : (N,) float ndarray, optional
        Loss weight of each labelled voxel (default: all 1). The loss is then the
        weighted mean ``sum(w_class * w_voxel * ce) / sum(w_class * w_voxel)``.
    focus : (N,) bool ndarray, optional
        Voxels on which half of the patches are centred (e.g. the user's corrections),
        whatever their class.
    init_state : dict, optional
        Start from these weights (fine-tuning) instead of a random initialisation.

    Returns
    -------
    TrainResult
    """
    device = torch.device(device)
    runtime.prepare(device)
    target = np.asarray(target, dtype=np.int64)
    if target.size and (target.min() < 0 or target.max() >= network.out_channels):
        raise InputError("labels", f"class indices must be in 0..{network.out_channels - 1}")
    sampler = PatchSampler(image, zyx, target, network.out_channels, config, weight=weight, focus=focus)
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    net = network.build().to(device)
    if init_state is not None:
        net.load_state_dict(init_state)
    opt = torch.optim.AdamW(net.parameters(), lr=config.learning_rate, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: _lr_factor(it, config))
    bf16 = runtime.use_bf16(config.precision, device, training=True)
    if device.type == "cuda":
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    losses: list[float] = []
    start_it, elapsed, skipped = 0, 0.0, 0
    key = _fingerprint(network, config, image, zyx, target)
    if weight is not None or focus is not None or init_state is not None:
        h = hashlib.sha256(key.encode())
        for a in (weight, focus):
            h.update(b"-" if a is None else np.ascontiguousarray(a).tobytes())
        for v in (init_state or {}).values():
            h.update(v.detach().cpu().numpy().tobytes()[:4096])
        key = h.hexdigest()[:16]
    ckpt = Path(checkpoint) if checkpoint is not None else None
    if ckpt is not None and ckpt.is_file():
        try:
            saved = torch.load(ckpt, map_location="cpu", weights_only=False)
        except Exception:  # a damaged checkpoint is only lost time: start again
            saved = None
        if saved is not None and saved.get("key") == key:
            net.load_state_dict(saved["net"])
            opt.load_state_dict(saved["opt"])
            sched.load_state_dict(saved["sched"])
            rng.bit_generator.state = saved["rng"]
            torch.set_rng_state(saved["torch_rng"])
            losses, start_it, elapsed = list(saved["losses"]), int(saved["iteration"]), float(saved["elapsed"])
            skipped = int(saved.get("skipped", 0))
    resumed_at = start_it
    cw = class_weights(target, network.out_channels, config.class_weight, device)
    loss_fn = torch.nn.CrossEntropyLoss(weight=cw, ignore_index=IGNORE)
    net.train()
    t0 = time.perf_counter()
    for it in range(start_it, config.iterations):
        x, y, w = sampler.weighted_batch(rng)
        xt = torch.from_numpy(x).to(device)
        yt = torch.from_numpy(y).to(device)
        with runtime.autocast(device, bf16):
            logits = net(xt)
        if w is None:
            loss = loss_fn(logits.float(), yt)
        else:
            loss = _weighted_loss(logits.float(), yt, torch.from_numpy(w).to(device), cw)
        opt.zero_grad(set_to_none=True)
        ok = bool(torch.isfinite(loss))
        if ok:
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(net.parameters(), config.clip_grad)
            ok = bool(torch.isfinite(norm))
        if ok:
            opt.step()
            losses.append(float(loss.detach()))
        else:  # a degenerate batch (e.g. a bf16 overflow) is skipped, not learned from
            skipped += 1
        sched.step()
        done = it + 1
        if progress is not None:
            progress(done, config.iterations, float(np.mean(losses[-20:])))
        if ckpt is not None and (done % config.checkpoint_every == 0) and done < config.iterations:
            with atomic_file(ckpt) as tmp:
                torch.save({"key": key, "net": net.state_dict(), "opt": opt.state_dict(),
                            "sched": sched.state_dict(), "rng": rng.bit_generator.state,
                            "torch_rng": torch.get_rng_state(), "losses": losses, "iteration": done, "skipped": skipped,
                            "elapsed": elapsed + time.perf_counter() - t0}, tmp)
    elapsed += time.perf_counter() - t0
    state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    if ckpt is not None and ckpt.exists():
        ckpt.unlink()
    return TrainResult(state, losses, elapsed, resumed_at, skipped)

"""Tiled inference over volumes of any size.

Two levels of tiling:

- a **block** (default 128 x 256 x 256 voxels plus a ``halo`` on every side) is read
  from the (possibly lazy: memory-mapped TIFF, Zarr) volume, normalised and predicted;
  the halo is cut off and the block's result is handed to a writer (e.g. a Zarr
  array), so memory holds one block, never the volume;
- inside a block, MONAI's ``sliding_window_inference`` runs the network on ``tile``
  windows with ``overlap``, blended by a Gaussian.

On request each window is also predicted mirrored (test-time augmentation,
``InferConfig.tta``): the network was trained on patches flipped along every axis, so each
mirror image is an equally valid reading of the same voxels, and their mean class
probabilities are less noisy than any one (nnU-Net's mirroring; measured in
docs/benchmarks.md, "Mirrored inference").

When the volume fits in one block the result is exactly MONAI's whole-volume sliding
window; across blocks, the halo (>= a quarter tile) keeps every voxel's windows
away from block edges. A model trained at another voxel size is applied to each block
resampled (trilinear) to the model's voxel size, and the class probabilities are
resampled back, when the caller allows it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from mineral3d.nn import runtime


@dataclass(frozen=True)
class InferConfig:
    """Inference settings.

    Attributes
    ----------
    tile : (3,) tuple of int
        Sliding-window size, voxels (multiples of 16). 64³ is fastest on CPU.
    overlap : float
        Fraction of a tile shared with its neighbours.
    sw_batch_size : int
        Windows per forward pass.
    block : (3,) tuple of int
        Core block shape, voxels (the unit of out-of-core work and of resuming).
    halo : int
        Extra voxels read around each block.
    z_pad : int
        Voxels of mirrored image added above and below along z before the sliding window
        (and cut off after). Training patches are thin in z with their labels away from
        the patch's z faces, so the network never learned to predict at a window's z edge
        (zero padding there); without this, the first and last slices of a volume come
        out as spurious material.
    precision : str
        auto (bf16 where native), fp32 or bf16.
    tta : str
        Test-time mirroring: ``"none"`` (one pass, the default), ``"flips"`` (the window as
        it is and flipped along z, y and x: 4 passes) or ``"all-flips"`` (all 8
        combinations of the three flips). The class probabilities are the mean over the
        passes. Assumes a network trained with flips along every axis (as
        :mod:`mineral3d.nn.train` does): a CT has no preferred direction for phases. Not
        the default: on ten generated samples "flips" raised the phase IoU by about 0.01
        and left the per-particle grade errors, hence the liberation, where they were, at
        4x the inference time (docs/benchmarks.md, "Mirrored inference").
    """

    tile: tuple[int, int, int] = (64, 64, 64)
    overlap: float = 0.25
    sw_batch_size: int = 2
    block: tuple[int, int, int] = (128, 256, 256)
    halo: int = 16
    z_pad: int = 8
    precision: str = "auto"
    tta: str = "none"

    def __post_init__(self):
        if self.tta not in TTA_FLIPS:
            raise ValueError(f"tta must be one of {', '.join(TTA_FLIPS)}, got {self.tta!r}")


TTA_FLIPS: dict[str, tuple[tuple[int, ...], ...]] = {
    "none": ((),),
    "flips": ((), (0,), (1,), (2,)),
    "all-flips": tuple(c for r in range(4) for c in itertools.combinations((0, 1, 2), r)),
}
"""Spatial axes (z, y, x) flipped in each test-time pass, per ``InferConfig.tta``."""


def check_tta(value: str, source: str, name: str = "tta") -> str:
    """``value`` if it names a test-time mirroring of :data:`TTA_FLIPS`, else a one-line InputError."""
    from mineral3d.errors import InputError

    if value not in TTA_FLIPS:
        raise InputError(source, f"{name} must be one of {', '.join(TTA_FLIPS)}, got {value!r}")
    return value


def predict_probabilities(net: torch.nn.Module, image: np.ndarray, *, config: InferConfig = InferConfig(),
                          device: torch.device | str = "cpu") -> np.ndarray:
    """Class probabilities (K, Z, Y, X) float32 of a normalised (Z, Y, X) image, in memory."""
    from monai.inferers import sliding_window_inference

    device = torch.device(device)
    runtime.prepare(device)
    bf16 = runtime.use_bf16(config.precision, device)
    net = net.to(device).eval()
    if device.type == "cpu":
        net = net.to(memory_format=torch.channels_last_3d)
    tile = tuple(int(t) for t in config.tile)
    zp = int(config.z_pad)
    if zp > 0:
        image = np.pad(image, ((zp, zp), (0, 0), (0, 0)), mode="symmetric")
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]

    passes = TTA_FLIPS[config.tta]

    def predict(batch: torch.Tensor) -> torch.Tensor:
        if device.type == "cpu":
            batch = batch.contiguous(memory_format=torch.channels_last_3d)
        with runtime.autocast(device, bf16):
            out = net(batch.to(device))
        return torch.softmax(out.float(), dim=1)

    def predictor(batch: torch.Tensor) -> torch.Tensor:
        total = None
        for axes in passes:
            dims = tuple(a + 2 for a in axes)  # (N, C, z, y, x)
            p = predict(torch.flip(batch, dims)) if dims else predict(batch)
            p = torch.flip(p, dims) if dims else p
            total = p if total is None else total + p
        return total / len(passes) if len(passes) > 1 else total

    with torch.inference_mode():
        prob = sliding_window_inference(x, tile, config.sw_batch_size, predictor, overlap=config.overlap,
                                        mode="gaussian", padding_mode="replicate", sw_device=device,
                                        device=torch.device("cpu"))
    prob = prob[0].numpy()
    return prob[:, zp:prob.shape[1] - zp] if zp > 0 else prob


def blocks(shape, block) -> Iterator[tuple[slice, slice, slice]]:
    """Core block slices covering ``shape`` in C order."""
    ranges = [range(0, s, b) for s, b in zip(shape, block)]
    for start in itertools.product(*ranges):
        yield tuple(slice(a, min(a + b, s)) for a, b, s in zip(start, block, shape))


def _resample(a: np.ndarray, shape) -> np.ndarray:
    """Trilinear resampling of the last three axes of ``a`` to ``shape`` (voxel areas aligned)."""
    factors = [1.0] * (a.ndim - 3) + [n / o for n, o in zip(shape, a.shape[-3:])]
    out = ndimage.zoom(a, factors, order=1, mode="nearest", grid_mode=True, prefilter=False)
    # zoom rounds the output shape: crop or pad by edge values to exactly ``shape``
    if out.shape[-3:] != tuple(shape):
        pad = [(0, 0)] * (a.ndim - 3) + [(0, max(0, n - o)) for n, o in zip(shape, out.shape[-3:])]
        out = np.pad(out, pad, mode="edge")[(..., *(slice(0, n) for n in shape))]
    return out


def predict_blocks(volume, normalise: Callable[[np.ndarray], np.ndarray], net: torch.nn.Module, *,
                   config: InferConfig = InferConfig(), device: torch.device | str = "cpu",
                   zoom: float = 1.0, skip: Callable[[int], bool] | None = None,
                   ) -> Iterator[tuple[int, tuple[slice, slice, slice], np.ndarray]]:
    """Predict a volume block by block.

    Parameters
    ----------
    volume : (Z, Y, X) array-like
        Anything sliceable: ndarray, memmap, Zarr array.
    normalise : callable
        (grey block, origin=(z, y, x) of its first voxel in the volume) -> normalised float32
        block, e.g. :meth:`mineral3d.intensity.GreyLevels.normalise`.
    net : torch.nn.Module
    config : InferConfig
    device : torch.device or str
    zoom : float
        Volume voxel size / model voxel size: blocks are resampled by this factor before
        the network and the probabilities back after it (1: no resampling).
    skip : callable(block_number) -> bool, optional
        Blocks to leave out (already done by an interrupted run).

    Yields
    ------
    number : int
        Block number (C order).
    slices : tuple of slice
        Where the block lies in the volume.
    prob : (K, z, y, x) float32 ndarray
        Class probabilities of the block's voxels.
    """
    for number, core in enumerate(blocks(tuple(volume.shape), config.block)):
        if skip is not None and skip(number):
            continue
        yield number, core, predict_block(volume, normalise, net, core, config=config, device=device, zoom=zoom)


def predict_block(volume, normalise: Callable[[np.ndarray], np.ndarray], net: torch.nn.Module,
                  core: tuple[slice, slice, slice], *, config: InferConfig = InferConfig(),
                  device: torch.device | str = "cpu", zoom: float = 1.0) -> np.ndarray:
    """Class probabilities (K, z, y, x) of the voxels of ``core``, read with ``config.halo`` around it.

    One unit of :func:`predict_blocks` (same parameters), for schedulers that hand blocks to
    workers.
    """
    shape = tuple(volume.shape)
    h = int(config.halo)
    outer = tuple(slice(max(0, s.start - h), min(n, s.stop + h)) for s, n in zip(core, shape))
    image = normalise(np.asarray(volume[outer]), origin=tuple(o.start for o in outer))
    if zoom != 1.0:
        target = [max(1, int(round(n * zoom))) for n in image.shape]
        prob = predict_probabilities(net, _resample(image, target), config=config, device=device)
        prob = _resample(prob, image.shape)
    else:
        prob = predict_probabilities(net, image, config=config, device=device)
    inner = tuple(slice(c.start - o.start, c.stop - o.start) for c, o in zip(core, outer))
    return prob[(slice(None), *inner)]

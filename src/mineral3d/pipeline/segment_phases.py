"""Phase segmentation steps with files: labels from registered sections, train, segment.

The core work is in :mod:`mineral3d.labels`, :mod:`mineral3d.nn` and
:mod:`mineral3d.baseline`; this module reads the sample and the registration folder,
checks that model and volume belong together, and writes results atomically (training
checkpoints and finished blocks let an interrupted step resume).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from mineral3d.baseline import GreyClassifier
from mineral3d.calibrate import classify
from mineral3d.cluster import client_of
from mineral3d.errors import InputError
from mineral3d.intensity import GreyLevels, NormalisedVolume, edge_sigma_vox
from mineral3d.io.atomic import write_json
from mineral3d.io.sample import Sample
from mineral3d.io.transforms import read_transform
from mineral3d.io.volumes import take_voxels
from mineral3d.labels import SparseLabels, merge_labels, section_voxels
from mineral3d.nn import runtime
from mineral3d.nn.infer import InferConfig, blocks, predict_blocks
from mineral3d.nn.model import Model
from mineral3d.nn.network import NetworkConfig
from mineral3d.nn.train import TrainConfig, train
from mineral3d.phase_table import UNCLASSIFIED, PhaseTable
from mineral3d.plane import PlaneTransform

VOXEL_TOLERANCE = 0.05
"""Largest relative voxel-size difference between model and volume applied without resampling."""


def registered_transform(registration: str | os.PathLike, section: str) -> PlaneTransform:
    """The transform ``mineral3d register`` wrote for ``section``."""
    path = Path(registration) / f"{section}.json"
    if not path.is_file():
        raise InputError(path, f"no registration for section {section!r} (run `mineral3d register` first, "
                               "or it was refused: see its message)")
    return read_transform(path)[0]


def section_labels(sample: Sample, registration: str | os.PathLike, *, role: str = "train",
                   sections: list[str] | None = None, min_fraction: float = 0.5) -> tuple[SparseLabels, list[str]]:
    """Merged sparse labels of the sample's ``role`` sections (or the named ``sections``)."""
    names = sections or [c.name for c in sample.config.sections if c.role == role]
    if not names:
        raise InputError(sample.root / "sample.toml", f"no {role}-role sections to learn from")
    shape = sample.ct().shape
    parts = [section_voxels(shape, sample.section_map(n), registered_transform(registration, n),
                            min_fraction=min_fraction) for n in names]
    labels = merge_labels(parts)
    if len(labels) == 0:
        raise InputError(Path(registration), "the registered sections label no CT voxel (planes outside the volume?)")
    return labels, names


def section_area_fractions(sample: Sample, registration: str | os.PathLike, names: list[str],
                           classes: list[int]) -> np.ndarray:
    """Share of each class among the classified map pixels that fall inside the CT (Delesse)."""
    shape = np.array(sample.ct().shape)
    counts = np.zeros(len(classes))
    lut = np.full(256, -1, np.int64)
    lut[classes] = np.arange(len(classes))
    for n in names:
        ids = sample.section_map(n)
        zyx = registered_transform(registration, n).grid(ids.shape).reshape(3, -1)
        inside = np.all((zyx >= -0.5) & (zyx < shape[:, None] - 0.5), axis=0)
        c = lut[ids.reshape(-1)[inside]]
        counts += np.bincount(c[c >= 0], minlength=len(classes))
    return counts / max(counts.sum(), 1)


MIN_RESIN_LABELS = 1000
"""Fewer labelled resin (or material) voxels than this: no resin offset (the network's own split)."""


def _calibrate(model: Model, ct: np.ndarray, area_fractions: np.ndarray, device, *, seed: int,
               labels: SparseLabels | None = None, max_blocks: int = 8, voxels: int = 400_000) -> list[float]:
    """Class offsets on the training volume: the labelled voxels' resin share, the sections' material fractions.

    With ``labels``, the whole volume is predicted once and the resin offset is fitted on
    the labelled voxels (:func:`mineral3d.calibrate.fit_background_offset`); the material
    offsets are fitted on a sample of voxels of up to ``max_blocks`` blocks, with that
    resin offset deciding which voxels are material (:func:`~mineral3d.calibrate.fit_class_bias`).
    """
    from mineral3d.calibrate import fit_background_offset, fit_class_bias

    config = InferConfig()
    n = len(list(blocks(ct.shape, config.block)))
    keep = set(np.unique(np.linspace(0, n - 1, min(n, max_blocks)).round().astype(int)).tolist())
    per_block = voxels // len(keep)
    rng = np.random.default_rng(seed)
    net = model.build(device)
    background = model.classes.index(0) if 0 in model.classes else 0
    resin_id = model.classes[background]
    zyx = None if labels is None else labels.zyx
    plane = int(np.prod(ct.shape[1:]))
    samples, labelled, is_resin = [], [], []
    for number, sl, prob in predict_blocks(ct, model.levels.normalise, net, config=config, device=device,
                                           skip=None if labels is not None else (lambda b: b not in keep)):
        if zyx is not None:  # the labelled voxels of this block: its z range of the sorted indices, then y and x
            lo = np.array([a.start for a in sl])
            hi = np.array([a.stop for a in sl])
            first, last = np.searchsorted(labels.index, [sl[0].start * plane, sl[0].stop * plane])
            rows = zyx[first:last]
            inside = first + np.flatnonzero(np.all((rows[:, 1:] >= lo[1:]) & (rows[:, 1:] < hi[1:]), axis=1))
            local = (zyx[inside] - lo).T
            labelled.append(prob[(slice(None), *local)].T)
            is_resin.append(labels.label[inside] == resin_id)
        if number not in keep:
            continue
        flat = prob.reshape(prob.shape[0], -1)
        take = rng.choice(flat.shape[1], min(per_block, flat.shape[1]), replace=False)
        samples.append(flat[:, np.sort(take)].T)
    offset = 0.0
    if labelled:
        resin = np.concatenate(is_resin)
        if min(resin.sum(), (~resin).sum()) >= MIN_RESIN_LABELS:
            offset = fit_background_offset(np.concatenate(labelled), resin, background=background)
    return fit_class_bias(np.concatenate(samples), area_fractions, background=background,
                          background_offset=offset).tolist()


def material_classes(table: PhaseTable) -> list[int]:
    """Output classes of a phase model: every phase id but 'unclassified' (255)."""
    return [int(i) for i in table.ids if i != UNCLASSIFIED]


def checkpoint_for(model_dir: str | os.PathLike) -> Path:
    """The training checkpoint of model folder ``model_dir``: ``.<name>.checkpoint.pt`` beside it."""
    model_dir = Path(model_dir)
    return model_dir.parent / f".{model_dir.name}.checkpoint.pt"


def train_on_sections(sample: Sample, registration: Path, model_dir: Path, *, sections: list[str] | None,
                      config: TrainConfig, features: tuple[int, ...] | None = None, calibrate: bool = True,
                      device: str = "auto", progress: Callable[[int, int, float], None] | None = None,
                      announce: Callable[[SparseLabels, list[str]], None] | None = None,
                      overwrite: bool = False, corrections: Path | None = None,
                      correction_weight: float = 2.0) -> Model:
    """Train a phase model on the registered ``sections`` of ``sample`` and save it to ``model_dir``.

    The one implementation behind ``mineral3d train`` and the run's train step: sparse
    labels from the registered maps, the sections' area fractions for calibration (unless
    ``calibrate`` is False), a checkpoint beside the model folder (:func:`checkpoint_for`:
    an interrupted call resumes). ``announce(labels, used_sections)`` is called before training.
    With ``corrections`` (a store of :mod:`mineral3d.io.corrections`), its latest round joins
    the labels as in :func:`finetune_on_corrections`, but training starts from random weights.
    """
    from mineral3d.nn import save_model

    labels, used = section_labels(sample, registration, sections=sections)
    weight = focus = None
    if corrections is not None:
        from mineral3d.io.corrections import read_corrections
        from mineral3d.labels import with_corrections

        corr = read_corrections(corrections, shape=labels.shape)
        labels, weight, focus = with_corrections(labels, corr.index, corr.label, weight=correction_weight)
    classes = material_classes(sample.phase_table)
    fractions = section_area_fractions(sample, registration, used, classes) if calibrate else None
    network = NetworkConfig(out_channels=len(classes), **({"features": tuple(features)} if features else {}))
    if announce is not None:
        announce(labels, used)
    model = train_phase_model(sample.ct_for_processing(), labels, voxel_size_um=sample.voxel_size_um,
                              phase_table=sample.phase_table, network=network, config=config, device=device,
                              checkpoint=checkpoint_for(model_dir), progress=progress,
                              info={"sample": str(sample.root), "sections": used}, area_fractions=fractions,
                              voxel_weight=weight, focus=focus)
    save_model(model_dir, model, overwrite=overwrite)
    return model


def finetune_on_corrections(sample: Sample, registration: Path | None, base_dir: Path, corrections_path: Path,
                            model_dir: Path, *, sections: list[str], config: TrainConfig,
                            correction_weight: float = 2.0, device: str = "auto",
                            progress: Callable[[int, int, float], None] | None = None) -> Model:
    """Fine-tune the model in ``base_dir`` on the sections' labels plus the user's corrections; save to ``model_dir``.

    Labels: the registered ``sections`` (none for a sample without sections) merged with
    the latest round of ``corrections_path`` by :func:`mineral3d.labels.with_corrections`
    (corrections overrule section labels and weigh ``correction_weight``, twice that where
    they overrule); half of the patches are centred on corrected voxels. Training starts
    from the base model's weights and grey levels and runs ``config.iterations``; the class
    offsets are recalibrated on the sections' area fractions as in :func:`train_on_sections`.
    """
    from mineral3d.io.corrections import read_corrections
    from mineral3d.labels import with_corrections
    from mineral3d.nn import load_model, save_model

    base = load_model(base_dir)
    ct = sample.ct_for_processing()
    corr = read_corrections(corrections_path, shape=ct.shape)
    table = sample.phase_table
    unknown = sorted(set(np.unique(corr.label).tolist()) - set(material_classes(table)))
    if unknown:
        raise InputError(corrections_path, f"painted phase ids {unknown} are not in the phase table")
    labels = section_labels(sample, registration, sections=sections)[0] if sections else None
    merged, weight, corrected = with_corrections(labels, corr.index, corr.label, shape=ct.shape,
                                                 weight=correction_weight)
    fractions = base.info.get("section_area_fractions")
    fractions = None if fractions is None else np.array([fractions[table.name_of(c)] for c in base.classes])
    model = train_phase_model(ct, merged, voxel_size_um=sample.voxel_size_um, phase_table=table,
                              config=config, device=device, checkpoint=checkpoint_for(model_dir),
                              progress=progress, area_fractions=fractions, voxel_weight=weight, focus=corrected,
                              init=base, info={"sample": str(sample.root), "sections": sections,
                                               "fine_tuned_from": str(base_dir),
                                               "corrections": {"store": str(corrections_path), "round": corr.round,
                                                               "voxels": len(corr),
                                                               "per_phase": {table.name_of(k): v for k, v in
                                                                             corr.counts().items()},
                                                               "weight": correction_weight}})
    save_model(model_dir, model, overwrite=True)
    return model


RADIAL_TREND = True
"""Default of :func:`train_phase_model`: remove the CT's radial grey trend (cupping) before
training and segmenting. Sections cover the middle of the field of view; without this a
model learns the middle's grey levels and misreads phases towards the rim (docs/phases.md)."""


def train_phase_model(ct: np.ndarray, labels: SparseLabels, *, voxel_size_um: float, phase_table: PhaseTable,
                      network: NetworkConfig | None = None, config: TrainConfig = TrainConfig(),
                      device: str = "auto", checkpoint: str | os.PathLike | None = None,
                      progress: Callable[[int, int, float], None] | None = None, info: dict | None = None,
                      area_fractions: np.ndarray | None = None, voxel_weight: np.ndarray | None = None,
                      focus: np.ndarray | None = None, init: Model | None = None,
                      radial_trend: bool = RADIAL_TREND) -> Model:
    """Train a phase model on ``labels`` of ``ct``; also fits the grey-value baseline on them.

    With ``radial_trend`` the CT is normalised with its grey levels' change with the
    distance from the rotation axis (:class:`mineral3d.intensity.RadialTrend`: cupping);
    the model records it, and ``segment_phases`` then measures and removes each volume's own.

    With ``area_fractions`` (per class, from :func:`section_area_fractions`), the model's
    material-phase offsets are calibrated so that its modal mineralogy on ``ct`` matches
    them (:mod:`mineral3d.calibrate`). ``voxel_weight`` and ``focus`` (per labelled voxel)
    go to :func:`mineral3d.nn.train.train`; ``init`` (a model of the same network) is
    fine-tuned instead of training from random weights, with its grey levels.
    """
    classes = material_classes(phase_table)
    lut = np.full(256, -1, np.int64)
    lut[classes] = np.arange(len(classes))
    target = lut[labels.label]
    if (target < 0).any():
        bad = sorted(set(labels.label[target < 0].tolist()))
        raise InputError("labels", f"phase ids {bad} are not in the phase table")
    levels = init.levels if init is not None else GreyLevels.from_volume(ct, seed=config.seed, trend=radial_trend)
    # a CT not held in memory (Zarr, memory map) is read and normalised patch by patch
    image = levels.normalise(ct) if isinstance(ct, np.ndarray) else NormalisedVolume(ct, levels)
    network = init.network if init is not None else network or NetworkConfig(out_channels=len(classes))
    if network.out_channels != len(classes):
        raise InputError("network", f"{network.out_channels} outputs for {len(classes)} phases")
    dev = runtime.resolve_device(device)
    result = train(image, labels.zyx, target, network, config, device=dev, checkpoint=checkpoint,
                   progress=progress, weight=voxel_weight, focus=focus,
                   init_state=None if init is None else init.state)
    baseline = GreyClassifier.fit(levels.normalise_voxels(take_voxels(ct, labels.index), labels.index, ct.shape),
                                  labels.label)
    record = {"train": config.to_dict(), "record": result.record(), "labels": {
        "voxels": len(labels), "per_phase": {phase_table.name_of(k): v for k, v in labels.counts().items()}},
        "baseline": baseline.to_dict(), "device": str(dev)}
    record.update(info or {})
    model = Model(network=network, classes=classes, voxel_size_um=voxel_size_um, levels=levels, task="phases",
                  phase_table=phase_table, state=result.state, info=record,
                  edge_sigma_vox=_finite_or_none(edge_sigma_vox(ct, levels=levels, seed=config.seed)))
    if area_fractions is not None:
        model.class_bias = _calibrate(model, ct, np.asarray(area_fractions, float), dev, seed=config.seed,
                                      labels=labels)
        record["section_area_fractions"] = {phase_table.name_of(c): float(f) for c, f in zip(classes, area_fractions)}
    return model


def _finite_or_none(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None


# --- applying a model -----------------------------------------------------------------------

EDGE_TOLERANCE = 0.2
"""Largest relative difference of edge blur (voxels) between a CT and the model's training CT
at which the model is applied to the CT's own voxels."""


def check_model(model: Model, *, voxel_size_um: float, phase_table: PhaseTable | None, allow_resample: bool,
                source: str, ct=None) -> float:
    """Check that ``model`` fits the volume; return the zoom to apply (blocks are resampled by it).

    Same voxel size (within ``VOXEL_TOLERANCE``): 1. Otherwise resampling must be allowed,
    and the zoom matches what the network saw in training: when the model records the edge
    blur of its training CT in voxels and ``ct`` is given, the CT's own edge blur is
    measured (:func:`mineral3d.intensity.edge_sigma_vox`): within ``EDGE_TOLERANCE`` the
    CT is used at its own voxels (zoom 1: a scan set up for another particle size blurs
    about as many voxels, so it looks the same to the network), else it is resampled by
    the ratio of the two blurs. Without that record: the ratio of the voxel sizes.
    """
    if model.phase_table is not None and phase_table is not None:
        a = [(p.id, p.name) for p in model.phase_table.phases if p.id != UNCLASSIFIED]
        b = [(p.id, p.name) for p in phase_table.phases if p.id != UNCLASSIFIED]
        if a != b:
            raise InputError(source, "phase table differs from the model's: model "
                             f"{', '.join(f'{i}={n}' for i, n in a)}; sample {', '.join(f'{i}={n}' for i, n in b)}")
    ratio = voxel_size_um / model.voxel_size_um
    if abs(ratio - 1) <= VOXEL_TOLERANCE:
        return 1.0
    if not allow_resample:
        raise InputError(source, f"voxel size {voxel_size_um:g} µm differs from the model's "
                                 f"{model.voxel_size_um:g} µm (pass --allow-resample to resample each block)")
    if model.edge_sigma_vox and ct is not None:
        s = edge_sigma_vox(ct)
        if np.isfinite(s) and s > 0:
            r = s / model.edge_sigma_vox
            return 1.0 if abs(r - 1) <= EDGE_TOLERANCE else float(1 / r)
    return float(ratio)


def scan_difference(model: Model, ct, *, zoom: float = 1.0) -> dict | None:
    """How the edge blur of ``ct`` compares with that of the model's training CT (voxels).

    A model learns its phase boundaries from the grey values of one scan. A CT whose
    resin/mineral edges are blurred over another number of voxels, once resampled by
    ``zoom`` as the model will see it, comes from other scan settings (instrument, energy,
    binning, reconstruction), and the model's boundaries and grade calibration need not
    hold on it (measured: a model applied to a scan 39% sharper called 51% more of the
    particle material LiAlO2 than there was; docs/benchmarks.md). Returns
    ``{"ct_edge_sigma_vox", "model_edge_sigma_vox", "relative", "differs"}`` (``relative``:
    CT / model - 1; ``differs`` beyond ``EDGE_TOLERANCE``), or None when either blur is
    unknown (an older model, or a CT with no edge).
    """
    if not model.edge_sigma_vox:
        return None
    s = edge_sigma_vox(ct) * zoom
    if not np.isfinite(s) or s <= 0:
        return None
    rel = s / model.edge_sigma_vox - 1
    return {"ct_edge_sigma_vox": round(float(s), 3), "model_edge_sigma_vox": round(float(model.edge_sigma_vox), 3),
            "relative": round(float(rel), 3), "differs": bool(abs(rel) > EDGE_TOLERANCE)}


def _key(model: Model, volume, levels: GreyLevels, config: InferConfig, zoom: float, probabilities: bool) -> str:
    h = hashlib.sha256()
    for v in model.state.values():
        h.update(v.numpy().tobytes()[:4096])
    h.update(json.dumps([model.to_json(), list(volume.shape), str(volume.dtype), levels.to_dict(),
                         [list(config.tile), config.overlap, list(config.block), config.halo, config.z_pad,
                          config.precision] + ([] if config.tta == "none" else [config.tta]),
                         zoom, probabilities], sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def _ensure_group(path: Path, attrs: dict) -> zarr.Group:
    if (path / "zarr.json").exists():
        group = zarr.open_group(store=str(path), mode="r+")
    else:
        path.mkdir(parents=True, exist_ok=True)
        group = zarr.open_group(store=str(path), mode="w", zarr_format=3)
    merged = dict(group.attrs.get("mineral3d", {}))
    merged.update(attrs)
    group.attrs["mineral3d"] = merged
    return group


@dataclass(frozen=True)
class SegmentResult:
    path: Path
    blocks: int
    resumed_blocks: int
    zoom: float
    levels: GreyLevels


def segment_phases(volume, *, voxel_size_um: float, model: Model, out: str | os.PathLike,
                   config: InferConfig = InferConfig(), device: str = "auto", probabilities: bool = False,
                   zoom: float = 1.0, progress: Callable[[int, int], None] | None = None,
                   scheduler=None, volume_path: str | os.PathLike | None = None) -> SegmentResult:
    """Write ``out`` (a Zarr group, e.g. ``segmentation.zarr``) array ``phases`` (+ ``probabilities``).

    ``phases`` holds uint8 phase ids, chunked 64³; ``probabilities`` (optional) the class
    probabilities as uint8 (0-255 = 0-1), shape (K, Z, Y, X), in ``model.classes`` order.
    Arrays are built under a hidden ``.phases.partial`` name and renamed when complete; an
    interrupted run with the same model, volume and settings resumes from its last
    finished block.

    With a dask.distributed ``scheduler`` (:mod:`mineral3d.cluster`) the blocks are
    handed to the workers, which read their block of the volume (``volume_path``, or the
    path ``volume`` was opened from, must be readable there) and write their block of
    the output (``out`` must be on a file system the workers share); otherwise blocks
    run one after another in this process, torch using every core. Blocks are whole
    output chunks, so no two workers write the same chunk, and the result is the same.
    """
    out = Path(out)
    dev = runtime.resolve_device(device)
    levels = GreyLevels.from_volume(volume, trend=model.levels.trend is not None)
    shape = tuple(int(s) for s in volume.shape)
    key = _key(model, volume, levels, config, zoom, probabilities)
    group_attrs = {"voxel_size_um": float(voxel_size_um)}
    if model.phase_table is not None:
        group_attrs["phase_table"] = model.phase_table.to_csv_text()
    _ensure_group(out, group_attrs)
    partial = out / ".phases.partial"
    state_file = partial / "progress.json"
    done: set[int] = set()
    if state_file.is_file():
        try:
            state = json.loads(state_file.read_text())
            if state.get("key") == key:
                done = set(int(b) for b in state["done"])
        except (ValueError, KeyError):
            done = set()
    if not done and partial.exists():
        shutil.rmtree(partial)
    chunks = tuple(min(64, s, b) for s, b in zip(shape, config.block))
    if not done:
        partial.mkdir(parents=True)
        g = zarr.open_group(store=str(partial), mode="w", zarr_format=3)
        g.create_array("phases", shape=shape, dtype=np.uint8, chunks=chunks, fill_value=0)
        if probabilities:
            g.create_array("probabilities", shape=(len(model.classes), *shape), dtype=np.uint8,
                           chunks=(1, *chunks), fill_value=0)
    g = zarr.open_group(store=str(partial), mode="r+")
    phases = g["phases"]
    probs = g["probabilities"] if probabilities else None
    block = tuple(max(c, (b // c) * c) for b, c in zip(config.block, chunks))  # whole chunks per block
    config = dataclasses.replace(config, block=block)
    n_blocks = int(np.prod([len(range(0, s, b)) for s, b in zip(shape, block)]))
    resumed = len(done)
    classes, bias, background = _output_rule(model)
    net = model.build(dev)
    if progress is not None:
        progress(len(done), n_blocks)
    client = client_of(scheduler)
    if client is None:
        for number, sl, prob in predict_blocks(volume, levels.normalise, net, config=config, device=dev, zoom=zoom,
                                               skip=lambda n: n in done):
            _write_block(phases, probs, sl, prob, classes, bias, background)
            done.add(number)
            write_json(state_file, {"key": key, "done": sorted(done)})
            if progress is not None:
                progress(len(done), n_blocks)
    else:
        from distributed import as_completed

        from mineral3d.io.volumes import VolumeRef

        ref = VolumeRef.of(volume, volume_path, labels=False)
        ref_f, model_f = client.scatter([ref, model], broadcast=True)
        todo = [(n, sl) for n, sl in enumerate(blocks(shape, config.block)) if n not in done]
        futures = [client.submit(_segment_block_task, ref_f, model_f, levels, config, zoom, sl, str(partial),
                                 probabilities, str(dev), number=n, key=f"segment-block-{key}-{n}", pure=False)
                   for n, sl in todo]
        for fut in as_completed(futures):
            done.add(fut.result())
            write_json(state_file, {"key": key, "done": sorted(done)})
            if progress is not None:
                progress(len(done), n_blocks)
    attrs = {"voxel_size_um": float(voxel_size_um), "labels": True, "classes": [int(c) for c in classes],
             "model_voxel_size_um": model.voxel_size_um, "zoom": zoom, "grey_levels": levels.to_dict()}
    phases.attrs.update(attrs)
    if probs is not None:
        probs.attrs.update(attrs)
    # move the finished arrays into the group, then drop the partial folder
    for name in ("probabilities", "phases"):  # phases last: its presence means finished
        if (partial / name).exists():
            if (out / name).exists():
                shutil.rmtree(out / name)
            os.replace(partial / name, out / name)
    if not probabilities and (out / "probabilities").exists():
        shutil.rmtree(out / "probabilities")  # stale, from an earlier run with other settings
    shutil.rmtree(partial)
    return SegmentResult(out, n_blocks, resumed, zoom, levels)


def _output_rule(model: Model) -> tuple[np.ndarray, np.ndarray | None, int]:
    """(phase id per output channel, calibration offsets, background channel) of ``model``."""
    background = model.classes.index(0) if 0 in model.classes else 0
    bias = None if model.class_bias is None else np.asarray(model.class_bias)
    return np.asarray(model.classes, np.uint8), bias, background


def _write_block(phases, probs, sl, prob: np.ndarray, classes: np.ndarray, bias, background: int) -> None:
    phases[sl] = classes[classify(prob, bias, background=background)]
    if probs is not None:
        probs[(slice(None), *sl)] = np.rint(np.clip(prob, 0, 1) * 255).astype(np.uint8)


def _segment_block_task(ref, model: Model, levels: GreyLevels, config: InferConfig, zoom: float, sl, partial: str,
                        probabilities: bool, device: str, *, number: int) -> int:
    """One block on a dask worker: read, predict, write into the partial arrays; returns ``number``."""
    from mineral3d.nn.infer import predict_block

    dev = runtime.resolve_device(device)
    net = model.build(dev)
    prob = predict_block(ref.open(), levels.normalise, net, sl, config=config, device=dev, zoom=zoom)
    g = zarr.open_group(store=partial, mode="r+")
    _write_block(g["phases"], g["probabilities"] if probabilities else None, sl, prob, *_output_rule(model))
    return number

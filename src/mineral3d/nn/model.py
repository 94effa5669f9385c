"""A trained model as a folder: ``weights.pt`` (a torch state dict) and ``model.json``.

``model.json`` holds everything needed to apply the weights to another volume: the
network config, the classes (phase ids of the sample's phase table, in output-channel
order), the phase table itself, the voxel size (µm) the model was trained at, the grey
levels of the training volume, the training settings and its record (loss, time).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mineral3d.errors import InputError
from mineral3d.intensity import GreyLevels
from mineral3d.io.atomic import atomic_dir, read_json
from mineral3d.nn.network import NetworkConfig
from mineral3d.phase_table import PhaseTable

FORMAT = "mineral3d-model"
VERSION = 1


@dataclass
class Model:
    """A network with what it needs to be applied.

    Attributes
    ----------
    network : NetworkConfig
    classes : list of int
        Label value of each output channel (phase ids for a phase model).
    voxel_size_um : float
        Voxel size of the training volume, µm.
    levels : GreyLevels
        Grey levels of the training volume (each volume is normalised by its own levels).
    task : str
        What the outputs are: ``phases`` (the only kind mineral3d trains; particles are
        separated from the phase segmentation by :mod:`mineral3d.separation`, not by a network).
    phase_table : PhaseTable, optional
    state : dict
        The torch state dict.
    info : dict
        Training settings and record, baseline parameters, anything else JSON-able.
    class_bias : list of float, optional
        Log-probability offsets of the material classes (:mod:`mineral3d.calibrate`).
    edge_sigma_vox : float, optional
        Edge blur of the training CT in its voxels (:func:`mineral3d.intensity.edge_sigma_vox`):
        how sharp the network expects edges to look.
    """

    network: NetworkConfig
    classes: list[int]
    voxel_size_um: float
    levels: GreyLevels
    task: str = "phases"
    phase_table: PhaseTable | None = None
    state: dict = field(default_factory=dict, repr=False)
    info: dict = field(default_factory=dict)
    class_bias: list[float] | None = None
    edge_sigma_vox: float | None = None

    def build(self, device: torch.device | str = "cpu") -> torch.nn.Module:
        """The network with its weights, in eval mode, on ``device``."""
        net = self.network.build()
        if self.state:
            net.load_state_dict(self.state)
        return net.to(device).eval()

    def to_json(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "task": self.task, "network": self.network.to_dict(),
                "classes": [int(c) for c in self.classes], "voxel_size_um": float(self.voxel_size_um),
                "normalisation": {"method": "grey-levels", **self.levels.to_dict()},
                "phase_table": None if self.phase_table is None else {
                    "csv": self.phase_table.to_csv_text(),
                    "target": self.phase_table.target},
                "class_bias": self.class_bias, "edge_sigma_vox": self.edge_sigma_vox, "info": self.info}


def save_model(path: str | os.PathLike, model: Model, *, overwrite: bool = True) -> Path:
    """Write ``model`` as a folder, atomically (a crash leaves no folder that looks finished)."""
    path = Path(path)
    with atomic_dir(path, overwrite=overwrite) as tmp:
        torch.save(model.state, tmp / "weights.pt")
        (tmp / "model.json").write_text(json.dumps(model.to_json(), indent=2) + "\n", encoding="utf-8")
    return path


def load_model(path: str | os.PathLike) -> Model:
    """Read a model folder written by :func:`save_model`; any problem is a one-line InputError."""
    path = Path(path)
    meta_path, weights = path / "model.json", path / "weights.pt"
    if not path.is_dir():
        raise InputError(path, "model folder not found")
    for p in (meta_path, weights):
        if not p.is_file():
            raise InputError(p, "missing: not a mineral3d model folder (train one with `mineral3d train`)")
    meta = read_json(meta_path)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InputError(meta_path, f"not a {FORMAT} description")
    if meta.get("version", 0) > VERSION:
        raise InputError(meta_path, f"written by a newer mineral3d (model version {meta['version']})")
    try:
        network = NetworkConfig.from_dict(meta["network"])
        levels = GreyLevels.from_dict(meta["normalisation"])
        table = None
        if meta.get("phase_table"):
            pt = meta["phase_table"]
            table = PhaseTable.from_text(pt["csv"], target=pt.get("target"), source=str(meta_path))
        model = Model(network=network, classes=[int(c) for c in meta["classes"]],
                      voxel_size_um=float(meta["voxel_size_um"]), levels=levels, task=str(meta.get("task", "phases")),
                      phase_table=table, info=meta.get("info", {}),
                      class_bias=None if meta.get("class_bias") is None else [float(b) for b in meta["class_bias"]],
                      edge_sigma_vox=None if meta.get("edge_sigma_vox") is None else float(meta["edge_sigma_vox"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(meta_path, f"malformed model description ({type(exc).__name__}: {exc})") from None
    if len(model.classes) != network.out_channels:
        raise InputError(meta_path, f"{len(model.classes)} classes for {network.out_channels} output channels")
    if model.class_bias is not None and len(model.class_bias) != len(model.classes):
        raise InputError(meta_path, f"class_bias has {len(model.class_bias)} values for {len(model.classes)} classes")
    try:
        model.state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        raise InputError(weights, f"cannot read the weights ({type(exc).__name__})") from None
    return model

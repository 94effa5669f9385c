"""The torch layer: 3D U-Nets trained on sparse labels, and tiled inference.

One machinery serves every voxel classifier (mineral phases; particle foreground and
boundaries): :mod:`.network` builds the net from a JSON-able config, :mod:`.train`
trains it on labelled voxels with the loss masked elsewhere, :mod:`.infer` runs it block
by block over volumes of any size, and :mod:`.model` stores it as a folder.
"""

from mineral3d.nn.model import Model, load_model, save_model
from mineral3d.nn.network import NetworkConfig
from mineral3d.nn.runtime import resolve_device
from mineral3d.nn.train import TrainConfig, train

__all__ = ["Model", "NetworkConfig", "TrainConfig", "load_model", "resolve_device", "save_model", "train"]

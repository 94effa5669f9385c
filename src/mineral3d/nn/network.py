"""The network: MONAI's BasicUNet, described by a JSON-able config.

Batch normalisation (not MONAI's default instance norm): at inference it uses running
statistics, so a voxel's class does not depend on which tile it was computed in, and
tiled inference equals whole-volume inference.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from mineral3d.errors import InputError


@dataclass(frozen=True)
class NetworkConfig:
    """A 3D U-Net (MONAI ``BasicUNet``).

    Attributes
    ----------
    out_channels : int
        Number of classes.
    features : tuple of 6 int
        Channels of the 5 encoder levels and of the last decoder level. The default
        (8, 8, 16, 32, 64, 8) trains at ~2 patches/s on 2 CPU cores; (16, 16, 32, 64, 128, 16)
        is ~2x slower.
    in_channels : int
        Input channels (1: the normalised CT).
    dropout : float
    """

    out_channels: int
    features: tuple[int, ...] = (8, 8, 16, 32, 64, 8)
    in_channels: int = 1
    dropout: float = 0.0
    name: str = "BasicUNet"

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", tuple(int(f) for f in self.features))
        if len(self.features) != 6 or min(self.features) < 1:
            raise InputError("network", f"features must be 6 positive integers, got {self.features}")
        if self.out_channels < 1 or self.in_channels < 1:
            raise InputError("network", "in_channels and out_channels must be positive")
        if self.name != "BasicUNet":
            raise InputError("network", f"unknown network {self.name!r} (supported: BasicUNet)")

    @property
    def divisor(self) -> int:
        """Patch and tile edges should be multiples of this (4 poolings by 2)."""
        return 16

    def build(self) -> torch.nn.Module:
        from monai.networks.nets import BasicUNet

        return BasicUNet(spatial_dims=3, in_channels=self.in_channels, out_channels=self.out_channels,
                         features=self.features, dropout=self.dropout,
                         norm=("batch", {"affine": True}), act=("LeakyReLU", {"negative_slope": 0.1, "inplace": True}))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["features"] = list(self.features)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> NetworkConfig:
        return cls(**{k: d[k] for k in ("out_channels", "features", "in_channels", "dropout", "name") if k in d})

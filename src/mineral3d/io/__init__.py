"""File I/O: everything that opens a file lives in this package."""

from mineral3d.io.atomic import atomic_dir, atomic_file, write_json, write_text
from mineral3d.io.images import read_image, read_volume, write_tiff
from mineral3d.io.sample import Sample, SampleConfig, SectionConfig, SectionData, open_sample, write_sample
from mineral3d.io.transforms import read_transform, write_transform
from mineral3d.io.zarr_io import read_volume_zarr, write_volume_zarr

__all__ = [
    "atomic_dir", "atomic_file", "write_json", "write_text", "read_image", "read_volume", "write_tiff",
    "Sample", "SampleConfig", "SectionConfig", "SectionData", "open_sample", "write_sample", "read_transform",
    "write_transform", "read_volume_zarr", "write_volume_zarr",
]

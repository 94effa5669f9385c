"""mineral3d: correlative 3D mineralogy from X-ray CT and SEM-EDS mineral maps."""

from mineral3d.errors import InputError
from mineral3d.phase_table import Phase, PhaseTable
from mineral3d.plane import PlaneTransform, sample_plane, similarity_2d

__all__ = ["InputError", "Phase", "PhaseTable", "PlaneTransform", "sample_plane", "similarity_2d"]
__version__ = "0.1.0"

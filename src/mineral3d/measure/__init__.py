"""Particle-wise characterisation and liberation, in 3D and from 2D sections."""

from mineral3d.measure.liberation import GRADE_CLASSES, Population, cumulative_liberation, liberation_spectrum
from mineral3d.measure.particles import particle_table
from mineral3d.measure.surface import label_surfaces

__all__ = ["GRADE_CLASSES", "Population", "cumulative_liberation", "liberation_spectrum", "particle_table",
           "label_surfaces"]

"""Synthetic correlative slag samples with ground truth (``mineral3d phantom``)."""

from mineral3d.phantom.generate import PhantomConfig, generate, generate_sample

__all__ = ["PhantomConfig", "generate", "generate_sample"]

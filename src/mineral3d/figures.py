"""Figures as RGB arrays (pure numpy); saving is done by the caller."""

from __future__ import annotations

import numpy as np

from mineral3d.phase_table import PhaseTable


def _grey_rgb(img: np.ndarray) -> np.ndarray:
    finite = np.isfinite(img)
    lo, hi = (np.percentile(img[finite], [1, 99]) if finite.any() else (0.0, 1.0))
    g = np.clip((np.nan_to_num(img, nan=lo) - lo) / max(hi - lo, 1e-9), 0, 1)
    return np.repeat((g * 255).astype(np.uint8)[..., None], 3, axis=-1)


def boundaries(ids: np.ndarray) -> np.ndarray:
    """Pixels whose 4-neighbourhood holds another value."""
    b = np.zeros(ids.shape, bool)
    b[:-1] |= ids[:-1] != ids[1:]
    b[1:] |= ids[:-1] != ids[1:]
    b[:, :-1] |= ids[:, :-1] != ids[:, 1:]
    b[:, 1:] |= ids[:, :-1] != ids[:, 1:]
    return b


def registration_overlay(ct_plane: np.ndarray, ids: np.ndarray, table: PhaseTable, *, tile: int = 32) -> np.ndarray:
    """Side by side: map phase outlines over the CT resampled on the plane; a checkerboard of the two.

    Parameters
    ----------
    ct_plane : (H, W) float ndarray
        CT grey values sampled at the map's pixel centres (NaN outside the volume).
    ids : (H, W) uint8 ndarray
        The map's phase ids.
    table : PhaseTable
        Phase colours.
    tile : int
        Checkerboard tile, pixels.

    Returns
    -------
    (H, 2 W + gap, 3) uint8 RGB image.
    """
    grey = _grey_rgb(ct_plane)
    colours = table.color_lut()[ids]
    left = grey.copy()
    edge = boundaries(ids)
    left[edge] = colours[edge]
    left[edge & (ids == 0)] = (255, 255, 0)  # resin side of particle outlines in yellow
    rr, cc = np.indices(ids.shape)
    check = ((rr // tile) + (cc // tile)) % 2 == 0
    right = np.where(check[..., None], grey, colours)
    gap = np.full((ids.shape[0], 8, 3), 255, np.uint8)
    return np.concatenate([left, gap, right], axis=1)


def map_outlines(ids: np.ndarray, labels: np.ndarray, cut: np.ndarray, table: PhaseTable, *,
                 measured: np.ndarray | None = None, thickness: int = 1) -> np.ndarray:
    """A mineral map in its phase colours with particle-section outlines.

    Outlines are white for measured sections and red for sections cut by the edge of the
    measured area; unmeasured pixels are mid grey, unclassified pixels light grey.

    Parameters
    ----------
    ids : (H, W) uint8 ndarray
    labels : (H, W) int ndarray
        Section ids (0 = none), as from :func:`~mineral3d.measure.sections2d.map_section_table`.
    cut : (n + 1,) bool ndarray
        Per section id, whether it is cut (index 0 unused).
    table : PhaseTable
    measured : (H, W) bool ndarray, optional
    thickness : int
        Outline thickness, pixels.

    Returns
    -------
    (H, W, 3) uint8 RGB image.
    """
    from scipy import ndimage as ndi

    rgb = table.color_lut()[ids]
    rgb[ids == 255] = (200, 200, 200)
    if measured is not None:
        rgb[~measured] = (128, 128, 128)
    edge = boundaries(labels) & (labels > 0)
    if thickness > 1:
        edge = ndi.binary_dilation(edge, iterations=thickness - 1) & (labels > 0)
    is_cut = np.asarray(cut, bool)[labels]
    rgb[edge & ~is_cut] = (255, 255, 255)
    rgb[edge & is_cut] = (255, 0, 0)
    return rgb

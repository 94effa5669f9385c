"""The plane transform: where a 2D map pixel lies in the CT volume.

``map_to_ct`` is a 3x3 matrix A with ``[z, y, x] = A @ [row, col, 1]``: it maps the
centre of map pixel (row, col) to a CT position in voxel units (voxel (k, j, i) is
centred at (k, j, i)). Column 0 is the CT step for one map row, column 1 the step
for one map column (length = pixel_size_um / voxel_size_um at the correct scale),
column 2 the CT position of the centre of map pixel (0, 0).

This module is the only place that builds, inverts, composes or samples with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from mineral3d.errors import InputError

_Z = np.array([1.0, 0.0, 0.0])


def rotation_taking(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Smallest rotation (3, 3) taking unit vector ``a`` onto unit vector ``b``."""
    v = np.cross(a, b)
    c = float(np.dot(a, b))
    if np.linalg.norm(v) < 1e-12:
        if c > 0:
            return np.eye(3)
        # 180 degrees about any axis perpendicular to a
        axis = np.cross(a, [0.0, 1.0, 0.0] if abs(a[1]) < 0.9 else [0.0, 0.0, 1.0])
        axis /= np.linalg.norm(axis)
        return 2 * np.outer(axis, axis) - np.eye(3)
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx / (1 + c)


def fibonacci_hemisphere(n: int) -> np.ndarray:
    """n nearly uniform unit directions (n, 3) on the upper hemisphere (z, y, x), z >= 0."""
    i = np.arange(n) + 0.5
    z = 1 - i / n  # uniform in z on [0, 1)
    phi = np.pi * (1 + 5**0.5) * i
    r = np.sqrt(1 - z**2)
    return np.stack([z, r * np.sin(phi), r * np.cos(phi)], axis=1)


def normal_from_tilt(tilt_deg: float, azimuth_deg: float) -> np.ndarray:
    """Unit plane normal (z, y, x) tilted ``tilt_deg`` off +z towards azimuth (0 = +x, 90 = +y)."""
    t, a = np.deg2rad(tilt_deg), np.deg2rad(azimuth_deg)
    return np.array([np.cos(t), np.sin(t) * np.sin(a), np.sin(t) * np.cos(a)])


def similarity_2d(angle_deg: float = 0.0, scale: float = 1.0, shift_rc=(0.0, 0.0), centre_rc=(0.0, 0.0),
                  *, mirror: bool = False) -> np.ndarray:
    """A 2D similarity on map pixel coordinates as a (3, 3) homogeneous matrix.

    Maps ``[row, col, 1]`` to ``[row', col', 1]``: optional mirror (col -> -col), then
    rotation by ``angle_deg`` (counter-clockwise in the row/col plane) and isotropic
    ``scale`` about ``centre_rc``, then a shift of ``shift_rc`` pixels.
    """
    a = np.deg2rad(angle_deg)
    c, s = np.cos(a) * scale, np.sin(a) * scale
    lin = np.array([[c, -s], [s, c]])
    if mirror:
        lin = lin @ np.diag([1.0, -1.0])
    centre = np.asarray(centre_rc, float)
    out = np.eye(3)
    out[:2, :2] = lin
    out[:2, 2] = centre - lin @ centre + np.asarray(shift_rc, float)
    return out


@dataclass(frozen=True, eq=False)
class PlaneTransform:
    """An affine map from map pixel centres (row, col) to CT voxel coordinates (z, y, x).

    Parameters
    ----------
    matrix : (3, 3) array_like
        ``map_to_ct`` as defined in the sample format.
    """

    matrix: np.ndarray

    def __post_init__(self) -> None:
        m = np.array(self.matrix, dtype=float)
        if m.shape != (3, 3) or not np.all(np.isfinite(m)):
            raise InputError(None, f"map_to_ct must be a finite 3x3 matrix, got shape {m.shape}")
        if np.linalg.norm(np.cross(m[:, 0], m[:, 1])) < 1e-12:
            raise InputError(None, "map_to_ct is degenerate: its row and column steps are parallel or zero")
        m.setflags(write=False)
        object.__setattr__(self, "matrix", m)

    # --- construction --------------------------------------------------------------------
    @classmethod
    def from_pose(cls, *, centre_zyx, map_shape, scale: float, tilt_deg: float = 0.0,
                  azimuth_deg: float = 0.0, rotation_deg: float = 0.0, mirror: bool = False) -> PlaneTransform:
        """Build the transform of a map of ``map_shape`` (rows, cols) whose centre lies at ``centre_zyx``.

        At zero tilt and rotation, map rows run along +y and columns along +x. The plane
        normal is tilted ``tilt_deg`` off +z towards ``azimuth_deg``; the map is then
        rotated in its plane by ``rotation_deg`` and optionally mirrored (seen from below).
        ``scale`` is CT voxels per map pixel (pixel_size_um / voxel_size_um).
        """
        rot = rotation_taking(_Z, normal_from_tilt(tilt_deg, azimuth_deg))
        u0, v0 = rot @ np.array([0.0, 1.0, 0.0]), rot @ np.array([0.0, 0.0, 1.0])
        a = np.deg2rad(rotation_deg)
        u = np.cos(a) * u0 + np.sin(a) * v0
        v = -np.sin(a) * u0 + np.cos(a) * v0
        if mirror:
            v = -v
        h, w = map_shape
        origin = np.asarray(centre_zyx, float) - scale * (u * (h - 1) / 2 + v * (w - 1) / 2)
        return cls(np.column_stack([scale * u, scale * v, origin]))

    @classmethod
    def from_dict(cls, data: dict) -> PlaneTransform:
        return cls(np.asarray(data["map_to_ct"], float))

    def to_dict(self) -> dict:
        return {"map_to_ct": self.matrix.tolist()}

    # --- geometry ------------------------------------------------------------------------
    @property
    def row_step(self) -> np.ndarray:
        return self.matrix[:, 0]

    @property
    def col_step(self) -> np.ndarray:
        return self.matrix[:, 1]

    @property
    def origin(self) -> np.ndarray:
        return self.matrix[:, 2]

    @property
    def normal(self) -> np.ndarray:
        """Unit normal (z, y, x) = row_step x col_step, normalised (+z for an unmirrored near-z map)."""
        n = np.cross(self.row_step, self.col_step)
        return n / np.linalg.norm(n)

    @property
    def scale(self) -> float:
        """Mean CT voxels per map pixel along rows and columns."""
        return float((np.linalg.norm(self.row_step) + np.linalg.norm(self.col_step)) / 2)

    @property
    def tilt_deg(self) -> float:
        """Angle between the plane and the z = const planes, degrees (0-90)."""
        return float(np.rad2deg(np.arccos(min(1.0, abs(self.normal[0])))))

    @property
    def mirrored(self) -> bool:
        """True when the map is seen from below (its normal points to -z)."""
        return bool(self.normal[0] < 0)

    def apply(self, rows, cols) -> np.ndarray:
        """CT positions (..., 3) as (z, y, x) voxels of map positions ``rows``, ``cols`` (pixels)."""
        rows, cols = np.broadcast_arrays(np.asarray(rows, float), np.asarray(cols, float))
        return rows[..., None] * self.row_step + cols[..., None] * self.col_step + self.origin

    def grid(self, map_shape, *, step: float = 1.0) -> np.ndarray:
        """CT coordinates (3, H', W') of every map pixel centre (every ``step``-th pixel)."""
        h, w = map_shape
        r = np.arange(0, h, step, dtype=float)
        c = np.arange(0, w, step, dtype=float)
        out = (self.row_step[:, None, None] * r[None, :, None] + self.col_step[:, None, None] * c[None, None, :]
               + self.origin[:, None, None])
        return out

    def to_map(self, zyx) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Project CT positions (..., 3) onto the plane.

        Returns
        -------
        rows, cols : ndarray
            Map pixel coordinates of the closest plane point.
        distance : ndarray
            Signed distance from the plane along :attr:`normal`, in voxels.
        """
        p = np.asarray(zyx, float) - self.origin
        basis = self.matrix[:, :2]
        rc = p @ np.linalg.pinv(basis).T
        return rc[..., 0], rc[..., 1], p @ self.normal

    def inverse(self) -> np.ndarray:
        """(3, 3) matrix ``B`` with ``[row, col, d] = B @ ([z, y, x] - origin)``; d along the unit normal."""
        full = np.column_stack([self.row_step, self.col_step, self.normal])
        return np.linalg.inv(full)

    def compose(self, similarity: np.ndarray) -> PlaneTransform:
        """The transform of a map whose pixel (r', c') is pixel ``similarity @ [r', c', 1]`` of this map."""
        s = np.asarray(similarity, float)
        if s.shape != (3, 3):
            raise ValueError("similarity must be a 3x3 homogeneous matrix")
        return PlaneTransform(self.matrix @ s)

    def shifted(self, dzyx) -> PlaneTransform:
        """The same plane moved by ``dzyx`` voxels."""
        m = self.matrix.copy()
        m[:, 2] += np.asarray(dzyx, float)
        return PlaneTransform(m)

    def __repr__(self) -> str:
        return (f"PlaneTransform(centre-of-(0,0)={np.round(self.origin, 3).tolist()}, scale={self.scale:.4f}, "
                f"tilt={self.tilt_deg:.3f} deg, mirrored={self.mirrored})")


def sample_plane(volume: np.ndarray, transform: PlaneTransform, map_shape, *, order: int = 1,
                 cval: float = np.nan, step: float = 1.0) -> np.ndarray:
    """Resample ``volume`` on the map grid with ``scipy.ndimage.map_coordinates``.

    Parameters
    ----------
    volume : (Z, Y, X) ndarray
        CT grey values or labels (use ``order=0`` for labels).
    transform : PlaneTransform
    map_shape : (H, W)
        Shape of the map whose pixel centres are sampled.
    order : int
        Spline order (0 nearest, 1 linear, 3 cubic).
    cval : float
        Value outside the volume (NaN by default; for integer labels pass e.g. 0).
    step : float
        Sample every ``step``-th map pixel (for coarse pyramid levels).

    Returns
    -------
    (H', W') ndarray, float64 for ``order > 0`` (or float input), else volume's dtype.
    """
    coords = transform.grid(map_shape, step=step)
    if order == 0 and np.issubdtype(volume.dtype, np.integer):
        return ndimage.map_coordinates(volume, coords, order=0, mode="constant",
                                       cval=cval if np.isfinite(cval) else 0, output=volume.dtype)
    data = volume if volume.dtype in (np.float32, np.float64) else volume.astype(np.float32)
    return ndimage.map_coordinates(data, coords, order=order, mode="constant", cval=cval,
                                   prefilter=order > 1, output=np.float64)


def plane_box(transform: PlaneTransform, map_shape, shape, *, margin: tuple[int, int] = (1, 2)):
    """Voxel box (lo, slices) of a volume of ``shape`` that holds every map pixel centre, or None.

    The plane is affine, so its extent is that of the map's four corners; the box is widened
    by ``margin`` voxels (below, above) and clipped to the volume.
    """
    h, w = map_shape
    corners = transform.apply(np.array([0, 0, h - 1, h - 1]), np.array([0, w - 1, 0, w - 1])).T
    shape = np.asarray(shape)
    lo = np.clip(np.floor(corners.min(axis=1)).astype(int) - margin[0], 0, shape - 1)
    hi = np.clip(np.ceil(corners.max(axis=1)).astype(int) + margin[1], lo + 1, shape)
    return lo, tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def cut_volume(volume, transform: PlaneTransform, map_shape, *, outside: int = 255) -> np.ndarray:
    """Nearest-voxel values of a label volume on the map grid, reading only the plane's box.

    Parameters
    ----------
    volume : (Z, Y, X) integer array-like
        ndarray or lazy (Zarr) label volume, e.g. predicted phase ids.
    transform : PlaneTransform
    map_shape : (H, W)
    outside : int
        Value of map pixels whose centre lies outside the volume (255: unclassified).

    Returns
    -------
    (H, W) ndarray of the volume's dtype.
    """
    shape = np.asarray(volume.shape)
    coords = transform.grid(map_shape)
    lo, sl = plane_box(transform, map_shape, shape)
    box = np.asarray(volume[sl])
    local = coords - lo[:, None, None]
    out = ndimage.map_coordinates(box, local, order=0, mode="constant", cval=0, output=box.dtype)
    inside = np.all((coords >= -0.5) & (coords < shape[:, None, None] - 0.5), axis=0)
    out[~inside] = outside
    return out

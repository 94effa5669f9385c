"""Individual particles from a foreground mask: touching and non-convex ones included.

The foreground is every non-resin voxel of the phase segmentation, so particles and
phases agree by construction (a voxel belongs to a particle exactly when its phase is
not resin). The phase CNN learned that foreground from the registered maps, gaps between
touching particles included: where a map shows resin between two particles, the voxels
it labels there are resin, so narrow gaps that the CT blur fills with grey are learned
as gaps.

Particles are separated per **cluster** (a 6-connected component of the foreground),
in the cluster's bounding box:

1. Euclidean distance to the background (``edt``; the volume border is not background:
   a particle cut by the border continues beyond it).
2. Markers: voxels that are the maximum of the distance within a cube of half-edge
   ``marker_radius`` voxels (default half the smallest sieve radius), grouped 26-connected.
3. Seeded watershed of the negated distance (scikit-image) inside the cluster.
4. Merging: two regions sharing a face are one particle when the largest distance on
   their shared face (the neck radius) is at least ``neck_ratio`` times the smaller of
   their largest distances (their inscribed radii). Two convex particles pressed
   together meet at a narrow neck; the arms of one non-convex particle (an L, a bent
   plate) meet at a neck as thick as the arms. Regions smaller than ``min_voxels`` merge
   into the neighbour they share most faces with.

A cluster whose bounding box is larger than ``window``³ voxels (touching particles that
percolate through the volume: one cluster can span all of it) is separated in overlapping
windows so that memory stays bounded (about 45 bytes per window voxel, ~750 MB at the
default 256³): its box is tiled by cores; each core is separated inside its window (the core
grown by ``halo`` voxels, clipped to the box), keeps the labels of its own voxels, and the
labels of neighbouring cores are joined where both windows agree that the voxel pairs
across their shared face belong to one particle (:func:`separate_in_windows`). A particle
whose centre lies in a core and whose radius is at most the halo is seen whole by that
core's window, so it comes out as it would in one piece; the watershed boundaries between
touching particles may move near a core face.

Because each cluster is processed alone, from its own voxels, the result does not
depend on how the volume is split into chunks: :func:`particle_labels_chunked` finds
clusters across chunk faces (union-find on the labels facing each other, as Cellpose's
``distributed_eval`` does), then separates each cluster exactly as :func:`particle_labels`
does in memory. Ids are numbered in C order of each particle's first voxel in both.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import cc3d
import edt
import numpy as np
from scipy import ndimage, sparse
from scipy.sparse import csgraph
from skimage.segmentation import watershed


@dataclass(frozen=True)
class InstanceConfig:
    """Particle separation settings, in voxels (derive them with :meth:`for_sample`).

    Attributes
    ----------
    marker_radius : float
        Half-edge of the cube in which a distance maximum must be highest to seed a
        particle, voxels.
    neck_ratio : float
        Merge two regions when neck radius >= ``neck_ratio`` x the smaller inscribed radius.
    min_voxels : int
        Watershed regions smaller than this merge into a neighbour (isolated small
        clusters are kept: every foreground voxel belongs to a particle).
    window : int
        Edge of the largest box separated in one piece, voxels: a cluster whose box holds
        more than ``window``³ voxels is separated in overlapping windows of at most that edge.
    halo : int
        Overlap of a window beyond its core, voxels (at most ``window // 4``): a particle
        whose centre lies in a core and whose radius is at most ``halo`` is seen whole by
        that core's window.
    """

    marker_radius: float = 4.0
    neck_ratio: float = 0.7
    min_voxels: int = 64
    window: int = 256
    halo: int = 32

    @classmethod
    def for_sample(cls, *, voxel_size_um: float, sieve_um: tuple[float, float] | None = None,
                   min_diameter_um: float | None = None, neck_ratio: float = 0.7) -> InstanceConfig:
        """Settings from the voxel size and the smallest expected particle diameter.

        ``min_diameter_um`` defaults to the lower sieve bound; without either it is
        taken as 8 voxels. Markers must dominate a cube of half-edge a quarter of that
        diameter; regions below the volume of a sphere of a third of it are fragments.
        The windows' halo (used only for clusters larger than ``window``³) is three
        quarters of the largest particle diameter (the upper sieve bound; 3x the smallest
        diameter without a sieve): a particle whose centre lies in a core is seen whole by
        that core's window, with its neighbours' near side; at least twice the marker
        radius, at most a quarter of the window.
        """
        d_um = min_diameter_um or (sieve_um[0] if sieve_um else 8 * voxel_size_um)
        d = d_um / voxel_size_um
        d_max = (sieve_um[1] if sieve_um else 3 * d_um) / voxel_size_um
        marker_radius = max(1.0, d / 4)
        window = cls.window
        halo = int(np.clip(np.ceil(max(0.75 * d_max, 2 * marker_radius)), 8, window // 4))
        return cls(marker_radius=marker_radius, neck_ratio=neck_ratio,
                   min_voxels=max(8, int(np.pi / 6 * (d / 3) ** 3)), window=window, halo=halo)


def typical_thickness(foreground: np.ndarray, *, crop: int = 160) -> float:
    """Median local thickness of the foreground, voxels: twice the distance-map value at its ridges.

    Ridges are voxels that are the maximum of their 5³ neighbourhood in the Euclidean
    distance map (the centres of locally largest inscribed spheres). Measured on a central
    crop of at most ``crop``³ voxels. Used as the particle size scale when neither a sieve
    fraction nor a smallest diameter is known. A crop without any background has no defined
    thickness: then 8 voxels, the default of :meth:`InstanceConfig.for_sample`.
    """
    fg = np.asarray(foreground, bool)
    sl = tuple(slice(max(0, (s - crop) // 2), max(0, (s - crop) // 2) + min(s, crop)) for s in fg.shape)
    fg = np.ascontiguousarray(fg[sl])
    if not fg.any():
        return 8.0
    dist = edt.edt(fg, parallel=1)  # infinite where the crop holds no background at all
    ridge = (dist == ndimage.maximum_filter(dist, size=5)) & fg & np.isfinite(dist)
    return float(2 * np.median(dist[ridge])) if ridge.any() else 8.0


# --- one cluster -----------------------------------------------------------------------------

def _face_pairs(labels: np.ndarray, dist: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Region pairs (a < b) sharing faces, with face count and the largest distance on the face."""
    a_all, b_all, d_all = [], [], []
    for axis in range(3):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        la, lb = labels[tuple(lo)], labels[tuple(hi)]
        m = (la != lb) & (la > 0) & (lb > 0)
        if not m.any():
            continue
        a, b = la[m], lb[m]
        d = np.minimum(dist[tuple(lo)][m], dist[tuple(hi)][m])
        a_all.append(np.minimum(a, b))
        b_all.append(np.maximum(a, b))
        d_all.append(d)
    if not a_all:
        e = np.zeros(0, np.int64)
        return np.zeros((0, 2), np.int64), e, np.zeros(0, np.float32)
    a, b, d = (np.concatenate(x) for x in (a_all, b_all, d_all))
    key = a.astype(np.int64) * (int(labels.max()) + 1) + b
    uniq, inv, count = np.unique(key, return_inverse=True, return_counts=True)
    saddle = np.full(uniq.size, -np.inf, np.float32)
    np.maximum.at(saddle, inv, d.astype(np.float32))
    n1 = int(labels.max()) + 1
    return np.stack([uniq // n1, uniq % n1], axis=1), count, saddle


def _relabel_c_order(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Renumber regions 1..n in C order of their first voxel."""
    flat = labels.reshape(-1)
    idx = np.flatnonzero(flat)
    if idx.size == 0:
        return labels.astype(np.uint32), 0
    vals = flat[idx]
    uniq, first = np.unique(vals, return_index=True)
    order = np.argsort(first)
    lut = np.zeros(int(uniq.max()) + 1, np.uint32)
    lut[uniq[order]] = np.arange(1, uniq.size + 1, dtype=np.uint32)
    return lut[labels], int(uniq.size)


def separate_cluster(mask: np.ndarray, config: InstanceConfig) -> tuple[np.ndarray, int]:
    """Split one cluster (a boolean crop) into particles.

    Parameters
    ----------
    mask : (z, y, x) bool ndarray
        The cluster's voxels in a crop padded by one background voxel wherever the crop
        does not touch the volume border.
    config : InstanceConfig

    Returns
    -------
    labels : (z, y, x) uint32 ndarray
        0 outside the cluster, 1..n in C order of each particle's first voxel.
    n : int
    """
    mask = np.ascontiguousarray(mask, dtype=bool)
    nvox = int(mask.sum())
    if nvox == 0:
        return np.zeros(mask.shape, np.uint32), 0
    if nvox < 2 * config.min_voxels:
        return mask.astype(np.uint32), 1
    dist = edt.edt(mask, black_border=False, parallel=1).astype(np.float32)
    r = max(1, int(round(config.marker_radius)))
    peaks = mask & (dist >= 1) & (dist == ndimage.maximum_filter(dist, size=2 * r + 1, mode="nearest"))
    markers = cc3d.connected_components(peaks, connectivity=26)
    if markers.max() <= 1:
        return mask.astype(np.uint32), 1
    ws = watershed(-dist, markers, mask=mask).astype(np.int64)
    n = int(ws.max())
    peak = ndimage.maximum(dist, ws, index=np.arange(1, n + 1)).astype(np.float32)
    size = np.bincount(ws.reshape(-1), minlength=n + 1)[1:]
    pairs, faces, saddle = _face_pairs(ws, dist)
    if len(pairs):
        weaker = np.minimum(peak[pairs[:, 0] - 1], peak[pairs[:, 1] - 1])
        join = saddle >= config.neck_ratio * weaker
        g = sparse.coo_matrix((np.ones(int(join.sum())), (pairs[join, 0] - 1, pairs[join, 1] - 1)), shape=(n, n))
        _, comp = csgraph.connected_components(g, directed=False)
        ws = np.concatenate([[0], comp + 1])[ws]
        # small fragments join the neighbour they share most faces with (repeat while any joins)
        for _ in range(8):
            n = int(ws.max())
            size = np.bincount(ws.reshape(-1), minlength=n + 1)
            pairs, faces, _ = _face_pairs(ws, dist)
            if not len(pairs):
                break
            small = size < config.min_voxels
            cand_a = small[pairs[:, 0]]
            cand_b = small[pairs[:, 1]]
            src = np.concatenate([pairs[cand_a, 0], pairs[cand_b, 1]])
            dst = np.concatenate([pairs[cand_a, 1], pairs[cand_b, 0]])
            w = np.concatenate([faces[cand_a], faces[cand_b]])
            if src.size == 0:
                break
            order = np.lexsort((dst, -w, src))
            src, dst = src[order], dst[order]
            first = np.r_[True, src[1:] != src[:-1]]
            src, dst = src[first], dst[first]
            lut = np.arange(n + 1)
            lut[src] = dst
            for _ in range(src.size):  # follow chains (a->b->c) to their end
                nxt = lut[lut]
                if np.array_equal(nxt, lut):
                    break
                lut = nxt
            ws = lut[ws]
    return _relabel_c_order(ws)


# --- clusters larger than a window ---------------------------------------------------------------

def needs_windows(box: tuple[slice, ...], config: InstanceConfig) -> bool:
    """Whether a cluster's (padded) box is separated in windows rather than in one piece."""
    ext = [s.stop - s.start for s in box]
    return int(np.prod(ext)) > config.window ** 3 and max(ext) > config.window


def _cores(box: tuple[slice, ...], config: InstanceConfig) -> tuple[list[list[tuple[int, int]]], list[bool]]:
    """Per axis, the cores tiling the box (even lengths of at most ``window - 2 halo``) and whether it is split."""
    halo = min(config.halo, config.window // 4)
    per_axis, split = [], []
    for s in box:
        e = s.stop - s.start
        if e <= config.window:
            per_axis.append([(s.start, s.stop)])
            split.append(False)
            continue
        n = -(-e // (config.window - 2 * halo))
        edges = s.start + np.round(np.linspace(0, e, n + 1)).astype(int)
        per_axis.append([(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])])
        split.append(True)
    return per_axis, split


def _best_of(group: np.ndarray, score: np.ndarray) -> np.ndarray:
    """True for the entry with the highest score within each group (the first one on ties)."""
    order = np.lexsort((-score, group))
    first = np.r_[True, group[order][1:] != group[order][:-1]]
    best = np.zeros(group.size, bool)
    best[order[first]] = True
    return best


def _join_across_windows(joins: list[tuple[np.ndarray, np.ndarray, np.ndarray]], window_of: np.ndarray) -> np.ndarray:
    """Particles from the joins of provisional labels: strongest joins first, and never two
    labels of one window into one particle (that window saw them as different particles).

    Returns the particle (component) index of each provisional id.
    """
    n = window_of.size
    parent = np.arange(n)
    if joins:
        a, b, w = (np.concatenate(x) for x in zip(*joins))
        order = np.argsort(-w, kind="stable")
        windows: dict[int, set[int]] = {}

        def root(x: int) -> int:
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        for i in order:  # joins are few: labels that meet on a core face
            ra, rb = root(int(a[i])), root(int(b[i]))
            if ra == rb:
                continue
            wa = windows.get(ra, {int(window_of[ra])})
            wb = windows.get(rb, {int(window_of[rb])})
            if wa & wb:
                continue
            parent[rb] = ra
            windows[ra] = wa | wb
            windows.pop(rb, None)
    # flatten
    while True:
        nxt = parent[parent]
        if np.array_equal(nxt, parent):
            return parent
        parent = nxt


def separate_in_windows(mask_of: Callable[[tuple[slice, ...]], np.ndarray], box: tuple[slice, ...],
                        config: InstanceConfig, out, first_id: int,
                        progress: Callable[[int, int], None] | None = None) -> int:
    """Separate one cluster larger than ``config.window``³ in overlapping windows, writing ``out``.

    Parameters
    ----------
    mask_of : callable
        ``mask_of(slices)`` -> bool array of the cluster's voxels in that box (volume
        coordinates, within ``box``).
    box : tuple of slice
        The cluster's padded bounding box (as for :func:`separate_cluster`).
    config : InstanceConfig
    out : (Z, Y, X) writable array-like
        Receives ids ``first_id ..`` on the cluster's voxels (other voxels are left as they
        are); numbered in C order of each particle's first voxel.
    first_id : int

    Returns
    -------
    int : number of particles.

    Each core is separated inside its window (the core grown by ``config.halo`` voxels on
    the split axes, clipped to the box) and keeps its own voxels' labels, written into
    ``out`` as provisional ids. Across each face between two cores, a core label ``a`` of
    the lower window and ``b`` of the upper one are the same particle when, on most voxel
    pairs facing each other with labels ``(a, b)``, each window gives both voxels of the
    pair one label, and neither has a partner across that face with more such pairs. A
    second pass renumbers the provisional ids.
    """
    halo = min(config.halo, config.window // 4)
    per_axis, split = _cores(box, config)
    grid = tuple(len(a) for a in per_axis)
    cells = list(itertools.product(*(range(g) for g in grid)))
    shape_out = tuple(int(n) for n in out.shape)
    base = 1
    firsts_id, firsts_at = [], []
    window_of_parts = [np.full(1, -1, np.int64)]  # provisional id -> window index
    faces: dict = {}
    for i, cell in enumerate(cells):
        core = tuple(slice(*per_axis[d][cell[d]]) for d in range(3))
        win = tuple(slice(max(b.start, c.start - halo), min(b.stop, c.stop + halo)) if sp else b
                    for b, c, sp in zip(box, core, split))
        lab, k = separate_cluster(mask_of(win), config)
        rel = tuple(slice(c.start - w.start, c.stop - w.start) for c, w in zip(core, win))

        def provisional(a: np.ndarray, base=base) -> np.ndarray:
            return np.where(a > 0, a.astype(np.int64) + (base - 1), 0)

        cl = provisional(lab[rel])
        cur = np.asarray(out[core])
        m = cl > 0
        cur[m] = cl[m]
        out[core] = cur
        flat = cl.reshape(-1)
        idx = np.flatnonzero(flat)
        ids, first = np.unique(flat[idx], return_index=True)
        loc = np.stack(np.unravel_index(idx[first], cl.shape), axis=1) + [c.start for c in core]
        firsts_id.append(ids)
        firsts_at.append(np.ravel_multi_index(tuple(loc.T), shape_out))
        for d in range(3):
            if not split[d]:
                continue
            for side, inner, o in (("lo", 0, rel[d].start - 1), ("hi", cl.shape[d] - 1, rel[d].stop)):
                sl = list(rel)
                sl[d] = o
                outer = provisional(lab[tuple(sl)]) if 0 <= o < lab.shape[d] else None
                faces[(cell, d, side)] = (np.take(cl, inner, axis=d), outer)
        base += k
        window_of_parts.append(np.full(k, i, np.int64))
        del lab, cl, cur
        if progress is not None:
            progress(i + 1, len(cells))
    # joins across core faces
    joins = []
    window_of = np.concatenate(window_of_parts)
    for cell in cells:
        for d in range(3):
            if not split[d] or cell[d] + 1 >= grid[d]:
                continue
            up = tuple(c + (j == d) for j, c in enumerate(cell))
            a_p, a_q = faces[(cell, d, "hi")]
            b_q, b_p = faces[(up, d, "lo")]
            fg = (a_p > 0) & (b_q > 0)
            if not fg.any():
                continue
            agree = ((a_p == a_q) & (b_p == b_q))[fg]
            key = a_p[fg] * base + b_q[fg]
            uniq, inv = np.unique(key, return_inverse=True)
            total = np.bincount(inv)
            same = np.bincount(inv, weights=agree)
            a, b = uniq // base, uniq % base
            # one to one: each label joins the partner on which it agrees most (a label that a
            # neighbour window sees as two particles is not allowed to chain them together)
            j = (same > 0.5 * total) & _best_of(a, same) & _best_of(b, same)
            joins.append((a[j], b[j], same[j]))
    comp = _join_across_windows(joins, window_of)  # provisional id -> particle (index 0 unused)
    ids, at = np.concatenate(firsts_id), np.concatenate(firsts_at)
    first = np.full(int(comp.max()) + 1, np.iinfo(np.int64).max)
    np.minimum.at(first, comp[ids], at)
    used = np.flatnonzero(first < np.iinfo(np.int64).max)
    rank = np.zeros(first.size, np.int64)
    rank[used[np.argsort(first[used])]] = np.arange(used.size)
    lut = (rank[comp] + first_id).astype(np.int64)
    for cell in cells:
        core = tuple(slice(*per_axis[d][cell[d]]) for d in range(3))
        m = mask_of(core)
        cur = np.asarray(out[core])
        cur[m] = lut[cur[m].astype(np.int64)]
        out[core] = cur
    return int(used.size)


# --- whole volumes -----------------------------------------------------------------------------

def _padded_box(bbox: tuple[slice, ...], shape) -> tuple[slice, ...]:
    return tuple(slice(max(0, s.start - 1), min(n, s.stop + 1)) for s, n in zip(bbox, shape))


def particle_labels(foreground: np.ndarray, config: InstanceConfig, *,
                    progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Particle ids (uint32, 0 = background) of a boolean foreground volume, in memory."""
    fg = np.ascontiguousarray(foreground, dtype=bool)
    comp = cc3d.connected_components(fg, connectivity=6)
    n = int(comp.max())
    out = np.zeros(fg.shape, np.uint32)
    if n == 0:
        return out
    boxes = ndimage.find_objects(comp)
    order = _first_voxel_order(comp, n)
    next_id = 1
    for i, c in enumerate(order):
        box = _padded_box(boxes[c - 1], fg.shape)
        if needs_windows(box, config):
            next_id += separate_in_windows(lambda sl, c=c: comp[sl] == c, box, config, out, next_id)
        else:
            lab, k = separate_cluster(comp[box] == c, config)
            sel = lab > 0
            out[box][sel] = lab[sel] + (next_id - 1)
            next_id += k
        if progress is not None and (i % 64 == 0 or i == n - 1):
            progress(i + 1, n)
    return out


def _first_voxel_order(comp: np.ndarray, n: int) -> np.ndarray:
    flat = comp.reshape(-1)
    idx = np.flatnonzero(flat)
    _, first = np.unique(flat[idx], return_index=True)
    return np.argsort(first) + 1  # labels are 1..n


class _UnionFind:
    def __init__(self) -> None:
        self.a: list[np.ndarray] = []
        self.b: list[np.ndarray] = []

    def add(self, a: np.ndarray, b: np.ndarray) -> None:
        self.a.append(a)
        self.b.append(b)

    def components(self, n: int) -> np.ndarray:
        a = np.concatenate(self.a) if self.a else np.zeros(0, np.int64)
        b = np.concatenate(self.b) if self.b else np.zeros(0, np.int64)
        g = sparse.coo_matrix((np.ones(a.size), (a, b)), shape=(n, n))
        return csgraph.connected_components(g, directed=False)[1]


def _block_components(fg_ref, scratch_ref, sl) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """6-connected components of one block, written (ids 1..k) into the scratch array.

    Returns k and, per component, the flat index of its first voxel in the volume and its
    box (lo, hi) in volume coordinates.
    """
    fg_all = fg_ref.open()
    shape = tuple(fg_all.shape)
    lab = cc3d.connected_components(np.asarray(fg_all[sl]) != 0, connectivity=6).astype(np.uint32)
    scratch_ref.open()[sl] = lab
    k = int(lab.max())
    if not k:
        e = np.zeros((0, 3), np.int64)
        return 0, np.zeros(0, np.int64), e, e
    flat = lab.reshape(-1)
    idx = np.flatnonzero(flat)
    _, first = np.unique(flat[idx], return_index=True)
    start = np.array([s.start for s in sl])
    local = np.stack(np.unravel_index(idx[first], lab.shape), axis=1) + start
    boxes = ndimage.find_objects(lab)
    lo = np.array([[b.start for b in bx] for bx in boxes]) + start
    hi = np.array([[b.stop for b in bx] for bx in boxes]) + start
    return k, np.ravel_multi_index(tuple(local.T), shape), lo, hi


def _global_ids(scratch, box, offsets: np.ndarray, chunks) -> np.ndarray:
    """Provisional labels of ``box`` made global: block-local id + the block's offset (0 stays 0)."""
    lab = np.asarray(scratch[box]).astype(np.int64)
    idx = [np.arange(s.start, s.stop) // c for s, c in zip(box, chunks)]
    off = offsets[np.ix_(*idx)]
    return np.where(lab > 0, lab + off, 0)


def _separate_batch(scratch_ref, batch, lut: np.ndarray, offsets: np.ndarray, chunks,
                    config: InstanceConfig) -> list[tuple[tuple[slice, ...], np.ndarray, int]]:
    """Separate the clusters of ``batch`` ((cluster, box) pairs): (box, labels 1..k, k) each."""
    scratch = scratch_ref.open()
    out = []
    for c, box in batch:
        if needs_windows(box, config):  # separated by the driver, window by window
            out.append((box, None, c))
            continue
        mask = lut[_global_ids(scratch, box, offsets, chunks)] == c
        lab, k = separate_cluster(mask, config)
        out.append((box, lab, k))
    return out


def particle_labels_chunked(foreground, out, config: InstanceConfig, *, chunks=(128, 128, 128),
                            scratch=None, progress: Callable[[str, int, int], None] | None = None,
                            scheduler=None, foreground_path=None, scratch_path=None, batch: int = 16) -> int:
    """Particle ids of a foreground too big for memory, written into ``out``.

    Parameters
    ----------
    foreground : (Z, Y, X) array-like
        Sliceable (Zarr, memmap, ndarray); nonzero = particle.
    out : (Z, Y, X) array-like, writable, uint32
        Receives the ids (e.g. a Zarr array); must be zero-initialised. Only this
        process writes it.
    config : InstanceConfig
    chunks : (3,) tuple of int
        Block shape for the cluster search (scratch chunks must be whole blocks).
    scratch : (Z, Y, X) writable uint32 array-like, optional
        Space for block-local component ids (an in-memory array by default; pass a Zarr
        array for volumes that do not fit).
    scheduler : optional
        A dask.distributed client/address (:mod:`mineral3d.cluster`): blocks and batches
        of clusters are handed to its workers, which open ``foreground_path`` and
        ``scratch_path`` (Zarr arrays on a shared file system) themselves. Otherwise
        everything runs here. The result does not depend on it.
    batch : int
        Clusters per worker task.

    Returns
    -------
    int : number of particles. Equal, voxel for voxel, to :func:`particle_labels`.
    """
    from mineral3d.cluster import client_of, map_ordered
    from mineral3d.io.volumes import VolumeRef

    shape = tuple(int(s) for s in foreground.shape)
    if scratch is None:
        scratch = np.zeros(shape, np.uint32)
    client = client_of(scheduler)
    if client is not None and (foreground_path is None or scratch_path is None):
        raise ValueError("a distributed scheduler needs foreground_path and scratch_path (Zarr) for its workers")
    if client is None:
        fg_ref, sc_ref = VolumeRef(array=foreground), VolumeRef(array=scratch, writable=True)
    else:
        fg_ref, sc_ref = VolumeRef(path=str(foreground_path)), VolumeRef(path=str(scratch_path), writable=True)
    grid = [len(range(0, s, c)) for s, c in zip(shape, chunks)]
    blocks = [tuple(slice(a, min(a + c, s)) for a, c, s in zip(start, chunks, shape))
              for start in itertools.product(*(range(0, s, c) for s, c in zip(shape, chunks)))]
    # 1. block-local components; offsets make them globally unique (block order)
    counts, firsts, lo_all, hi_all = [], [], [], []
    for i, (k, first, lo, hi) in enumerate(map_ordered(_block_components, [(fg_ref, sc_ref, sl) for sl in blocks],
                                                       client)):
        counts.append(k)
        firsts.append(first)
        lo_all.append(lo)
        hi_all.append(hi)
        if progress is not None:
            progress("finding clusters", i + 1, len(blocks))
    total = int(sum(counts))
    if total == 0:
        return 0
    offsets = (np.cumsum([0] + counts[:-1]).astype(np.int64)).reshape(grid)
    first = np.concatenate(firsts)
    lo, hi = np.concatenate(lo_all), np.concatenate(hi_all)
    # 2. union of labels facing each other across block faces
    uf = _UnionFind()
    for axis in range(3):
        for cut in range(chunks[axis], shape[axis], chunks[axis]):
            a_sl = [slice(0, n) for n in shape]
            b_sl = [slice(0, n) for n in shape]
            a_sl[axis], b_sl[axis] = slice(cut - 1, cut), slice(cut, cut + 1)
            a = _global_ids(scratch, tuple(a_sl), offsets, chunks).reshape(-1)
            b = _global_ids(scratch, tuple(b_sl), offsets, chunks).reshape(-1)
            m = (a > 0) & (b > 0)
            if m.any():
                uf.add(a[m] - 1, b[m] - 1)
    comp = uf.components(total)
    n = int(comp.max()) + 1
    # 3. clusters: their first voxel and box; separated in batches, numbered in C order of first voxel
    cfirst = np.full(n, np.iinfo(np.int64).max)
    np.minimum.at(cfirst, comp, first)
    clo = np.full((n, 3), np.iinfo(np.int64).max)
    chi = np.zeros((n, 3), np.int64)
    for d in range(3):
        np.minimum.at(clo[:, d], comp, lo[:, d])
        np.maximum.at(chi[:, d], comp, hi[:, d])
    lut = np.concatenate([[-1], comp])  # provisional label -> cluster
    order = np.argsort(cfirst)
    work = [(int(c), _padded_box(tuple(slice(int(a), int(b)) for a, b in zip(clo[c], chi[c])), shape))
            for c in order]
    batches = [work[i:i + batch] for i in range(0, len(work), batch)]
    lut_here = lut
    if client is not None:
        lut, offsets_arg = client.scatter([lut, offsets], broadcast=True)
    else:
        offsets_arg = offsets
    next_id, done = 1, 0
    for results in map_ordered(_separate_batch, [(sc_ref, b, lut, offsets_arg, chunks, config) for b in batches],
                               client):
        for box, lab, k in results:
            if lab is None:  # k is the cluster
                next_id += separate_in_windows(
                    lambda sl, c=k: lut_here[_global_ids(scratch, sl, offsets, chunks)] == c, box, config, out,
                    next_id)
                continue
            if k:
                cur = np.asarray(out[box])
                sel = lab > 0
                cur[sel] = lab[sel] + (next_id - 1)
                out[box] = cur
            next_id += k
        done += len(results)
        if progress is not None:
            progress("separating particles", done, n)
    return next_id - 1

"""Chunked measurement == in-memory measurement, with the threaded scheduler and a 2-worker LocalCluster."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mineral3d.io import open_sample
from mineral3d.measure.chunked import particle_table_chunked
from mineral3d.measure.particles import particle_table


@pytest.fixture(scope="module")
def volumes(small_sample, tmp_path_factory):
    import zarr

    s = open_sample(small_sample)
    ph, lab = s.truth_phases(), s.truth_particles().astype(np.uint32)
    root = tmp_path_factory.mktemp("chunked")
    for name, arr in (("phases", ph), ("particles", lab)):
        z = zarr.create_array(store=str(root / f"{name}.zarr"), shape=arr.shape, dtype=arr.dtype,
                              chunks=(8, 64, 64), fill_value=0)
        z[...] = arr
    ref = particle_table(lab, ph, voxel_size_um=s.voxel_size_um, phase_table=s.phase_table)
    return s, root, ref


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a.columns) == list(b.columns) and len(a) == len(b) > 5
    for c in a.columns:
        if a[c].dtype.kind in "iub":
            np.testing.assert_array_equal(a[c].to_numpy(), b[c].to_numpy(), err_msg=c)
        else:
            np.testing.assert_allclose(a[c].to_numpy(float), b[c].to_numpy(float), rtol=1e-9, atol=1e-9, err_msg=c)


def test_chunked_table_equals_in_memory_threads(volumes):
    s, root, ref = volumes
    got = particle_table_chunked(root / "particles.zarr", root / "phases.zarr", voxel_size_um=s.voxel_size_um,
                                 phase_table=s.phase_table, slab=8, scheduler="threads")
    assert s.ct().shape[0] // 8 >= 8  # at least 8 slabs
    _same(ref, got)


def test_chunked_table_equals_in_memory_local_cluster(volumes):
    distributed = pytest.importorskip("distributed")
    s, root, ref = volumes
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        got = particle_table_chunked(str(root / "particles.zarr"), str(root / "phases.zarr"),
                                     voxel_size_um=s.voxel_size_um, phase_table=s.phase_table, slab=8,
                                     scheduler=client)
    _same(ref, got)


def test_measure_on_lazy_zarr_with_the_chunked_table_equals_in_memory(volumes):
    import zarr

    from mineral3d.pipeline.measure import MeasureConfig, measure

    s, root, ref_table = volumes
    lab_z = zarr.open_array(store=str(root / "particles.zarr"), mode="r")
    ph_z = zarr.open_array(store=str(root / "phases.zarr"), mode="r")
    cfg = MeasureConfig(n_boot=50)
    mem = measure(lab_z[...], ph_z[...], voxel_size_um=s.voxel_size_um, phase_table=s.phase_table, config=cfg)
    table = particle_table_chunked(root / "particles.zarr", root / "phases.zarr", voxel_size_um=s.voxel_size_um,
                                   phase_table=s.phase_table, slab=8)
    lazy = measure(lab_z, ph_z, voxel_size_um=s.voxel_size_um, phase_table=s.phase_table, config=cfg, table=table)
    for key in ("liberation_3d", "liberation_2d", "association_3d", "sections_2d_virtual", "particles"):
        assert lazy["summary"][key] == pytest.approx(mem["summary"][key], rel=1e-9), key
    pd.testing.assert_frame_equal(lazy["liberation"], mem["liberation"], rtol=1e-9)


@pytest.fixture(scope="module")
def cluster_client():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        yield client


def test_segmentation_on_a_local_cluster_equals_in_process(tmp_path, cluster_client):
    import torch
    import zarr

    from mineral3d.intensity import GreyLevels
    from mineral3d.nn import Model, NetworkConfig
    from mineral3d.nn.infer import InferConfig
    from mineral3d.phase_table import PhaseTable
    from mineral3d.pipeline.segment_phases import segment_phases

    torch.manual_seed(3)
    net = NetworkConfig(out_channels=3, features=(4, 4, 8, 8, 16, 4))
    table = PhaseTable.from_text("id,name,color\n0,resin,#000000\n1,a,#ff0000\n2,b,#00ff00\n", target="a")
    m = Model(network=net, classes=[0, 1, 2], voxel_size_um=2.0, levels=GreyLevels(10.0, 110.0, 60.0),
              phase_table=table, state=net.build().state_dict())
    m.state["final_conv.weight"] *= 40  # a random network is nearly constant: make its output vary
    vol = np.random.default_rng(5).normal(60, 40, (32, 64, 64)).astype(np.float32)
    src = zarr.create_array(store=str(tmp_path / "ct.zarr"), shape=vol.shape, dtype=vol.dtype, chunks=(16, 32, 32))
    src[...] = vol
    cfg = InferConfig(block=(16, 32, 32), halo=8, precision="fp32")
    a = segment_phases(vol, voxel_size_um=2.0, model=m, out=tmp_path / "a.zarr", device="cpu", config=cfg,
                       probabilities=True)
    done = []
    b = segment_phases(src, voxel_size_um=2.0, model=m, out=tmp_path / "b.zarr", device="cpu", config=cfg,
                       probabilities=True, scheduler=cluster_client, volume_path=tmp_path / "ct.zarr",
                       progress=lambda d, n: done.append(d))
    assert a.blocks == b.blocks == 8 and done[-1] == 8
    pa = zarr.open_array(store=str(tmp_path / "a.zarr" / "phases"), mode="r")[...]
    pb = zarr.open_array(store=str(tmp_path / "b.zarr" / "phases"), mode="r")[...]
    np.testing.assert_array_equal(pa, pb)
    # class probabilities (uint8), which vary everywhere, equal too
    qa = zarr.open_array(store=str(tmp_path / "a.zarr" / "probabilities"), mode="r")[...]
    qb = zarr.open_array(store=str(tmp_path / "b.zarr" / "probabilities"), mode="r")[...]
    assert np.unique(qa).size > 50
    np.testing.assert_array_equal(qa, qb)


@pytest.mark.parametrize("where", ["threads", "cluster"])
def test_chunked_particles_equal_in_memory(volumes, tmp_path, where, request):
    import zarr

    from mineral3d.separation import InstanceConfig, particle_labels, particle_labels_chunked

    s, root, _ = volumes
    fg = zarr.open_array(store=str(root / "phases.zarr"), mode="r")
    config = InstanceConfig.for_sample(voxel_size_um=s.voxel_size_um, sieve_um=s.config.sieve_um)
    ref = particle_labels(fg[...] != 0, config)
    chunks = (32, 64, 64)  # 3 x 2 x 2 = 12 blocks
    out = zarr.create_array(store=str(tmp_path / "out.zarr"), shape=fg.shape, dtype=np.uint32, chunks=chunks,
                            fill_value=0)
    scratch = zarr.create_array(store=str(tmp_path / "scratch.zarr"), shape=fg.shape, dtype=np.uint32,
                                chunks=chunks, fill_value=0)
    client = request.getfixturevalue("cluster_client") if where == "cluster" else None
    n = particle_labels_chunked(fg, out, config, chunks=chunks, scratch=scratch, scheduler=client,
                                foreground_path=root / "phases.zarr", scratch_path=tmp_path / "scratch.zarr",
                                batch=4)
    assert n == int(ref.max()) > 10
    np.testing.assert_array_equal(out[...], ref)


def test_kernel_of_a_large_volume_uses_the_whole_particles_of_its_central_box(volumes, monkeypatch):
    import zarr

    from mineral3d.pipeline import run_steps

    s, root, table = volumes
    lab_z = zarr.open_array(store=str(root / "particles.zarr"), mode="r")
    ph_z = zarr.open_array(store=str(root / "phases.zarr"), mode="r")
    limit = int(0.8 * np.prod(lab_z.shape))
    monkeypatch.setattr(run_steps, "KERNEL_VOXELS", limit)  # the volume (80 x 128 x 128) is "large"
    lab, ph, sub, note = run_steps._kernel_crop(lab_z, ph_z, table)
    assert isinstance(lab, np.ndarray) and lab.shape == ph.shape and np.prod(lab.shape) >= limit
    assert lab.shape != tuple(lab_z.shape) and "central" in note
    assert 0 < len(sub) <= int((~table["touches_border"]).sum())
    # every particle kept lies wholly inside the box: all its voxels are there
    counts = np.bincount(lab.ravel().astype(np.int64), minlength=int(table["particle"].max()) + 1)
    full = np.bincount(lab_z[...].ravel().astype(np.int64), minlength=len(counts))
    np.testing.assert_array_equal(counts[sub["particle"].to_numpy()], full[sub["particle"].to_numpy()])

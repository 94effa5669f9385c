import numpy as np
import pytest
import tifffile

from mineral3d.errors import InputError
from mineral3d.io import (
    SectionData,
    open_sample,
    read_volume,
    read_volume_zarr,
    write_sample,
    write_tiff,
    write_volume_zarr,
)
from mineral3d.phase_table import Phase, PhaseTable
from mineral3d.plane import PlaneTransform


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_tiff_volume_round_trip(tmp_path, dtype):
    vol = (np.random.default_rng(0).random((5, 7, 9)) * 200).astype(dtype)
    write_tiff(tmp_path / "v.tif", vol)
    back = read_volume(tmp_path / "v.tif")
    assert back.dtype == vol.dtype
    np.testing.assert_array_equal(back, vol)


def test_folder_of_slices_in_name_order(tmp_path):
    vol = np.arange(4 * 5 * 6, dtype=np.uint16).reshape(4, 5, 6)
    for k in (3, 0, 2, 1):  # written out of order
        tifffile.imwrite(tmp_path / f"slice_{k:03d}.tif", vol[k])
    np.testing.assert_array_equal(read_volume(tmp_path), vol)


def test_slices_of_unequal_shape(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((5, 6), np.uint8))
    tifffile.imwrite(tmp_path / "b.tif", np.zeros((5, 7), np.uint8))
    with pytest.raises(InputError, match="differs from the first slice"):
        read_volume(tmp_path)


@pytest.mark.parametrize("labels", [False, True])
def test_zarr_round_trip(tmp_path, labels):
    vol = np.random.default_rng(1).integers(0, 5, (20, 30, 40)).astype(np.uint8 if labels else np.uint16)
    write_volume_zarr(tmp_path / "v.zarr", vol, voxel_size_um=2.5, chunks=(8, 16, 16), levels=3, labels=labels)
    arr, voxel = read_volume_zarr(tmp_path / "v.zarr")
    assert voxel == 2.5 and arr.chunks == (8, 16, 16)
    np.testing.assert_array_equal(arr[...], vol)
    arr1, voxel1 = read_volume_zarr(tmp_path / "v.zarr", level=1)
    assert voxel1 == 5.0 and arr1.shape == (10, 15, 20)
    if labels:
        np.testing.assert_array_equal(arr1[...], vol[::2, ::2, ::2])
    with pytest.raises(FileExistsError):
        write_volume_zarr(tmp_path / "v.zarr", vol, voxel_size_um=2.5)


def test_zarr_errors(tmp_path):
    with pytest.raises(InputError, match="no zarr.json"):
        read_volume_zarr(tmp_path)
    with pytest.raises(InputError, match="voxel size must be positive"):
        write_volume_zarr(tmp_path / "x.zarr", np.zeros((4, 4, 4), np.uint8), voxel_size_um=0)


def test_sample_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    table = PhaseTable((Phase(0, "resin", (0, 0, 0)), Phase(1, "LiAlO2", (31, 119, 180)),
                        Phase(2, "gehlenite", (255, 127, 14))), target="LiAlO2")
    ct = rng.integers(0, 60000, (6, 20, 24)).astype(np.uint16)
    ids = rng.integers(0, 3, (15, 17)).astype(np.uint8)
    bse = rng.integers(0, 255, (15, 17)).astype(np.uint8)
    t = PlaneTransform.from_pose(centre_zyx=(3, 10, 12), map_shape=ids.shape, scale=0.5, tilt_deg=2)
    truth = rng.integers(0, 3, ct.shape).astype(np.uint8)
    sections = [SectionData("a", ids, 1.0, "train", bse, t),
                SectionData("b", table.encode_rgb(ids), 0.8, "validation")]
    write_sample(tmp_path / "s", name="demo", ct=ct, voxel_size_um=2.0, phase_table=table, sections=sections,
                 sieve_um=(63, 100), truth_phases=truth, truth_particles=truth.astype(np.uint32))
    s = open_sample(tmp_path / "s")
    c = s.config
    assert (c.name, c.voxel_size_um, c.target, c.sieve_um) == ("demo", 2.0, "LiAlO2", (63.0, 100.0))
    assert [(x.name, x.pixel_size_um, x.role, x.bse is not None) for x in c.sections] == [
        ("a", 1.0, "train", True), ("b", 0.8, "validation", False)]
    assert s.phase_table.phases == table.phases
    np.testing.assert_array_equal(s.ct(), ct)
    np.testing.assert_array_equal(s.section_map("a"), ids)
    np.testing.assert_array_equal(s.section_map("b"), ids)  # RGB decoded to the same ids
    np.testing.assert_array_equal(s.section_bse("a"), bse)
    assert s.section_bse("b") is None
    np.testing.assert_array_equal(s.truth_transform("a").matrix, t.matrix)
    np.testing.assert_array_equal(s.truth_phases(), truth)
    assert s.nominal_scale("a") == 0.5
    # the folder appears only once complete, and is not silently replaced
    with pytest.raises(InputError, match="already exists"):
        write_sample(tmp_path / "s", name="x", ct=ct, voxel_size_um=2.0, phase_table=table, sections=[])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_failed_write_leaves_nothing(tmp_path):
    table = PhaseTable((Phase(0, "resin", (0, 0, 0)),), target="resin")
    bad = [SectionData("a", np.zeros((4, 4), np.uint8), 1.0)]
    with pytest.raises(Exception):  # noqa: B017  (any crash while writing)
        write_sample(tmp_path / "s", name="x", ct=None, voxel_size_um=1.0, phase_table=table, sections=bad)
    assert list(tmp_path.iterdir()) == []


def test_convert_tiff_and_slice_folder_to_zarr(tmp_path):
    import tifffile

    from mineral3d.cli import main
    from mineral3d.io.zarr_io import convert_to_zarr, read_volume_zarr

    vol = np.random.default_rng(0).integers(0, 60000, (37, 50, 61)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "ct.tif", vol, compression="zlib")  # compressed: cannot be memory-mapped
    calls = []
    convert_to_zarr(tmp_path / "ct.tif", tmp_path / "a.zarr", voxel_size_um=2.5, chunks=(8, 16, 16),
                    progress=lambda d, n: calls.append((d, n)))
    arr, voxel = read_volume_zarr(tmp_path / "a.zarr")
    np.testing.assert_array_equal(arr[...], vol)
    assert voxel == 2.5 and arr.chunks == (8, 16, 16) and calls[-1] == (37, 37) and len(calls) == 5
    (tmp_path / "slices").mkdir()
    for i, s in enumerate(vol):
        tifffile.imwrite(tmp_path / "slices" / f"s{i:03d}.tif", s)
    with pytest.raises(SystemExit) as exc:
        main(["convert", str(tmp_path / "slices"), "--out", str(tmp_path / "b.zarr"), "--voxel-um", "2.5",
              "--chunk", "8"])
    assert exc.value.code in (0, None)
    np.testing.assert_array_equal(read_volume_zarr(tmp_path / "b.zarr")[0][...], vol)
    with pytest.raises(SystemExit) as exc:
        main(["convert", str(tmp_path / "missing.tif"), "--out", str(tmp_path / "c.zarr"), "--voxel-um", "1"])
    assert exc.value.code == 2 and not (tmp_path / "c.zarr").exists()


def test_block_means_read_slab_by_slab_equal_the_stored_pyramid_level(tmp_path, monkeypatch):
    """The coarse level registration reads from a CT too large for memory: block means of the trimmed
    volume, slab by slab from a Zarr, equal to the 2x-mean level that write_volume_zarr stores."""
    import zarr

    from mineral3d.io.volumes import block_means
    from mineral3d.io.zarr_io import read_volume_zarr, write_volume_zarr
    from mineral3d.pipeline.registration import coarse_level_of

    vol = np.random.default_rng(0).integers(0, 60000, (37, 26, 30)).astype(np.uint16)
    expect = vol[:36, :24, :28].astype(np.float64).reshape(9, 4, 6, 4, 7, 4).mean(axis=(1, 3, 5))
    z = zarr.create_array(store=str(tmp_path / "v.zarr"), shape=vol.shape, chunks=(8, 16, 16), dtype=vol.dtype)
    z[...] = vol
    for src in (vol, z):
        got = block_means(src, 4, slab=8)   # slabs of 8 layers: 5 reads
        assert got.dtype == np.float32 and got.shape == (9, 6, 7)
        np.testing.assert_allclose(got, expect, rtol=1e-6)
    write_volume_zarr(tmp_path / "p.zarr", vol, voxel_size_um=1.0, levels=2)
    stored = np.asarray(read_volume_zarr(tmp_path / "p.zarr", level=1)[0][...], np.float64)
    np.testing.assert_allclose(stored, block_means(vol, 2), atol=0.5)   # stored level rounded to uint16
    def not_needed(*a, **k):
        raise AssertionError("the stored level was not used")

    monkeypatch.setattr("mineral3d.io.volumes.block_means", not_needed)
    level = coarse_level_of(read_volume_zarr(tmp_path / "p.zarr")[0], path=tmp_path / "p.zarr")
    assert level.factor == 2 and level.shape == vol.shape and level.indicator.shape == stored.shape

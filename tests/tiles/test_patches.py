import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch
from aefheight.core import aef
from aefheight.core.errors import GridMismatch, NoValidData, RasterError, TooFewPatches
from aefheight.core.schema import make
from aefheight.tiles.patches import TilingSettings, cut_patches
from aefheight.tiles.store import PatchStore
from aefheight.train.dataset import PatchDataset, dequantize_on_device, loader, model_input
from helpers import store_files, store_paths, write_tif


def test_patches_equal_the_raster_windows(tiny_aoi, tmp_path):
    index = cut_patches(
        tiny_aoi["embeddings"],
        tiny_aoi["dsm"],
        make(TilingSettings, patch_size=64),
        **store_paths(tmp_path),
    )
    store = PatchStore(*store_files(tmp_path))
    assert len(store) == len(index) and store.embeddings.dtype == np.int8
    with rasterio.open(tiny_aoi["embeddings"]) as e, rasterio.open(tiny_aoi["dsm"]) as d:
        for k in (0, len(index) - 1):
            r, c = int(index.loc[k, "row"]), int(index.loc[k, "col"])
            win = ((r, r + 64), (c, c + 64))
            np.testing.assert_array_equal(store.embeddings[k], e.read(window=win))
            z = d.read(1, window=win, masked=True)
            np.testing.assert_array_equal(np.isnan(store.dsm[k]), z.mask)
            x0, _, _, y1 = index.geometry[k].bounds
            assert (x0, y1) == e.transform @ (c, r)


def test_low_valid_patches_are_dropped(tiny_aoi, tmp_path):
    all_ = cut_patches(
        tiny_aoi["embeddings"],
        tiny_aoi["dsm"],
        make(TilingSettings, patch_size=64, min_valid_fraction=0.01),
        **store_paths(tmp_path / "a"),
    )
    strict = cut_patches(
        tiny_aoi["embeddings"],
        tiny_aoi["dsm"],
        make(TilingSettings, patch_size=64, min_valid_fraction=0.999),
        **store_paths(tmp_path / "b"),
    )
    assert len(strict) < len(all_) == 12
    assert (strict["valid_fraction"] >= 0.999).all()
    assert np.load(tmp_path / "b" / "dsm.npy", mmap_mode="r").shape[0] == len(strict)


def test_dataset_dequantizes_and_masks(tiny_aoi, tmp_path):
    cut_patches(
        tiny_aoi["embeddings"],
        tiny_aoi["dsm"],
        make(TilingSettings, patch_size=64),
        **store_paths(tmp_path),
    )
    store = PatchStore(*store_files(tmp_path))
    ds = PatchDataset(store, np.arange(len(store)), mean=50.0, std=10.0)
    c, e, y, m = ds[0]
    assert c.dtype == torch.int8 and e.shape == (0, 64, 64)
    assert c.shape == (64, 64, 64) and y.shape == m.shape == (1, 64, 64)
    codes, z = store.embeddings[0], store.dsm[0]
    np.testing.assert_array_equal(c.numpy(), codes)
    x = model_input(c[None], e[None], torch.device("cpu"))
    assert x.is_contiguous(memory_format=torch.channels_last)
    np.testing.assert_array_equal(x[0].numpy(), aef.dequantize(codes, nodata_value=0.0))
    valid = aef.valid_mask(codes) & ~np.isnan(z)
    np.testing.assert_array_equal(m.numpy()[0], valid)
    np.testing.assert_allclose(y.numpy()[0][valid], (z[valid] - 50.0) / 10.0, rtol=1e-6)


def test_device_dequantization_equals_the_cpu_lookup_bit_for_bit():
    codes = torch.arange(-128, 128, dtype=torch.int8).repeat(3, 64, 1).reshape(3, 64, 16, 16)
    x = model_input(codes, torch.ones(3, 1, 16, 16), torch.device("cpu"))
    want = aef.dequantize(codes.numpy(), nodata_value=0.0)
    assert x.shape == (3, 65, 16, 16) and torch.equal(x[:, 64:], torch.ones(3, 1, 16, 16))
    np.testing.assert_array_equal(x[:, :64].numpy(), want)
    # the gather used on GPUs, run here on the CPU: the same float32 values
    np.testing.assert_array_equal(dequantize_on_device(codes).numpy(), want)
    assert x[0, 0, 0, 0] == 0.0  # nodata (-128) as 0 for the model


def test_store_read_equals_the_memory_map_and_survives_pickling(tiny_aoi, tmp_path):
    import pickle

    cut_patches(
        tiny_aoi["embeddings"],
        tiny_aoi["dsm"],
        make(TilingSettings, patch_size=64),
        **store_paths(tmp_path),
    )
    store = PatchStore(*store_files(tmp_path))
    for k in range(len(store)):
        codes, z = store.read(k)
        assert codes.dtype == np.int8 and z.dtype == np.float32
        np.testing.assert_array_equal(codes, store.embeddings[k])
        np.testing.assert_array_equal(z, store.dsm[k])  # NaN where nodata, in the same places
    store.prefetch([0, len(store) - 1])  # a hint only: changes nothing
    ds = PatchDataset(store, np.arange(len(store))[::-1], mean=1.0, std=2.0)
    batch = ds.__getitems__([1, 0])  # collated: x, y, mask with the batch first
    for b, i in enumerate([1, 0]):
        for one, many in zip(ds[i], batch, strict=True):
            np.testing.assert_array_equal(one.numpy(), many[b].numpy())
    c, _, y, m = next(iter(loader(ds, batch_size=3)))  # the factory's loader keeps them collated
    assert c.shape == (3, 64, 64, 64) and y.shape == m.shape == (3, 1, 64, 64)
    np.testing.assert_array_equal(c[2].numpy(), ds[2][0].numpy())
    clone = pickle.loads(pickle.dumps(store))  # e.g. spawned DataLoader workers
    np.testing.assert_array_equal(clone.read(len(store) - 1)[0], codes)
    with pytest.raises(IndexError):
        store.read(len(store))


def test_batches_reuse_only_arrays_nothing_holds(tiny_aoi, tmp_path):
    cut_patches(
        tiny_aoi["embeddings"],
        tiny_aoi["dsm"],
        make(TilingSettings, patch_size=64),
        **store_paths(tmp_path),
    )
    store = PatchStore(*store_files(tmp_path))
    ds = PatchDataset(store, np.arange(len(store)), mean=1.0, std=2.0)
    held = ds.__getitems__([0, 1])
    kept = [t.clone() for t in held]
    other = ds.__getitems__([2, 3])  # the first batch is still held: new arrays
    assert other[0].data_ptr() != held[0].data_ptr()
    for a, b in zip(held, kept, strict=True):
        assert torch.equal(a, b)  # untouched
    view = held[0][1]  # a view keeps the whole batch alive
    ptr = held[0].data_ptr()
    del held, other
    again = ds.__getitems__([4, 5])
    assert again[0].data_ptr() != ptr and torch.equal(view, kept[0][1])
    del view
    assert ds.__getitems__([0, 1])[0].data_ptr() == ptr  # released: reused
    for a, b in zip(ds.__getitems__([0, 1]), kept, strict=True):
        assert torch.equal(a, b)  # reused arrays are filled afresh


def test_bad_inputs_raise_named_errors(tiny_aoi, tmp_path):
    s = make(TilingSettings, patch_size=64)
    emb = np.zeros((64, 128, 128), np.int8)
    write_tif(tmp_path / "e.tif", emb, nodata=-128)
    write_tif(tmp_path / "d_nan.tif", np.full((1, 128, 128), np.nan, np.float32))
    with pytest.raises(RasterError, match="declares no nodata"):
        cut_patches(tmp_path / "e.tif", tmp_path / "d_nan.tif", s, **store_paths(tmp_path / "o"))
    write_tif(tmp_path / "d_nd.tif", np.full((1, 128, 128), -9999, np.float32), nodata=-9999)
    with pytest.raises(NoValidData, match="no pixel has both"):
        cut_patches(tmp_path / "e.tif", tmp_path / "d_nd.tif", s, **store_paths(tmp_path / "o"))
    write_tif(tmp_path / "e16.tif", emb.astype(np.int16))
    with pytest.raises(RasterError, match="int8 AEF codes or float32"):
        cut_patches(tmp_path / "e16.tif", tmp_path / "d_nd.tif", s, **store_paths(tmp_path / "o"))
    write_tif(tmp_path / "e3.tif", emb[:3])
    with pytest.raises(RasterError, match="has 3 bands; aef embeddings have 64"):
        cut_patches(tmp_path / "e3.tif", tmp_path / "d_nd.tif", s, **store_paths(tmp_path / "o"))
    with pytest.raises(GridMismatch):
        cut_patches(tiny_aoi["embeddings"], tmp_path / "d_nd.tif", s, **store_paths(tmp_path / "o"))
    with pytest.raises(TooFewPatches, match="smaller than one"):
        cut_patches(
            tmp_path / "e.tif",
            tmp_path / "d_nd.tif",
            make(TilingSettings, patch_size=256),
            **store_paths(tmp_path / "o"),
        )
    assert not (tmp_path / "o" / "index.parquet").exists()
    assert not list((tmp_path / "o").glob("*.npy"))


def test_coarse_dem_patches_equal_its_windows_and_a_misfit_dem_is_refused(tiny_aoi, tmp_path):
    kw = {"coarse_dem_path": tiny_aoi["coarse_dem"], "store_coarse_dem": tmp_path / "c.npy"}
    index = cut_patches(
        tiny_aoi["embeddings"], tiny_aoi["dsm"], make(TilingSettings, patch_size=64),
        **store_paths(tmp_path), **kw,
    )  # fmt: skip
    store = PatchStore(*store_files(tmp_path), tmp_path / "c.npy")
    assert store.coarse_dem is not None and store.coarse_dem.shape == store.dsm.shape
    with rasterio.open(tiny_aoi["coarse_dem"]) as c:
        k = len(index) - 1
        r, col = int(index.loc[k, "row"]), int(index.loc[k, "col"])
        np.testing.assert_array_equal(
            store.coarse_dem[k], c.read(1, window=((r, r + 64), (col, col + 64)))
        )
        prof, z = c.profile, c.read()
    shifted = tmp_path / "shifted.tif"
    prof["transform"] = prof["transform"] @ rasterio.Affine.translation(1, 0)
    with rasterio.open(shifted, "w", **prof) as dst:
        dst.write(z)
    with pytest.raises(GridMismatch):
        cut_patches(
            tiny_aoi["embeddings"], tiny_aoi["dsm"], make(TilingSettings, patch_size=64),
            **store_paths(tmp_path / "b"), coarse_dem_path=shifted,
            store_coarse_dem=tmp_path / "b" / "c.npy",
        )  # fmt: skip
    assert not (tmp_path / "b" / "c.npy").exists()


@pytest.mark.parametrize("stride", [32, 64, 96])
def test_tiling_in_column_chunks_writes_the_same_store(tiny_aoi, tmp_path, monkeypatch, stride):
    import aefheight.tiles.patches as patches

    def run(chunk_px: int) -> dict[str, bytes]:
        monkeypatch.setattr(patches, "CHUNK_PX", chunk_px)
        out = tmp_path / str(chunk_px)
        out.mkdir()
        paths = {**store_paths(out), "store_coarse_dem": out / "coarse_dem.npy"}
        s = make(TilingSettings, patch_size=64, stride=stride, min_valid_fraction=0.3)
        cut_patches(tiny_aoi["embeddings"], tiny_aoi["dsm"], s, paths["index"],
             paths["store_embeddings"], paths["store_dsm"], tiny_aoi["coarse_dem"],
             paths["store_coarse_dem"])  # fmt: skip
        return {k: v.read_bytes() for k, v in paths.items() if k != "index"} | {
            "index": gpd.read_parquet(paths["index"]).to_json().encode()
        }

    whole = run(10_000)  # the AOI's whole width in one window
    assert len(np.load(tmp_path / "10000" / "dsm.npy")) > 3
    assert run(64) == whole  # one patch column per window
    assert run(130) == whole  # windows of two columns, overlapping when stride < patch


def test_model_input_in_either_layout_holds_the_same_values():
    rng = np.random.default_rng(0)
    codes = torch.from_numpy(rng.integers(-128, 128, (2, 64, 8, 8)).astype(np.int8))
    for extra in (torch.zeros(2, 0, 8, 8), torch.ones(2, 1, 8, 8)):
        cl = model_input(codes, extra, torch.device("cpu"))
        plain = model_input(codes, extra, torch.device("cpu"), channels_last=False)
        assert plain.is_contiguous() and cl.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(cl, plain, rtol=0, atol=0)

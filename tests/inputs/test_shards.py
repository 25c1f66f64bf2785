"""Sharding: every sharded step equals the unsharded one, bit for bit."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import torch
from aefheight.core.errors import ConfigError, RasterError
from aefheight.core.names import CODES
from aefheight.core.raster import Grid, mosaic_cog
from aefheight.core.schema import make
from aefheight.evaluate.metrics import (
    evaluate_partials,
    evaluate_prediction,
    merge_partials,
    reduce_partials,
    write_partials,
)
from aefheight.inputs.shards import BLOCK_PX, shard_names, shard_window
from aefheight.models.factory import ModelSettings, build_model, save_checkpoint
from aefheight.predict.infer import PredictSettings, predict_raster
from aefheight.tiles.patches import TilingSettings, cut_patches, merge_shard_indexes
from aefheight.tiles.store import PatchStore
from helpers import AEF

# the tiny AOI is 256 x 192 px: 128 px shards give 2 x 2 = 4 shards (not whole evaluation
# blocks; the evaluation test below uses its own raster); 96 px shards an uneven 3 x 2
SHARD_PX = 128


def _windows(height: int, width: int, shard_px: int):
    return [shard_window(n, height, width, shard_px) for n in shard_names(height, width, shard_px)]


@pytest.mark.parametrize(("height", "width", "shard_px"), [(192, 256, 128), (300, 257, 256)])
def test_shards_cover_the_aoi_once(height, width, shard_px):
    covered = np.zeros((height, width), int)
    for w in _windows(height, width, shard_px):
        covered[w.toslices()] += 1
    assert (covered == 1).all()


def test_a_shard_outside_the_aoi_is_one_line():
    with pytest.raises(ConfigError, match="not one of the 4 shards"):
        shard_window("r2c0", 192, 256, 128)


def test_the_schema_keeps_shards_whole_evaluation_blocks():
    from aefheight.core.raster import BLOCK
    from aefheight.core.schema import schema

    key = schema()["properties"]["sharding"]["properties"]["shard_px"]
    assert key["multipleOf"] == BLOCK_PX and key["minimum"] == BLOCK_PX
    assert BLOCK == BLOCK_PX  # evaluation blocks are the blocks of the rasters we write


def _tile(aoi, out, window=None, stride=None):
    out.mkdir(parents=True, exist_ok=True)
    s = make(TilingSettings, patch_size=64, stride=stride, min_valid_fraction=0.5)
    stores = [out / f"{k}.npy" for k in ("embeddings", "dsm", "coarse_dem")]
    cut_patches(
        aoi["embeddings"], aoi["dsm"], s, out / "index.parquet", stores[0], stores[1],
        aoi["coarse_dem"], stores[2], window,
    )  # fmt: skip
    return stores


@pytest.mark.parametrize(("stride", "shard_px"), [(None, 96), (48, 32)])
def test_sharded_tiling_reads_the_same_patches_in_the_same_order(
    tiny_aoi, tmp_path, stride, shard_px
):
    whole = PatchStore(*_tile(tiny_aoi, tmp_path / "whole", stride=stride))
    want = gpd.read_parquet(tmp_path / "whole" / "index.parquet")
    names = shard_names(192, 256, shard_px)  # uneven at the edges (96 px); 32 px: some empty
    stores = []
    for n in names:
        stores.append(_tile(tiny_aoi, tmp_path / n, shard_window(n, 192, 256, shard_px), stride))
    got = merge_shard_indexes([tmp_path / n / "index.parquet" for n in names], tmp_path / "i.pq")
    cols = [c for c in want.columns if c != "patch_id"]
    pd.testing.assert_frame_equal(got[cols], want[cols])
    sharded = PatchStore(*([s[i] for s in stores] for i in range(3)))
    sharded.check_index(got)
    assert len(sharded) == len(whole)
    assert any(len(np.load(q[0], mmap_mode="r")) == 0 for q in stores) == (shard_px == 32)
    for a, b in zip(want["patch_id"], got["patch_id"], strict=True):
        for x, y in zip(whole.read(a), sharded.read(b), strict=True):
            assert np.array_equal(x, y, equal_nan=True)
        assert np.array_equal(whole.coarse_dem[a], sharded.coarse_dem[b], equal_nan=True)
    sharded.prefetch(got["patch_id"].to_numpy())
    # the same stores in another order: refused, not trained on the wrong patches
    swapped = PatchStore(*([s[i] for s in stores[::-1]] for i in range(3)))
    with pytest.raises(RasterError, match="does not match"):
        swapped.check_index(got)


def _checkpoint(path, arch):
    s = make(
        ModelSettings,
        arch=arch,
        **({"decoder_channels": (16, 8, 8, 8, 4)} if arch == "unet" else {}),
    )
    torch.manual_seed(0)
    m = build_model(s, 64)
    if arch == "ridge":
        with torch.no_grad():
            m.head.weight.normal_(0, 10)
            m.head.bias.fill_(50.0)
    save_checkpoint(path, m, s, 2.0, 3.0, AEF, patch_size=64)


@pytest.mark.parametrize("arch", ["ridge", "unet"])
def test_sharded_prediction_assembles_into_the_same_pixels(tiny_aoi, tmp_path, arch):
    ck = tmp_path / "m.pt"
    _checkpoint(ck, arch)
    s = make(PredictSettings, window=64, overlap=16, batch_size=3)
    predict_raster(tiny_aoi["embeddings"], ck, tmp_path / "whole.tif", s, meta={"model": arch})
    parts = []
    for n in shard_names(192, 256, SHARD_PX):
        parts.append(tmp_path / f"{n}.tif")
        window = shard_window(n, 192, 256, SHARD_PX)
        predict_raster(
            tiny_aoi["embeddings"], ck, parts[-1], s, meta={"model": arch}, window=window
        )
    mosaic_cog(parts, tmp_path / "assembled.tif")
    with rasterio.open(tmp_path / "whole.tif") as a, rasterio.open(tmp_path / "assembled.tif") as b:
        assert Grid.of(a) == Grid.of(b) and a.nodata == b.nodata
        assert a.tags() == b.tags() and a.descriptions == b.descriptions
        assert b.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        x, y = a.read(1), b.read(1)
    assert np.array_equal(x, y) and np.unique(x).size > 1000
    assert not list(tmp_path.glob(".*"))  # no VRT or temporary file left behind


def _evaluation_rasters(d):
    """Prediction, reference (nodata, NaN), split labels and classes of 600 x 520 px."""
    from affine import Affine
    from rasterio.crs import CRS

    g = Grid(CRS.from_epsg(32630), Affine(10, 0, 0, 0, -10, 0), 600, 520)
    rng = np.random.default_rng(4)
    ref = rng.normal(80, 30, (520, 600)).astype(np.float32)
    pred = (ref + rng.normal(1, 3, ref.shape)).astype(np.float32)
    ref[:7] = -9999.0
    pred[:, :5] = -9999.0
    pred[300, 300] = np.nan
    lab = np.zeros(ref.shape, np.uint8)
    lab[:, :200], lab[:, 200:260], lab[:, 300:] = CODES["train"], CODES["val"], CODES["test"]
    lc = rng.integers(0, 3, ref.shape).astype(np.uint8)
    paths = {}
    for name, arr, nd in (
        ("pred", pred, -9999.0),
        ("ref", ref, -9999.0),
        ("lab", lab, 0),
        ("lc", lc, 255),
    ):
        paths[name] = d / f"{name}.tif"
        with rasterio.open(paths[name], "w", **g.profile(1, arr.dtype.name, nd)) as dst:
            dst.write(arr, 1)
            dst.update_tags(window="64", overlap="16", classes="0:open,1:forest,2:urban")
    return paths


def test_merged_shard_statistics_give_the_same_evaluation(tmp_path):
    p = _evaluation_rasters(tmp_path)
    args = (p["pred"], p["ref"], p["lab"], p["lc"])
    want = evaluate_prediction(*args, max_samples=5000, seed=1)
    files = []
    for n in shard_names(520, 600, BLOCK_PX):  # 3 x 3 shards, uneven at the edges
        files.append(tmp_path / f"{n}.npz")
        window = shard_window(n, 520, 600, BLOCK_PX)
        write_partials(evaluate_partials(*args, window, max_samples=5000, seed=1), files[-1])
    got = reduce_partials(merge_partials(files[::-1]))  # any order of the shards
    for name in ("metrics", "sample", "by_height", "by_class", "seams"):
        pd.testing.assert_frame_equal(getattr(got, name), getattr(want, name), check_exact=True)
    assert len(want.sample) > 1000 and want.by_class["class_name"].eq("forest").any()
    assert (want.metrics["n"] > 0).all()


def test_the_snakefile_imports_no_raster_library():
    """rules/common.smk imports these modules in Snakemake's own process, which on a login node
    may be a bare Snakemake env (--sdm conda): they must not pull in rasterio or torch."""
    import subprocess
    import sys
    from pathlib import Path

    workflow = Path(__file__).resolve().parents[2] / "workflow"
    code = (
        f"import sys; sys.path.insert(0, {str(workflow)!r}); "
        "import aefheight.config, aefheight.core.errors, aefheight.inputs.shards; "
        "print(sorted(m for m in ('rasterio', 'torch', 'geopandas') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

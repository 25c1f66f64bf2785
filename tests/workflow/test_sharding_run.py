"""A tiny AOI in 4 shards through the real snakemake equals the unsharded run, bit for bit.

The AOI holds 128 float32 bands (the synthetic TESSERA): shards of any embedding product.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import yaml
from helpers import TINY_OVERRIDES, snakemake, tiny_config

pytestmark = pytest.mark.slow
MODELS = ("unet", "coarse_dem")  # a net, and the DEM (evaluated per shard, not predicted)
TARGETS = ("results/tiny/metrics/metrics.csv", "results/tiny/tables/intervals.csv")


def _run(work: Path, shard_px: int | None) -> str:
    cfg = tiny_config()
    cfg["aois"]["tiny"]["synthetic"]["height"] = 320  # 384 x 320 px: 2 x 2 shards of 256 px
    # TESSERA's form (128 float32 bands): the int8 AEF codes' shards are the unit tests'
    # (tests/inputs/test_shards.py), the study's DAG is the same for both
    cfg["aois"]["tiny"]["synthetic"]["product"] = "tessera"
    cfg["models"] = {m: TINY_OVERRIDES["models"][m] for m in MODELS}
    cfg["correction"] = {"methods": []}
    cfg["seeds"] = [0]
    cfg["training"]["max_epochs"] = 1
    cfg["sharding"] = {"shard_px": shard_px}
    work.mkdir()
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake(work, "--cores", "2", *TARGETS)
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    base = tmp_path_factory.mktemp("sharding")
    _run(base / "whole", None)
    out = _run(base / "sharded", 256)
    return base / "whole" / "results" / "tiny", base / "sharded" / "results" / "tiny", out


def _jobs(stdout: str, rule: str) -> int:
    m = re.search(rf"^{rule}\s+(\d+)\s*$", stdout, re.M)  # Snakemake's job stats table
    return int(m.group(1)) if m else 0


def test_each_sharded_step_runs_one_job_per_shard(runs):
    _, sharded, stdout = runs
    assert sorted(p.name for p in (sharded / "shards").iterdir()) == [
        "r0c0",
        "r0c1",
        "r1c0",
        "r1c1",
    ]
    assert _jobs(stdout, "tile_shard") == 4 and _jobs(stdout, "tile") == 0
    store = np.load(sharded / "shards/r0c0/patches/embeddings.npy", mmap_mode="r")
    assert (store.shape[1], store.dtype) == (128, np.float32)  # TESSERA's form
    assert _jobs(stdout, "predict_shard") == 4 and _jobs(stdout, "predict") == 0
    assert _jobs(stdout, "assemble_prediction") == 1
    assert _jobs(stdout, "evaluate_shard") == 4 * 2  # also the DEM's
    assert _jobs(stdout, "merge_evaluation") == 2 and _jobs(stdout, "evaluate") == 0


def test_sharded_and_unsharded_runs_give_identical_metrics(runs):
    whole, sharded, _ = runs
    tables = sorted((whole / "metrics").glob("*/*.csv"))
    assert len(tables) == 5 * 2  # five tables of two predictions
    for t in tables:
        assert (sharded / t.relative_to(whole)).read_bytes() == t.read_bytes(), t.name
    assert (sharded / "metrics" / "metrics.csv").read_bytes() == (
        whole / "metrics" / "metrics.csv"
    ).read_bytes()


def test_sharded_and_unsharded_runs_give_identical_prediction_pixels(runs):
    whole, sharded, _ = runs
    for name in ("unet_seed0", "coarse_dem_seed0"):
        with rasterio.open(whole / "predictions" / f"{name}.tif") as a:
            x, grid = a.read(1), (a.crs, a.transform, a.shape)
        with rasterio.open(sharded / "predictions" / f"{name}.tif") as b:
            y = b.read(1)
            assert (b.crs, b.transform, b.shape) == grid
            assert b.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert np.array_equal(x, y), name
    # training read the same patches from the four stores: the same history (but its clock)
    h = "models/unet/seed0/history.csv"
    a, b = (pd.read_csv(r / h).drop(columns="seconds") for r in (whole, sharded))
    pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_sharded_and_unsharded_runs_give_identical_intervals(runs):
    """The intervals are made from the assembled prediction: the same pixels and coverage."""
    whole, sharded, _ = runs
    ivs = sorted((whole / "intervals").glob("*.tif"))
    assert len(ivs) == 2 * 2  # two predictions, two methods
    for iv in ivs:
        with rasterio.open(iv) as a, rasterio.open(sharded / "intervals" / iv.name) as b:
            assert np.array_equal(a.read(), b.read()), iv.name
    for t in ("tables/intervals.csv", *(f"intervals/coverage/{m}_seed0.csv" for m in MODELS)):
        assert (sharded / t).read_bytes() == (whole / t).read_bytes(), t

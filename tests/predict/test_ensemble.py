"""The seed ensemble: the pixel-wise mean of a model's seeds, nodata where any seed has none."""

import numpy as np
import pytest
import rasterio
from aefheight.core.errors import ConfigError
from aefheight.predict import PRED_NODATA
from aefheight.predict.ensemble import ENSEMBLE_SEED, ensemble
from helpers import write_tif


def test_the_ensemble_is_the_mean_of_the_seeds(tmp_path):
    rng = np.random.default_rng(0)
    preds = rng.uniform(0, 300, (3, 40, 300)).astype(np.float32)  # past one 256-px block
    preds[1, 5, 6] = PRED_NODATA
    paths = []
    for s, p in enumerate(preds):
        paths.append(write_tif(tmp_path / f"s{s}.tif", p[None], nodata=PRED_NODATA))
        with rasterio.open(paths[-1], "r+") as ds:
            ds.update_tags(model="unet", seed=str(s))
    ensemble(model="unet", predictions=paths, prediction=tmp_path / "e.tif")
    with rasterio.open(tmp_path / "e.tif") as ds:
        mean, tags = ds.read(1), ds.tags()
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
    assert tags["model"] == "unet_ensemble" and tags["seeds"] == "0,1,2"
    assert int(tags["seed"]) == ENSEMBLE_SEED
    assert mean[5, 6] == PRED_NODATA
    ok = np.ones(mean.shape, bool)
    ok[5, 6] = False
    np.testing.assert_allclose(mean[ok], preds.mean(0)[ok], rtol=1e-6)


def test_one_seed_is_no_ensemble(tmp_path):
    p = write_tif(tmp_path / "s0.tif", np.zeros((1, 8, 8), np.float32), nodata=PRED_NODATA)
    with pytest.raises(ConfigError, match="two seeds or more"):
        ensemble(model="unet", predictions=[p], prediction=tmp_path / "e.tif")

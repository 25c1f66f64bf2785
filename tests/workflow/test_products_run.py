"""Two embedding products of one area through the real snakemake: a 128-band study end to end.

The tiny synthetic AOI twice: as AEF (64 int8 bands) and as TESSERA (128 float32 bands, the same
seed, so the same terrain, DSM and split); ``compare_products`` pairs them by seed.
"""

import numpy as np
import pandas as pd
import pytest
import rasterio
import torch
import yaml
from helpers import snakemake, tiny_config

pytestmark = pytest.mark.slow

MODELS = ("unet", "ridge", "ridge_ctx")


@pytest.fixture(scope="module")
def products_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("products")
    cfg = tiny_config()
    tiny = cfg["aois"]["tiny"]
    cfg["aois"]["tiny_t"] = {**tiny, "synthetic": {**tiny["synthetic"], "product": "tessera"}}
    cfg["models"] = {m: cfg["models"][m] for m in MODELS}
    cfg["correction"]["methods"] = []
    cfg["compare_products"] = [["tiny", "tiny_t"]]
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    snakemake(work, "--cores", "2")  # the whole study: every figure, table and interval
    return work


def test_the_128_band_study_runs_on_the_data_s_bands(products_run):
    res = products_run / "results"
    with rasterio.open(res / "tiny_t/inputs/embeddings.tif") as e:
        assert (e.count, e.dtypes[0], e.tags()["EMBEDDING_PRODUCT"]) == (128, "float32", "tessera")
        assert np.isnan(e.read(1)).any()  # the embedding gap: NaN nodata
    store = np.load(res / "tiny_t/patches/embeddings.npy", mmap_mode="r")
    assert store.shape[1] == 128 and store.dtype == np.float32
    for aoi, bands, product in (("tiny", 64, "aef"), ("tiny_t", 128, "tessera")):
        ckpt = torch.load(res / aoi / "models/unet/seed0/checkpoint.pt", weights_only=True)
        assert (ckpt["embedding_bands"], ckpt["embedding_product"]) == (bands, product)
        first = next(k for k in ckpt["model"] if k.endswith("weight"))
        assert ckpt["model"][first].shape[1] == bands  # the net's input channels
        ridge = torch.load(res / aoi / "models/ridge_ctx/seed0/checkpoint.pt", weights_only=True)
        assert ridge["model"]["head.weight"].shape[1] == bands * 3  # three box-mean scales
    for aoi in ("tiny", "tiny_t"):
        m = pd.read_csv(res / aoi / "metrics/metrics.csv")
        assert set(m["model"]) >= set(MODELS) and m["r2"].notna().all()
        assert (res / aoi / "figures/residual_maps.png").stat().st_size > 0
        assert pd.read_csv(res / aoi / "tables/intervals.csv")["covered_pct"].notna().any()


def test_the_products_are_compared_paired_by_seed_with_verdicts(products_run):
    out = products_run / "results/products/tiny_vs_tiny_t"
    comp = pd.read_csv(out / "comparisons.csv")
    assert set(comp["model"]) == set(MODELS) and set(comp["metric"]) == {"r2", "rmse_m"}
    assert (comp["n_seeds"] == 2).all() and comp["ci_low"].notna().all()
    res = products_run / "results"
    test = {
        a: m[(m["split"] == "test") & (m["seed"] >= 0)]
        for a in ("tiny", "tiny_t")
        if (m := pd.read_csv(res / a / "metrics/metrics.csv")) is not None
    }
    for r in comp.itertuples():
        a, b = (test[k][test[k]["model"] == r.model].set_index("seed")[r.metric] for k in test)
        want = b - a
        assert r.mean_diff == pytest.approx(want.mean())
        assert r.verdict.startswith(("U-Net on tiny_t", "Ridge")) and "tiny" in r.verdict
    md = (out / "products.md").read_text()
    assert "per seed" in md and "±" in md and md.count("tiny_t") >= len(MODELS)
    front = (products_run / "results/report_front.rst").read_text()
    assert "Embedding products: tiny_t vs tiny" in front


def test_products_with_different_splits_are_refused(products_run, tmp_path):
    from aefheight.core.errors import RasterError
    from aefheight.report.products import check_same_split

    res = products_run / "results"
    with rasterio.open(res / "tiny/split/split.tif") as src:
        prof, lab = src.profile, src.read()
    lab[0, :, :10] = 0
    with rasterio.open(tmp_path / "other.tif", "w", **prof) as dst:
        dst.write(lab)
    check_same_split(res / "tiny/split/split.tif", res / "tiny_t/split/split.tif")
    with pytest.raises(RasterError, match=r"differ .* compared on one split"):
        check_same_split(res / "tiny/split/split.tif", tmp_path / "other.tif")

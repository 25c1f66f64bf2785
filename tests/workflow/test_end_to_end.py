"""The whole study on a tiny synthetic AOI, through the real snakemake."""

import numpy as np
import pandas as pd
import pytest
import rasterio
import yaml
from aefheight import aef
from snakehelp import snakemake, tiny_config

pytestmark = pytest.mark.slow

MODELS = ("unet", "unetplusplus", "ridge")


def test_every_output_exists_on_the_embedding_grid(tiny_run):
    res = tiny_run / "results" / "tiny"
    with rasterio.open(res / "inputs" / "embeddings.tif") as e:
        grid, codes = (e.crs, e.transform, e.shape), e.read()
    with rasterio.open(res / "inputs" / "dsm.tif") as d:
        ref = d.read(1, masked=True)
    both = ~ref.mask & aef.valid_mask(codes)
    for m in MODELS:
        with rasterio.open(res / "predictions" / f"{m}_seed0.tif") as p:
            assert (p.crs, p.transform, p.shape) == grid
            assert p.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
            pred = p.read(1)
        assert np.isfinite(pred[both]).all() and (pred[both] != p.nodata).all()
        for ext in ("png", "pdf"):
            assert (res / "figures" / f"pred_vs_ref_{m}_seed0.{ext}").stat().st_size > 0
    assert (res / "figures" / "split_map.png").exists()
    assert (res / "figures" / "loss_curves_seed0.png").exists()
    assert (res / "split" / "split.gpkg").exists()
    assert list((res / "logs").rglob("*.log")) and list((res / "benchmarks").rglob("*.tsv"))


def test_metrics_csv_is_complete(tiny_run):
    df = pd.read_csv(tiny_run / "results" / "tiny" / "metrics" / "metrics.csv")
    assert sorted(zip(df["model"], df["split"], strict=True)) == sorted(
        (m, s) for m in MODELS for s in ("train", "val", "test")
    )
    cols = ["n", "r2", "rmse_m", "mae_m", "bias_m", "median_diff_m", "nmad_m", "pearson_r"]
    assert df[cols].notna().all().all() and (df["n"] > 0).all()
    assert (df["diff_convention"] == "prediction - reference").all()


def test_second_run_has_nothing_to_do(tiny_run):
    out = snakemake(tiny_run, "--cores", "2")
    assert "Nothing to be done" in out.stdout + out.stderr


def test_report_is_produced(tiny_run):
    snakemake(tiny_run, "--report", "report.html")
    html = (tiny_run / "report.html").read_text(errors="replace")
    assert len(html) > 50_000
    for name in ("metrics.csv", "split_map.png", "pred_vs_ref_unetplusplus_seed0.png"):
        assert name in html


def test_unknown_config_key_stops_before_any_job(tmp_path):
    cfg = tiny_config()
    cfg["training"]["learning_rate"] = 0.1
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    out = snakemake(tmp_path, "--cores", "1", check=False)
    assert out.returncode != 0
    assert "learning_rate" in out.stdout + out.stderr
    assert not (tmp_path / "results").exists()

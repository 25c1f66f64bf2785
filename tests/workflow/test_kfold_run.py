"""Spatial k-fold cross-validation and the area of applicability through the real snakemake."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import yaml
from aefheight.core.names import CODES
from helpers import REPO, TINY_OVERRIDES, snakemake, tiny_config

pytestmark = pytest.mark.slow
FOLDS = 3
MODELS = ("unet", "ridge", "coarse_dem")
SEEDS = (0, 1)


@pytest.fixture(scope="module")
def kfold_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("kfold_study")
    cfg = tiny_config()
    cfg["models"] = {m: TINY_OVERRIDES["models"][m] for m in MODELS}
    cfg["correction"] = {"methods": []}
    cfg["seeds"] = list(SEEDS)
    cfg["split"]["folds"] = FOLDS
    cfg["aoa"] = {"sample_px": 500, "seed": 0}
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    snakemake(work, "--cores", "2")
    return work


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1)


def test_each_fold_holds_out_its_own_strip_once(kfold_run):
    res = kfold_run / "results" / "tiny"
    single = _read(res / "split" / "split.tif")
    held = np.zeros(single.shape, int)
    for f in range(FOLDS):
        lab = _read(res / "kfold" / f"fold{f}" / "split" / "split.tif")
        assert ((lab > 0) == (single > 0)).all()  # the same covered AOI
        held += lab == CODES["test"]
        for m in MODELS:
            for s in SEEDS:
                assert (res / "kfold" / f"fold{f}" / "predictions" / f"{m}_seed{s}.tif").exists()
    assert held.max() == 1 and (held[single > 0] == 1).all()


def test_aoa_rasters_are_cogs_on_the_grid_with_their_threshold(kfold_run):
    res = kfold_run / "results" / "tiny"
    with rasterio.open(res / "inputs" / "embeddings.tif") as e:
        grid = (e.crs, e.transform, e.shape)
    for split in [res, *(res / "kfold" / f"fold{f}" for f in range(FOLDS))]:
        with rasterio.open(split / "aoa" / "aoa.tif") as ds:
            assert (ds.crs, ds.transform, ds.shape) == grid
            assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
            di, thr = ds.read(1, masked=True), float(ds.tags()["threshold"])
        assert di.min() >= 0 and thr > 0
        table = pd.read_csv(split / "aoa" / "aoa.csv").set_index("split")
        assert 0 <= table.loc["test", "outside_pct"] <= 100
        m = pd.read_csv(split / "aoa" / "metrics.csv")
        assert set(m["model"]) == set(MODELS) and set(m["area"]) == {"inside", "outside"}
    cov = pd.read_csv(res / "tables" / "intervals.csv")  # the single split's intervals
    assert set(cov["area"]) == {"all", "inside", "outside"}
    assert "test coverage outside AOA (%)" in (res / "tables" / "intervals.md").read_text()


def test_kfold_tables_figures_and_findings(kfold_run):
    res = kfold_run / "results" / "tiny"
    t = pd.read_csv(res / "tables" / "kfold.csv")
    assert len(t) == FOLDS * len(MODELS) * len(SEEDS) and t["r2"].notna().all()
    nets = t[t["model"] == "unet"]  # the nets' epochs per fold; none for the baselines
    assert (
        nets["best_epoch"].between(1, 2).all()
        and t.loc[t["model"] != "unet", "best_epoch"].isna().all()
    )
    comps = pd.read_csv(res / "tables" / "kfold_comparisons.csv")
    vs_single = comps[comps["group"] == "k-fold vs single split"]
    assert set(vs_single["model"]) == set(MODELS) and vs_single["verdict"].str.len().min() > 20
    assert (comps["group"] == "net vs baseline").any()
    for fig in ("kfold", "aoa_map"):
        assert (res / "figures" / f"{fig}.png").stat().st_size > 0
    front = (kfold_run / "results" / "report_front.rst").read_text()
    assert front.index("Findings: AOI tiny") < front.index(
        "Spatial k-fold cross-validation: AOI tiny"
    )
    assert "Area of applicability, single split" in front
    md = (res / "tables" / "kfold.md").read_text()
    assert "k-fold (folds × seeds)" in md and "fold 2" in md


def test_a_second_run_has_nothing_to_do(kfold_run):
    out = snakemake(kfold_run, "--cores", "2", "-n").stdout
    assert "Nothing to be done" in out


def test_a_real_aoi_plans_its_folds_from_its_downloaded_inputs(tmp_path):
    """config/paper.yaml (a downloaded AOI) with folds: each fold reads its AOI's rasters."""
    cfg = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    cfg["split"]["folds"] = 3
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    out = snakemake(tmp_path, "-n", "--quiet", "rules").stdout
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", out, flags=re.M))
    n_aois, n_runs = len(cfg["aois"]), len(cfg["models"]) * len(cfg["seeds"])
    assert int(jobs["split_fold"]) == 3 * n_aois and int(jobs["aoa"]) == 4 * n_aois
    assert int(jobs["kfold"]) == n_aois and int(jobs["fetch_embeddings"]) == n_aois
    assert int(jobs["evaluate"]) >= 4 * n_aois * n_runs

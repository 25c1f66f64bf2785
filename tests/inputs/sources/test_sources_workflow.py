"""The download rules through the real snakemake, against the fixture server.

A config naming a real AOI (served by 127.0.0.1) replaces the synthesize rule with the download
rules; the rasters they write go through the unchanged tile and split rules.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import helpers
import numpy as np
import pandas as pd
import pytest
import rasterio
import yaml
from aefheight.core import aef
from fixture_world import RGE_ID, aoi_section, downloads

pytestmark = pytest.mark.slow

REPO = helpers.REPO


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return helpers.snakemake(workdir, *args, check=False, timeout=600)


def config(url: str) -> dict:
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["aois"] = {
        "fix": aoi_section("source_coop", dsm={"source": "copernicus_glo30"}),
        "fixrge": {**aoi_section("gcs"), "dsm": {"source": "rge_alti", "archives": [RGE_ID]}},
    }
    cfg["downloads"] = downloads(url)
    cfg["tiling"] = {**cfg["tiling"], "patch_size": 32, "min_valid_fraction": 0.3}
    cfg["split"] = {**cfg["split"], "method": "blocks", "block_patches": 1, "buffer_px": 1}
    return cfg


def test_download_rules_feed_the_unchanged_pipeline(server, tmp_path):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config(server.url)))
    targets = [
        f"results/{a}/{f}"
        for a in ("fix", "fixrge")
        for f in ("inputs/embeddings.tif", "inputs/dsm.tif", "patches/index.parquet")
    ] + ["results/fixrge/predictions/coarse_dem_seed0.tif"]  # GLO-30 as the no-learning model
    run = snakemake(tmp_path, "--cores", "2", *targets)
    assert run.returncode == 0, (run.stdout[-3000:], run.stderr[-3000:])
    assert "rule fetch_embeddings" in run.stdout + run.stderr
    assert "rule synthesize" not in run.stdout + run.stderr
    for aoi in ("fix", "fixrge"):
        res = tmp_path / "results" / aoi
        with (
            rasterio.open(res / "inputs" / "embeddings.tif") as e,
            rasterio.open(res / "inputs" / "dsm.tif") as d,
        ):
            assert (e.crs, e.transform, e.shape) == (d.crs, d.transform, d.shape)
            assert e.count == 64 and e.dtypes[0] == "int8" and e.nodata == aef.NODATA
            assert d.dtypes[0] == "float32" and d.tags()["vertical_datum"]
            assert aef.valid_mask(e.read()).mean() > 0.8
            assert (d.read(1) != d.nodata).mean() > 0.8
        prov = json.loads((res / "inputs" / "dsm.json").read_text())
        assert {"source", "vertical_datum", "native_resolution"} <= set(prov)
        assert (res / "logs" / "fetch_embeddings.log").exists()
        assert (res / "benchmarks" / "fetch_dsm.tsv").exists()
        assert (res / "patches" / "index.parquet").exists()
        with rasterio.open(res / "inputs" / "coarse_dem.tif") as c:  # GLO-30, for every AOI
            assert (c.crs, c.transform, c.shape) == (d.crs, d.transform, d.shape)
            assert c.tags()["source"] == "copernicus_glo30" and c.tags()["resampling"] == "bilinear"
            note = c.tags()["vertical_datum_conversion"]
        assert note.startswith("none needed" if aoi == "fix" else "not applied"), note
        assert (res / "patches" / "coarse_dem.npy").exists()  # the DEM nets' input
    # the IGN69 reference: PROJ's grid for EGM2008 -> NGF-IGN69 is not installed here
    prov = json.loads((tmp_path / "results" / "fixrge" / "inputs" / "coarse_dem.json").read_text())
    assert (
        "fr_ign" in prov["vertical_datum_conversion"]
        and "IGN69" in prov["reference_vertical_datum"]
    )
    with (
        rasterio.open(tmp_path / "results" / "fixrge" / "inputs" / "coarse_dem.tif") as c,
        rasterio.open(
            tmp_path / "results" / "fixrge" / "predictions" / "coarse_dem_seed0.tif"
        ) as p,
    ):
        ok = p.read(1) != p.nodata
        assert ok.mean() > 0.8 and np.array_equal(c.read(1)[ok], p.read(1)[ok])
    for src in ("source_coop", "gcs"):
        index = tmp_path / "resources" / "aef" / "index" / src / "aef_index.parquet"
        assert index.exists() and Path(f"{index}.sha256").exists()
    again = snakemake(tmp_path, "--cores", "2", *targets)
    assert "Nothing to be done" in again.stdout + again.stderr


def test_a_missing_year_stops_with_a_message_naming_the_aoi(server, tmp_path):
    cfg = config(server.url)
    cfg["aois"] = {"fix": {**aoi_section(), "year": 2031}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    run = snakemake(tmp_path, "--cores", "1", "results/fix/inputs/embeddings.tif")
    assert run.returncode != 0
    log = (tmp_path / "results" / "fix" / "logs" / "fetch_embeddings.log").read_text()
    assert "error: AOI 'fix'" in log and "year 2031" in log
    assert "Traceback" not in log


def test_config_schema_rejects_a_real_aoi_without_its_area(tmp_path):
    cfg = config("http://127.0.0.1:9")
    cfg["aois"] = {"bad": {"source": "source_coop", "year": 2020}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    run = snakemake(tmp_path, "-n")
    assert run.returncode != 0 and "aoi" in (run.stdout + run.stderr)


def _local_pair(tmp_path: Path) -> tuple[Path, Path, Path, tuple[float, ...]]:
    """A tiny synthetic AOI inside the fixture's GLO-30 tiles, as a user would hold it: int8
    codes, the same embeddings as a float export (de-quantized, as Earth Engine writes them),
    and the DSM."""
    from aefheight.core.schema import make
    from aefheight.inputs.synthetic import SyntheticSettings, write_synthetic

    s = make(
        SyntheticSettings,
        **{**helpers.TINY_OVERRIDES["aois"]["tiny"]["synthetic"], "origin": (697000.0, 4990000.0)},
    )
    d = tmp_path / "mine"
    d.mkdir()
    codes, dsm = d / "codes.tif", d / "dsm.tif"
    write_synthetic(s, codes, dsm)
    with rasterio.open(codes) as src:
        prof, values = src.profile, aef.dequantize(src.read())
    prof.update(dtype="float64", nodata=None)
    with rasterio.open(d / "export.tif", "w", **prof) as dst:
        dst.write(values.astype(np.float64))
    x0, y0 = s.origin
    bbox = (x0, y0 - s.height * s.pixel_size, x0 + s.width * s.pixel_size, y0)
    return codes, d / "export.tif", dsm, bbox


def test_local_int8_codes_and_their_float_export_give_identical_metrics(server, tmp_path):
    codes, export, dsm, bbox = _local_pair(tmp_path)
    cfg = helpers.tiny_config()
    area = {"bbox": list(bbox), "crs": "EPSG:32630", "target_crs": "EPSG:32630"}
    local_dsm = {"source": "local", "path": str(dsm), "vertical_datum": "EGM2008"}
    cfg["aois"] = {
        name: {"source": "local", "year": 2020, "aoi": area, "dsm": local_dsm,
               "embeddings": {"path": str(path)}}
        for name, path in (("codes", codes), ("floats", export))
    }  # fmt: skip
    cfg["downloads"] = downloads(server.url)  # GLO-30, the coarse DEM
    cfg["models"] = {k: cfg["models"][k] for k in ("unet", "ridge_ctx")}
    cfg["seeds"] = [0]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    targets = [
        f"results/{a}/metrics/per_model/{m}_seed0.csv"
        for a in ("codes", "floats")
        for m in ("unet", "ridge_ctx")
    ]
    run = snakemake(tmp_path, "--cores", "2", *targets)
    assert run.returncode == 0, (run.stdout[-3000:], run.stderr[-3000:])
    res = tmp_path / "results"
    with rasterio.open(res / "codes/inputs/embeddings.tif") as a:
        assert a.dtypes[0] == "int8" and a.tags()["EMBEDDING_PRODUCT"] == "aef"
    with rasterio.open(res / "floats/inputs/embeddings.tif") as b:
        assert b.dtypes[0] == "float32" and b.tags()["EMBEDDING_PRODUCT"] == "aef"
    for m in ("unet", "ridge_ctx"):
        a, b = (
            pd.read_csv(res / aoi / "metrics/per_model" / f"{m}_seed0.csv")
            for aoi in ("codes", "floats")
        )
        assert len(a) >= 3 and a["r2"].notna().all()
        pd.testing.assert_frame_equal(a, b)  # identical, not close

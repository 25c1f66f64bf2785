"""Guards before any job, through the real entry points: one line, nothing under results/.

A real AOI whose local DSM is built by code: its size against ``limits.max_aoi_km2`` and the
free disk, the DSM's coverage and fill values, broken YAML, an unknown EPSG code; and a step
killed mid-write leaves no partial file.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import helpers
import numpy as np
import pytest
import rasterio
import yaml
from aefheight import config, guards
from aefheight.core.errors import AOIOutsideCoverage, SuspiciousValues
from aefheight.core.raster import build_vrt
from aefheight.guards import free_bytes
from aefheight.inputs.sources.aoi import target_grid
from aefheight.inputs.sources.coregister import coregister
from aefheight.inputs.sources.spec import AOISpec, DSMSource
from rasterio.crs import CRS

UTM_AOI = {"bbox": [500000, 4990000, 510000, 5000000], "crs": "EPSG:32630"}  # 10 x 10 km


def _local_dsm(path, data, res=10.0, **profile):
    """A one-band DSM on a UTM 30N grid whose upper-left corner is the AOI's."""
    return helpers.write_tif(path, data[None], res=res, **profile)


def _config(tmp_path, aoi=UTM_AOI, **dsm):
    cfg = helpers.tiny_config()
    dsm_path = tmp_path / "dsm_in.tif"
    cfg["aois"] = {
        "real": {
            "source": "source_coop",
            "year": 2023,
            "aoi": aoi,
            "dsm": {"source": "local", "path": str(dsm_path), **dsm},
        }
    }
    cfg["downloads"] = {"source_coop_url": "http://127.0.0.1:9/none"}  # never reached
    return cfg, dsm_path


def _refused(tmp_path, cfg):
    """Run snakemake on ``cfg``; it must fail before any job. Returns its stderr."""
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    run = helpers.snakemake(tmp_path, "--cores", "1", check=False, timeout=300)
    assert run.returncode != 0, run.stdout[-2000:]
    assert not (tmp_path / "results").exists(), sorted((tmp_path / "results").rglob("*"))
    assert "ERROR 1" not in run.stderr  # no raw GDAL/PROJ line ahead of ours
    return run.stderr


def _accepted(tmp_path, cfg):
    """A dry run of ``cfg`` plans without a word of refusal."""
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    run = helpers.snakemake(tmp_path, "-n", check=False, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]


def _checks_pass(cfg):
    """The checks before any job accept ``cfg`` (in process: the function common.smk runs)."""
    assert [p.name for p in guards.check_run(_filled(cfg))] == list(cfg["aois"])


def _km2(text, pattern):
    hit = re.search(pattern, text)
    assert hit, text
    return float(hit[1].replace(",", ""))


def ellipsoid_quadrangle_km2(lon0, lat0, lon1, lat1):
    """Closed-form area of a lon/lat quadrangle on WGS 84 (authalic latitude), in km²."""
    a, f = 6378137.0, 1 / 298.257223563
    e2 = f * (2 - f)
    e, b2 = math.sqrt(e2), (a * (1 - f)) ** 2

    def zone(lat):
        s = math.sin(math.radians(lat))
        return s / (2 * (1 - e2 * s * s)) + math.log((1 + e * s) / (1 - e * s)) / (4 * e)

    return b2 * math.radians(lon1 - lon0) * (zone(lat1) - zone(lat0)) / 1e6


def test_a_degree_bbox_far_from_the_equator_has_its_geodesic_area():
    bbox = (-10.0, 55.0, 30.0, 70.0)  # 40 degrees of longitude in one UTM zone's plane
    aoi = target_grid("north", AOISpec(None, None, bbox, "EPSG:4326", None, 10.0, True))
    truth = ellipsoid_quadrangle_km2(*bbox)
    assert aoi.area_km2 == pytest.approx(truth, rel=1e-5)
    assert abs(aoi.polygon.area / 1e6 / truth - 1) > 5e-3  # the UTM area logged before
    assert _km2(aoi.describe(), r"\(([\d,]+) km²") == pytest.approx(truth, abs=1)


def test_an_aoi_far_larger_than_its_dsm_is_refused_before_any_job(tmp_path):
    cfg, dsm = _config(tmp_path, aoi={"bbox": [-10.0, 55.0, 30.0, 70.0], "crs": "EPSG:4326"})
    _local_dsm(dsm, np.ones((100, 100), np.float32), nodata=-9999)
    err = _refused(tmp_path, cfg)
    km2 = ellipsoid_quadrangle_km2(-10.0, 55.0, 30.0, 70.0)
    assert _km2(err, r"AOI 'real': ([\d,]+) km²") == pytest.approx(km2, abs=1)
    assert "larger than limits.max_aoi_km2 (20,000 km²)" in err and " px;" in err
    assert "largest output" in err and "free at" in err

    cfg["limits"] = {"max_aoi_km2": None}  # no cap, a DSM covering it: the disk refuses it
    cfg["seeds"] = list(range(20))  # ~24 TB of outputs
    lonlat = rasterio.transform.from_origin(-10.0, 70.0, 0.1, 0.1)
    helpers.write_tif(dsm, np.ones((1, 150, 400), np.float32), "EPSG:4326", transform=lonlat)
    if free_bytes(tmp_path) > guards.plan(_filled(cfg), "real").total:
        pytest.skip("this disk holds even that")
    err = _refused(tmp_path, cfg)
    assert "not enough disk (an uncompressed estimate)" in err and "all outputs up to" in err
    assert "limits.check_free_disk: false" in err
    _accepted(tmp_path, cfg)  # a dry run writes nothing: planned, not refused


def _filled(cfg):
    cfg = copy.deepcopy(cfg)
    config.fill_defaults(cfg)
    return cfg


def test_a_local_dsm_covering_little_of_the_aoi_is_refused(tmp_path):
    cfg, dsm = _config(tmp_path)
    _local_dsm(dsm, np.ones((200, 200), np.float32), nodata=-9999)  # 2 x 2 km of 10 x 10
    err = _refused(tmp_path, cfg)
    assert "covers 4.0% of AOI 'real'" in err and "aois.real.dsm.min_covered_fraction" in err
    cfg["aois"]["real"]["dsm"]["min_covered_fraction"] = 0.03  # a coastline: stated, accepted
    _checks_pass(cfg)


def test_a_vrt_s_missing_tiles_count_as_uncovered(tmp_path):
    """A VRT of two of the four 1 km tiles of a 2 x 2 km AOI: its extent covers the AOI, its
    tiles half of it."""
    cfg, _ = _config(
        tmp_path, aoi={"bbox": [500000, 4998000, 502000, 5000000], "crs": "EPSG:32630"}
    )
    tiles = []
    for x, y in [(500000, 5000000), (501000, 4999000)]:
        origin = rasterio.transform.from_origin(x, y, 10.0, 10.0)
        data = np.ones((1, 100, 100), np.float32)
        tiles.append(
            helpers.write_tif(tmp_path / f"t{x}.tif", data, nodata=-9999, transform=origin)
        )
    vrt = build_vrt(tiles, tmp_path / "mosaic.vrt", CRS.from_epsg(32630), None)
    cfg["aois"]["real"]["dsm"]["path"] = str(vrt)
    with pytest.raises(AOIOutsideCoverage, match=r"mosaic.vrt covers 50\.0% of AOI 'real'"):
        guards.check_local_dsm("real", _filled(cfg)["aois"]["real"])


def test_an_integer_dsm_hiding_holes_behind_zero_is_named(tmp_path):
    cfg, dsm = _config(tmp_path)
    z = np.full((1000, 1000), 120, np.int16)
    z[:, :167] = 0  # a sixth of the AOI: holes written as 0, no nodata declared
    _local_dsm(dsm, z)
    err = _refused(tmp_path, cfg)
    assert "16.7% of its pixels are 0 and it declares no nodata" in err
    assert "set aois.real.dsm.nodata: 0" in err
    cfg["aois"]["real"]["dsm"]["nodata"] = 0
    _checks_pass(cfg)


def test_any_integer_source_without_nodata_is_checked_when_co_registered(tmp_path):
    """The coarse DEM and every DSM product pass through coregister: a type maximum on a
    large share of an integer source without nodata stops it, before anything is written."""
    z = np.full((300, 300), 80, np.uint16)
    z[200:] = 65535
    src = DSMSource("copernicus_glo30", "GLO-30", [_local_dsm(tmp_path / "c.tif", z)], "", "")
    spec = AOISpec(None, None, tuple(UTM_AOI["bbox"]), "EPSG:32630", None, 10.0, True)
    aoi = target_grid("real", spec)
    with pytest.raises(SuspiciousValues, match=r"33\.\d% of its pixels are 65535"):
        coregister(aoi, src, tmp_path / "out" / "coarse_dem.tif", tmp_path / "vrt")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_broken_config_file_is_named_with_its_line_and_column(tmp_path):
    bad = tmp_path / "config" / "config.yaml"
    bad.parent.mkdir()
    bad.write_text("seeds: [0, 1\nmodels:\n  unet: {arch: unet}\n")
    guard = subprocess.run(
        [sys.executable, "-m", "aefheight.config", str(bad)], capture_output=True, text=True
    )  # what `make study` runs first
    assert guard.returncode == 2
    assert guard.stderr.strip().startswith(f"aefheight: error: {bad}:2:")
    assert len(guard.stderr.strip().splitlines()) == 1
    # the Snakefile's own default config file (snakemake without --configfile)
    snakefile = str(helpers.REPO / "workflow" / "Snakefile")
    exe = shutil.which("snakemake", path=os.path.dirname(sys.executable)) or "snakemake"
    cmd = [exe, "--snakefile", snakefile, "--directory", str(tmp_path), "-n"]
    run = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)
    out = run.stdout + run.stderr
    assert run.returncode != 0 and "config/config.yaml:2:7: not valid YAML" in out, out
    assert not (tmp_path / "results").exists()


def test_an_unknown_epsg_code_is_one_line_without_proj_s_own(tmp_path):
    cfg, dsm = _config(tmp_path, aoi={**UTM_AOI, "target_crs": "EPSG:99999"})
    _local_dsm(dsm, np.ones((1000, 1000), np.float32), nodata=-9999)
    err = _refused(tmp_path, cfg)
    assert "aois.real.aoi.target_crs 'EPSG:99999' is not a CRS PROJ knows" in err
    assert "PROJ: internal_proj_create_from_database" not in err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_step_killed_mid_write_leaves_no_partial_file(tmp_path, sig):
    """fetch-dsm onto a 100 x 100 km grid (1e8 px, ~10 s), killed once its scratch file exists."""
    aoi = {"bbox": [500000, 4900000, 600000, 5000000], "crs": "EPSG:32630"}
    cfg, dsm = _config(tmp_path, aoi=aoi)
    rng = np.random.default_rng(0)
    _local_dsm(dsm, rng.normal(100, 20, (1000, 1000)).astype(np.float32), res=100.0, nodata=-9999)
    out = tmp_path / "results" / "inputs" / "dsm.tif"
    out.parent.mkdir(parents=True)
    log = (tmp_path / "step.log").open("w")
    step = subprocess.Popen(
        [sys.executable, "-m", "aefheight", "fetch-dsm", "--aoi", "real",
         "--settings", json.dumps(cfg["aois"]["real"]), "--downloads", "{}",
         "--cache-dir", str(tmp_path / "cache"), "--dsm", str(out),
         "--provenance", str(out.with_suffix(".json"))],
        env={**os.environ, "PYTHONPATH": str(helpers.REPO / "workflow")},
        stdout=log, stderr=log,
        # Ctrl-C's default, also when the suite runs in a background job (SIGINT ignored there)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not list(out.parent.glob(".dsm.tif.*")):  # the write has begun
            assert step.poll() is None, (tmp_path / "step.log").read_text()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert step.poll() is None  # still writing
        step.send_signal(sig)
        assert step.wait(timeout=120) == 128 + sig, (tmp_path / "step.log").read_text()
    finally:
        step.kill()
        log.close()
    assert sorted(p.name for p in out.parent.iterdir()) == []  # no scratch, no output


def test_a_validation_band_too_small_for_the_intervals_is_refused_before_any_job(tmp_path):
    cfg = helpers.tiny_config()  # 384 x 256 px: a validation band of at most 9,830 px
    cfg["intervals"] = {"height_bins": 5, "min_calibration_px": 2000}
    err = _refused(tmp_path, cfg)
    assert "aois.tiny: its validation band holds at most 9,830 px" in err
    assert "10,000" in err and "split.fractions.val" in err
    cfg["intervals"] = {"height_bins": 4, "min_calibration_px": 2000}  # 8,000: may fit
    _checks_pass(cfg)


def test_local_embeddings_of_another_band_count_are_refused_before_any_job(tmp_path):
    cfg, dsm = _config(tmp_path)
    _local_dsm(dsm, np.ones((1000, 1000), np.float32), nodata=-9999)
    emb = helpers.write_tif(tmp_path / "emb.tif", np.zeros((32, 1000, 1000), np.int8), nodata=-128)
    cfg["aois"]["real"] |= {"source": "local", "embeddings": {"path": str(emb)}}
    err = _refused(tmp_path, cfg)
    assert "aois.real.embeddings.path" in err and "has 32 bands; aef embeddings have 64" in err
    cfg["aois"]["real"]["embeddings"]["product"] = "generic"  # 32 int8 bands: AEF's formula
    cfg["aois"]["real"]["embeddings"]["dequantization"] = "aef"
    guards.check_local_embeddings("real", _filled(cfg)["aois"]["real"], guards.real_aoi(
        "real", _filled(cfg)["aois"]["real"]))  # fmt: skip

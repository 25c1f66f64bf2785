"""AEF embeddings from the fixture server: values, orientation, mosaics, faults, resume."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import rasterio
from aefheight.core import aef
from aefheight.core.errors import AOIOutsideCoverage, DownloadError, MissingTile, YearNotAvailable
from aefheight.core.schema import from_mapping
from aefheight.inputs.sources import steps
from aefheight.inputs.sources.aef_index import load_index, select_tiles
from aefheight.inputs.sources.aoi import target_grid
from aefheight.inputs.sources.spec import AOISpec
from affine import Affine
from fixture_server import serve
from fixture_world import SC_PREFIX, TILES, aoi_section, downloads
from rasterio.enums import Resampling
from rasterio.warp import reproject


def fetch(server, cache: Path, out: Path, source="source_coop", threads=2, dl=None, **aoi_kw):
    """Index + embeddings through the step functions (what the CLI runs)."""
    d = downloads(server.url, **(dl or {}))
    index = cache / "aef" / "index" / source / "aef_index.parquet"
    if source != "earthengine":
        steps.run_index(source, d, index)
    return steps.run_embeddings(
        "fix",
        aoi_section(source, **aoi_kw),
        d,
        out,
        cache / "aef" / "blocks",
        index if source != "earthengine" else None,
        threads=threads,
    )


def expected(world, out_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The output the fixture's truth implies, built without the library's read path.

    A and B (zone 30N, the target zone) map onto the grid by index arithmetic; C (zone 31N)
    by an independent nearest-neighbour reprojection of its north-up truth, only where A and
    B have no tile. Returns (codes, inside-AOI mask).
    """
    with rasterio.open(out_path) as ds:
        t, shape, crs = ds.transform, (ds.height, ds.width), ds.crs
    a, b, c = (world.tile(x) for x in "abc")
    exp = np.full((aef.BANDS, *shape), aef.NODATA, np.int8)
    ab = np.concatenate([world.truth[a.name], world.truth[b.name]], axis=1)  # A over B
    r0 = round((a.bounds[3] - t.f) / 10)
    c0 = round((t.c - a.left) / 10)
    rows = np.arange(shape[0]) + r0
    cols = np.arange(shape[1]) + c0
    in_ab = ((rows >= 0) & (rows < ab.shape[1]))[:, None] & ((cols >= 0) & (cols < a.width))
    rr, cc = np.nonzero(in_ab)
    exp[:, rr, cc] = ab[:, rows[rr], cols[cc]]
    from_c = np.full_like(exp, aef.NODATA)
    reproject(
        world.truth[c.name],
        from_c,
        src_transform=c.north_up_transform,
        src_crs=c.crs,
        dst_transform=t,
        dst_crs=crs,
        src_nodata=aef.NODATA,
        dst_nodata=aef.NODATA,
        resampling=Resampling.nearest,
    )
    exp[:, ~in_ab] = from_c[:, ~in_ab]
    aoi = target_grid("fix", from_mapping(AOISpec, aoi_section()["aoi"], "aoi"))
    inside = aoi.inside(t, shape)
    exp[:, ~inside] = aef.NODATA
    return exp, inside


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read()


def test_values_and_orientation_match_the_truth_pixel_for_pixel(server, world, cache, tmp_path):
    out = tmp_path / "embeddings.tif"
    info = fetch(server, cache, out)
    got = read(out)
    exp, _ = expected(world, out)
    np.testing.assert_array_equal(got, exp)
    # de-quantized values equal the truth's de-quantized values (NaN where nodata)
    np.testing.assert_array_equal(aef.dequantize(got), aef.dequantize(exp))
    # the bottom-up storage was handled: the A tile's nodata square sits where the truth has it
    a = world.tile("a")
    with rasterio.open(out) as ds:
        row, col = ds.index(a.left + 10 * 92 + 5, a.bounds[3] - 10 * 62 - 5)
        assert ds.crs.to_epsg() == 32630 and ds.nodata == aef.NODATA
        assert ds.dtypes[0] == "int8" and ds.count == 64
        assert ds.descriptions[0] == "A00" and ds.tags()["year"] == "2020"
    assert (got[:, row, col] == aef.NODATA).all()
    assert info["tiles"] and {t.split("/")[1] for t in info["tiles"]} == {"30N", "31N"}


def test_two_zones_and_two_tiles_mosaic_without_seams_or_gaps(server, world, cache, tmp_path):
    out = tmp_path / "embeddings.tif"
    fetch(server, cache, out, threads=1)
    got = read(out)
    exp, inside = expected(world, out)
    valid = aef.valid_mask(got)
    hole = ~aef.valid_mask(exp) & inside  # only the fixture's own nodata square
    assert hole.sum() == 36
    assert (valid | ~inside | hole).all(), "gap inside the AOI"
    assert not valid[~inside].any()
    with rasterio.open(out) as ds:
        # the A/B tile edge (y = 4,987,300) and the zone-30N tile edge (x = 736,600) are in
        r_edge, _ = ds.index(736000, 4987300 + 5)
        _, c_edge = ds.index(736600 - 5, 4987500)
    for r in (r_edge, r_edge + 1):
        np.testing.assert_array_equal(got[:, r][:, inside[r]], exp[:, r][:, inside[r]])
    for c in (c_edge, c_edge + 1):
        np.testing.assert_array_equal(got[:, :, c][:, inside[:, c]], exp[:, :, c][:, inside[:, c]])


def test_500s_and_dropped_connections_are_survived(server, world, cache, tmp_path):
    a, c = world.tile("a"), world.tile("c")
    server.inject(f"/{SC_PREFIX}/aef_index.parquet", ["500", "truncate"])
    server.inject(f"/{SC_PREFIX}/2020/30N/{a.name}.tiff", ["500", "drop", "503", "500"])
    server.inject(f"/{SC_PREFIX}/2020/31N/{c.name}.tiff", ["drop", "500", "drop"])
    out = tmp_path / "embeddings.tif"
    fetch(server, cache, out, threads=2)
    exp, _ = expected(world, out)
    np.testing.assert_array_equal(read(out), exp)
    statuses = [r.status for r in server.log]
    assert statuses.count("drop") == 3 and statuses.count(500) >= 3 and "truncate" in statuses
    assert not any(server.faults.values()), "every injected fault was hit"


@pytest.mark.parametrize("kind", ["500", "drop"])
def test_cli_download_finishes_against_a_server_failing_every_second_request(
    server, world, cache, tmp_path, kind
):
    """The rule's entry point (`python -m aefheight fetch-embeddings`) with its threads."""
    import json
    import os
    import subprocess

    d = downloads(server.url)
    index = cache / "aef" / "index" / "source_coop" / "aef_index.parquet"
    steps.run_index("source_coop", d, index)
    server.clear()  # count the download's requests only
    server.fail_every(2, kind)
    out = tmp_path / "embeddings.tif"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("GDAL_NUM_THREADS", None)
    cmd = [sys.executable, "-m", "aefheight", "fetch-embeddings", "--aoi", "fix"]
    cmd += ["--settings", json.dumps(aoi_section("source_coop")), "--downloads", json.dumps(d)]
    cmd += ["--index", str(index), "--cache-dir", str(cache / "aef" / "blocks")]
    cmd += ["--embeddings", str(out), "--provenance", str(tmp_path / "embeddings.json")]
    cmd += ["--threads", "4"]  # the fetch_embeddings rule's threads
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    exp, _ = expected(world, out)
    np.testing.assert_array_equal(read(out), exp)
    statuses = [r.status for r in server.log]
    failed = statuses.count(int(kind) if kind.isdigit() else kind)
    # the steady rate: one request in two (a fault due on a just-failed retry moves on)
    assert failed >= len(statuses) / 2 - 2 and failed >= 5, statuses
    summary = proc.stderr.strip().splitlines()[-1]
    assert "remote reads" in summary and "requests retried by GDAL" in summary, summary
    # each failed request was retried alone; none cost a whole window again (GDAL's threaded
    # reads, GDAL_NUM_THREADS > 1, do not retry a request: then windows are retried whole)
    assert "(0 retried whole)" in summary, summary


def test_interrupted_download_resumes_from_cached_blocks(world, cache, tmp_path):
    out = tmp_path / "embeddings.tif"
    c = world.tile("c")
    with serve(world.root) as srv:  # first run: tile C is gone, blocks needing it fail
        srv.missing.add(f"/{SC_PREFIX}/2020/31N/{c.name}.tiff")
        with pytest.raises(MissingTile, match=rf"AOI 'fix'.*{c.name}.*missing"):
            fetch(srv, cache, out, threads=1)
    cached = list((cache / "aef" / "blocks" / "fix").rglob("r*_c*.tif"))
    assert cached and not out.exists()
    with serve(world.root) as srv:  # second run (a new process would see a new URL cache)
        info = fetch(srv, cache, out, threads=1)
        assert not srv.requests("aef_index.parquet")  # the index is cached, checksum verified
    assert info["blocks_cached"] == len(cached)
    assert info["blocks_fetched"] == info["blocks"] - len(cached)
    exp, _ = expected(world, out)
    np.testing.assert_array_equal(read(out), exp)
    assert not list((cache / "aef" / "blocks" / "fix").rglob("*.tif")), "cache removed when done"


def test_gcs_layout_through_vsigs(server, world, cache, tmp_path):
    out = tmp_path / "embeddings.tif"
    fetch(server, cache, out, source="gcs")
    exp, _ = expected(world, out)
    np.testing.assert_array_equal(read(out), exp)
    assert server.requests("/alphaearth_foundations/satellite_embedding/v1/annual/2020/")


def test_year_not_available_names_the_aoi_and_the_years(server, cache, tmp_path):
    with pytest.raises(YearNotAvailable, match=r"AOI .fix.*year 2031.*available: 2020, 2021"):
        fetch(server, cache, tmp_path / "e.tif", year=2031)


def test_aoi_outside_coverage_names_the_aoi(server, cache, tmp_path):
    d = downloads(server.url)
    index = cache / "index.parquet"
    steps.run_index("source_coop", d, index)
    far = {**aoi_section(), "aoi": {"bbox": [10.0, 50.0, 10.01, 50.01]}}
    with pytest.raises(AOIOutsideCoverage, match=r"AOI 'far'.*outside the AEF coverage of 2020"):
        steps.run_embeddings("far", far, d, tmp_path / "e.tif", cache, index)
    partly = {**aoi_section(), "aoi": {"bbox": [-0.009, 44.996, 0.02, 45.004]}}
    with pytest.raises(AOIOutsideCoverage, match=r"AOI 'partly'.*% of it lies outside"):
        steps.run_embeddings("partly", partly, d, tmp_path / "e.tif", cache, index)
    partly["allow_partial_coverage"] = True
    info = steps.run_embeddings("partly", partly, d, tmp_path / "e.tif", cache, index)
    assert 0.2 < info["valid_fraction"] < 0.95


def test_corrupt_cached_index_is_refused(server, cache):
    d = downloads(server.url)
    index = cache / "index.parquet"
    steps.run_index("source_coop", d, index)
    df = load_index(index)
    assert set(df["year"]) == {2020, 2021} and len(df) == len(TILES)
    index.write_bytes(index.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(DownloadError, match="does not match its recorded checksum"):
        load_index(index)


def test_select_tiles_uses_the_index_bounds(server, cache):
    d = downloads(server.url)
    steps.run_index("source_coop", d, cache / "i.parquet")
    aoi = target_grid("fix", from_mapping(AOISpec, aoi_section()["aoi"], "aoi"))
    tiles = select_tiles(load_index(cache / "i.parquet"), aoi, 2020)
    assert sorted(t.key.split("/")[2][:2] for t in tiles) == ["xa", "xb", "xc"]


class FakeEE(types.ModuleType):
    """The slice of earthengine-api the earthengine source uses, answering from the truth.

    ``computePixels`` serves nearest-neighbour codes of the zone-30N truth (tiles A and B) on
    the requested grid, as Earth Engine would after the server-side quantization.
    """

    def __init__(self, world, calls):
        super().__init__("ee")
        self.world, self.calls = world, calls
        ee = self

        class Img:
            def __getattr__(self, name):
                return lambda *a, **k: self

            def size(self):
                return types.SimpleNamespace(getInfo=lambda: 2)

        self.Initialize = lambda credentials=None, project=None: calls.append(("init", project))
        self.ImageCollection = lambda name: calls.append(("collection", name)) or Img()
        self.Geometry = types.SimpleNamespace(Rectangle=lambda *a, **k: ("rect", a))

        def compute_pixels(req):
            g = req["grid"]
            calls.append(("computePixels", g["dimensions"]["width"], g["dimensions"]["height"]))
            a_ = g["affineTransform"]
            t = Affine(
                a_["scaleX"],
                a_["shearX"],
                a_["translateX"],
                a_["shearY"],
                a_["scaleY"],
                a_["translateY"],
            )
            h, w = g["dimensions"]["height"], g["dimensions"]["width"]
            a, b = (ee.world.tile(x) for x in "ab")
            ab = np.concatenate([ee.world.truth[a.name], ee.world.truth[b.name]], axis=1)
            dst = np.full((aef.BANDS, h, w), aef.NODATA, np.int8)
            reproject(
                ab,
                dst,
                src_transform=a.north_up_transform,
                src_crs=a.crs,
                dst_transform=t,
                dst_crs=g["crsCode"],
                src_nodata=aef.NODATA,
                dst_nodata=aef.NODATA,
                resampling=Resampling.nearest,
            )
            out = np.zeros((h, w), dtype=[(n, "i1") for n in aef.BAND_NAMES])
            for i, n in enumerate(aef.BAND_NAMES):
                out[n] = dst[i]
            return out

        self.data = types.SimpleNamespace(computePixels=compute_pixels)


def test_earthengine_source_with_a_fake_client(world, cache, tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setitem(sys.modules, "ee", FakeEE(world, calls))
    monkeypatch.setenv("EE_PROJECT", "my-project")
    out = tmp_path / "embeddings.tif"
    sec = {
        **aoi_section("earthengine"),
        "aoi": {"bbox": [-0.009, 44.996, -0.002, 45.004]},
    }  # inside A and B only
    info = steps.run_embeddings("fix", sec, downloads("http://127.0.0.1:9"), out, cache / "blocks")
    assert ("init", "my-project") in calls
    assert ("collection", "GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL") in calls
    got = read(out)
    with rasterio.open(out) as ds:
        t = ds.transform
    a = world.tile("a")
    ab = np.concatenate([world.truth[a.name], world.truth[world.tile("b").name]], axis=1)
    r0, c0 = round((a.bounds[3] - t.f) / 10), round((t.c - a.left) / 10)
    ok = aef.valid_mask(got)
    rr, cc = np.nonzero(ok)
    np.testing.assert_array_equal(got[:, rr, cc], ab[:, rr + r0, cc + c0])
    assert info["source"] == "earthengine" and ok.mean() > 0.8

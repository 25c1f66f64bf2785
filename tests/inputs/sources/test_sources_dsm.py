"""Reference DSM sources from the fixture server, co-registered onto the embedding grid."""

from __future__ import annotations

import types

import numpy as np
import pytest
import rasterio
from aefheight.core.errors import ConfigError, MissingTile
from aefheight.inputs.sources import steps
from aefheight.inputs.sources.dsm import (
    Archive,
    copernicus_tile_name,
    copernicus_tiles_for,
    rge_alti_tile_keys,
)
from affine import Affine
from fixture_server import serve
from fixture_world import (
    RGE_HOLE,
    RGE_ID,
    aoi_section,
    cop_height,
    cop_name,
    downloads,
    rge_height,
)
from pyproj import Transformer

RGE = {"source": "rge_alti", "archives": [RGE_ID]}


def centres(path):
    """(values, x, y, crs, meta) of a single-band raster's pixel centres (meta: nodata, tags)."""
    with rasterio.open(path) as ds:
        z = ds.read(1)
        x, y = pixel_centres(ds.transform, ds.height, ds.width)
        tags = ds.tags()
        meta = types.SimpleNamespace(nodata=ds.nodata, tags=lambda: tags)
        return z, x, y, ds.crs, meta


def pixel_centres(t: Affine, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """x, y of every pixel centre of a north-up grid."""
    rows, cols = np.mgrid[0:height, 0:width]
    return t.c + (cols + 0.5) * t.a, t.f + (rows + 0.5) * t.e


def run(server, cache, out, dsm=None, name="fix", aoi=None, **dl):
    sec = aoi_section(dsm=dsm)
    if aoi is not None:
        sec["aoi"] = aoi
    return steps.run_dsm(name, sec, downloads(server.url, **dl), out, cache / "dsm")


def test_tile_names_follow_the_published_scheme():
    assert copernicus_tile_name(45, -1) == "Copernicus_DSM_COG_10_N45_00_W001_00_DEM"
    assert copernicus_tile_name(-3, 120) == "Copernicus_DSM_COG_10_S03_00_E120_00_DEM"
    assert sorted(copernicus_tiles_for((-0.5, 44.5, 0.5, 45.5))) == [
        (44, -1),
        (44, 0),
        (45, -1),
        (45, 0),
    ]
    assert copernicus_tiles_for((0.2, 45.0, 0.8, 45.9)) == [(45, 0)]
    a = Archive.parse(RGE_ID, "dsm")
    assert (a.res_m, a.crs, a.departement, a.tile_m) == (5, "EPSG:2154", "033", 5000)
    assert "IGN69" in a.datum
    # pixel-is-point: the 0980_6730 tile spans x 979997.5-984997.5, y 6725002.5-6730002.5
    assert rge_alti_tile_keys((979998, 6725003, 984997, 6730002), 5000, 5) == ["0980_6730"]
    assert rge_alti_tile_keys((984998, 6725003, 984999, 6725004), 5000, 5) == ["0985_6730"]
    with pytest.raises(ConfigError, match="not an RGE ALTI archive id"):
        Archive.parse("RGEALTI_D033.7z", "dsm")


def test_copernicus_is_bilinear_on_the_grid_with_its_datum(server, cache, tmp_path):
    out = tmp_path / "dsm.tif"
    info = run(server, cache, out)
    z, x, y, crs, ds = centres(out)
    lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(x, y)
    ok = z != ds.nodata
    assert ok.mean() > 0.9
    np.testing.assert_allclose(z[ok], cop_height(lon[ok], lat[ok]), atol=0.02)
    tags = ds.tags()
    assert tags["source"] == "copernicus_glo30" and "EGM2008" in tags["vertical_datum"]
    assert tags["resampling"] == "bilinear" and tags["resolution_m"] == "10"
    assert info["native_resolution"].startswith("1 arc-second")
    with rasterio.open(out) as d:
        assert d.dtypes[0] == "float32" and d.nodata == -9999.0 and d.crs.to_epsg() == 32630


def test_same_grid_as_the_embeddings(server, cache, tmp_path):
    d = downloads(server.url)
    steps.run_index("source_coop", d, cache / "i.parquet")
    steps.run_embeddings("fix", aoi_section(), d, tmp_path / "e.tif", cache, cache / "i.parquet")
    run(server, cache, tmp_path / "dsm.tif")
    with rasterio.open(tmp_path / "e.tif") as e, rasterio.open(tmp_path / "dsm.tif") as m:
        assert (e.crs, e.transform, e.shape) == (m.crs, m.transform, m.shape)


def test_sea_tiles_are_nodata_not_an_error(world, cache, tmp_path):
    with serve(world.root) as srv:
        out = tmp_path / "dsm.tif"
        info = steps.run_dsm(
            "fix",
            aoi_section(),
            {**downloads(srv.url), "copernicus_glo30_url": f"{srv.url}/copernicus_sea"},
            out,
            cache / "dsm",
        )
        assert not srv.requests(cop_name(44, 0))  # not listed: never requested
    assert cop_name(44, 0) in info["details"]["sea_tiles"]
    z, *_, ds = centres(out)
    assert 0.2 < (z != ds.nodata).mean() < 0.95


def test_missing_copernicus_tile_stops_naming_aoi_and_tile(server, cache, tmp_path):
    name = cop_name(44, 0)
    server.missing.add(f"/copernicus/{name}/{name}.tif")
    with pytest.raises(MissingTile, match=rf"AOI 'fix'.*{name}"):
        run(server, cache, tmp_path / "dsm.tif")
    info = run(
        server,
        cache,
        tmp_path / "dsm.tif",
        dsm={"source": "copernicus_glo30", "missing_tiles": "nodata"},
    )
    assert info["details"]["missing_tiles"] == [name]


def test_rge_alti_averages_5m_onto_10m_and_keeps_nodata(server, cache, tmp_path):
    out = tmp_path / "dsm.tif"
    info = run(server, cache, out, dsm=RGE)
    z, x, y, crs, ds = centres(out)
    ex, ey = Transformer.from_crs(crs, "EPSG:2154", always_xy=True).transform(x, y)
    ok = z != ds.nodata
    np.testing.assert_allclose(z[ok], rge_height(ex[ok], ey[ok]), atol=0.05)
    # target pixels whose centre lies well inside the fixture's nodata hole are nodata
    x0, y0 = 460000 - 2.5 + 5 * RGE_HOLE[1].start, 6440002.5 - 5 * RGE_HOLE[0].start
    x1, y1 = 460000 - 2.5 + 5 * RGE_HOLE[1].stop, 6440002.5 - 5 * RGE_HOLE[0].stop
    deep = (ex > x0 + 10) & (ex < x1 - 10) & (ey < y0 - 10) & (ey > y1 + 10)
    assert deep.sum() > 4 and not ok[deep].any()
    tags = ds.tags()
    assert tags["resampling"] == "average" and "NGF-IGN69" in tags["vertical_datum"]
    assert tags["native_resolution"] == "5 m" and info["details"]["tiles"] == ["0460_6440"]


def test_rge_alti_across_two_tiles_is_seamless(server, cache, tmp_path):
    out = tmp_path / "dsm.tif"
    aoi = {"bbox": [464000, 6437000, 466000, 6438000], "crs": "EPSG:2154"}
    info = run(server, cache, out, dsm=RGE, name="edge", aoi=aoi)
    assert info["details"]["tiles"] == ["0460_6440", "0465_6440"]
    z, x, y, crs, ds = centres(out)
    ex, ey = Transformer.from_crs(crs, "EPSG:2154", always_xy=True).transform(x, y)
    ok = z != ds.nodata
    inside = (ex > 464010) & (ex < 465990) & (ey > 6437010) & (ey < 6437990)
    assert ok[inside].all()
    np.testing.assert_allclose(z[ok], rge_height(ex[ok], ey[ok]), atol=0.05)


def test_missing_rge_alti_tile_stops_naming_aoi_tile_and_archives(server, cache, tmp_path):
    aoi = {"bbox": [464000, 6437000, 471000, 6438000], "crs": "EPSG:2154"}
    with pytest.raises(MissingTile, match=rf"AOI 'wide'.*RGEALTI_FXX_0470_6440.*{RGE_ID}"):
        run(server, cache, tmp_path / "dsm.tif", dsm=RGE, name="wide", aoi=aoi)


def test_dsm_downloads_resume_and_are_not_fetched_again(world, cache, tmp_path):
    archive = f"/rgealti/{RGE_ID}/{RGE_ID}.7z"
    with serve(world.root) as srv:
        srv.inject(archive, ["truncate"])  # the connection drops half-way through
        run(srv, cache, tmp_path / "a.tif", dsm=RGE)
        gets = srv.requests(archive, "GET")
        assert [g.status for g in gets] == ["truncate", 206]
        run(srv, cache, tmp_path / "b.tif")  # Copernicus
    with serve(world.root) as srv:  # a second run: everything is cached and verified
        run(srv, cache, tmp_path / "a2.tif", dsm=RGE)
        run(srv, cache, tmp_path / "b2.tif")
        assert not srv.log
    for a, b in (("a", "a2"), ("b", "b2")):
        with rasterio.open(tmp_path / f"{a}.tif") as x, rasterio.open(tmp_path / f"{b}.tif") as y:
            np.testing.assert_array_equal(x.read(), y.read())


def test_local_dsm_with_its_datum(cache, tmp_path):
    # a 2 m "LiDAR" DSM in UTM 30N covering the fixture AOI
    path = tmp_path / "lidar.tif"
    t = Affine(2, 0, 735600, 0, -2, 4987900)
    xs, ys = pixel_centres(t, 600, 700)
    z = 5 + 0.01 * (xs - 735600) + 0.02 * (ys - 4986700)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=700,
        height=600,
        count=1,
        dtype="float32",
        crs="EPSG:32630",
        transform=t,
        nodata=-1,
    ) as dst:
        dst.write(z.reshape(600, 700).astype("float32"), 1)
    out = tmp_path / "dsm.tif"
    dsm = {"source": "local", "path": str(path), "vertical_datum": "EGM96 (test)"}
    steps.run_dsm("fix", aoi_section(dsm=dsm), downloads("http://127.0.0.1:9"), out, cache / "dsm")
    v, x, y, _, ds = centres(out)
    ok = v != ds.nodata
    assert ok.mean() > 0.9
    np.testing.assert_allclose(
        v[ok], 5 + 0.01 * (x[ok] - 735600) + 0.02 * (y[ok] - 4986700), atol=0.05
    )
    assert ds.tags()["vertical_datum"] == "EGM96 (test)" and ds.tags()["resampling"] == "average"
    with pytest.raises(ConfigError, match="does not exist"):
        steps.run_dsm(
            "fix",
            aoi_section(dsm={"source": "local", "path": "nope.tif"}),
            downloads("http://127.0.0.1:9"),
            out,
            cache / "dsm",
        )

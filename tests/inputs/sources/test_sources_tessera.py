"""TESSERA through geotessera (``source: tessera``) against the fixture server's tiles.

The rule's entry point (``python -m aefheight fetch-embeddings``) runs geotessera 0.7.5 on the
fixture's registry and tiles while the server fails requests at a steady rate; every pixel of
the mosaic is checked against the fixture's truth (value x scale of the first tile, in the
registry's order, that holds the pixel with a valid scale).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from aefheight.core.schema import make
from aefheight.inputs.sources.aoi import target_grid
from aefheight.inputs.sources.spec import AOISpec
from fixture_world import YEAR, aoi_section, downloads
from pyproj import Transformer
from rasterio.transform import rowcol, xy

pytestmark = pytest.mark.slow


def _fetch(server, tmp_path: Path, **settings) -> subprocess.CompletedProcess:
    out = tmp_path / "embeddings.tif"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "aefheight", "fetch-embeddings", "--aoi", "fix"]
    cmd += ["--settings", json.dumps(aoi_section("tessera", **settings))]
    cmd += ["--downloads", json.dumps(downloads(server.url))]
    cmd += ["--cache-dir", str(tmp_path / "resources" / "tessera"), "--embeddings", str(out)]
    cmd += ["--provenance", str(tmp_path / "embeddings.json")]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def _expected(world, out: Path, tiles: list[str]) -> np.ndarray:
    """The truth on the output grid: each pixel centre in each tile's CRS, first valid wins."""
    with rasterio.open(out) as ds:
        t, crs, (h, w) = ds.transform, ds.crs, ds.shape
    rows, cols = np.mgrid[0:h, 0:w]
    x, y = xy(t, rows.ravel(), cols.ravel())
    exp = np.full((128, h * w), np.nan, np.float32)
    for name in tiles:
        lon, lat = (float(v) for v in name.removeprefix("grid_").split("_"))
        q, s, tile_crs, tf = world.tessera[(lon, lat)]
        tx, ty = Transformer.from_crs(crs, tile_crs, always_xy=True).transform(x, y)
        r, c = rowcol(tf, tx, ty)
        r, c = np.asarray(r), np.asarray(c)
        inside = (r >= 0) & (r < s.shape[0]) & (c >= 0) & (c < s.shape[1])
        ok = np.zeros(h * w, bool)
        ok[inside] = np.isfinite(s[r[inside], c[inside]]) & (s[r[inside], c[inside]] < 1)
        take = ok & np.isnan(exp[0])
        exp[:, take] = (q[r[take], c[take]].astype(np.float32) * s[r[take], c[take], None]).T
    exp = exp.reshape(128, h, w)
    spec = make(AOISpec, **aoi_section()["aoi"])
    exp[:, ~target_grid("fix", spec).inside(t, (h, w))] = np.nan  # aoi.mask_outside
    return exp


@pytest.mark.parametrize("kind", ["500", "drop", "truncate"])
def test_the_mosaic_matches_the_truth_with_faults_at_a_steady_rate(server, world, tmp_path, kind):
    server.fail_every(3, kind)
    proc = _fetch(server, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((tmp_path / "embeddings.json").read_text())
    assert info["source"] == "tessera" and info["year"] == YEAR and len(info["tiles"]) >= 2
    out = tmp_path / "embeddings.tif"
    with rasterio.open(out) as ds:
        got = ds.read()
        assert (ds.count, ds.dtypes[0]) == (128, "float32") and np.isnan(ds.nodata)
        assert ds.tags()["EMBEDDING_PRODUCT"] == "tessera"
    exp = _expected(world, out, info["tiles"])
    both = ~np.isnan(got[0]) & ~np.isnan(exp[0])
    assert both.mean() > 0.8  # most of the AOI is covered
    # nearest resampling through GDAL's approximate transformer (1/8 px) may pick the
    # neighbouring source pixel right at a cell edge: nearly every pixel is exact
    exact = (got == exp).all(axis=0) & both
    assert exact.sum() >= 0.995 * both.sum(), (exact.sum(), both.sum())
    # where no tile holds a valid scale the mosaic has no data, and where one does it has
    extra, lost = ~np.isnan(got[0]) & np.isnan(exp[0]), np.isnan(got[0]) & ~np.isnan(exp[0])
    print(f"{both.sum()} px, {exact.sum()} exact, {extra.sum()} extra, {lost.sum()} lost")
    assert extra.sum() + lost.sum() <= 0.005 * both.sum()
    failed = [r for r in server.log if str(r.status) == kind]
    print(f"{len(failed)} of {len(server.log)} requests failed ({kind})")
    assert len(failed) >= len(server.log) / 3 - 2 and len(failed) >= 4, len(failed)


def test_a_year_tessera_lacks_names_the_years_it_has(server, tmp_path):
    proc = _fetch(server, tmp_path, year=2031)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "TESSERA has no 2031" in last and str(YEAR) in last and "Traceback" not in proc.stderr

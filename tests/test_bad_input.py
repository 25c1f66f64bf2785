"""Bad input through the real entry point: one clear line, exit 2, earlier results untouched."""

import hashlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
from aefheight.core.schema import make
from aefheight.tiles.patches import TilingSettings, cut_patches
from helpers import store_paths, tile_flags, write_tif


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture
def tiled(tiny_aoi, tmp_path):
    """A patch store from good inputs: the 'earlier results' a bad rerun must not touch."""
    out = tmp_path / "patches"
    cut_patches(
        tiny_aoi["embeddings"],
        tiny_aoi["dsm"],
        make(TilingSettings, patch_size=64),
        **store_paths(out),
    )
    return out


def _emb(tmp_path, **kw):
    return write_tif(tmp_path / "emb.tif", np.zeros((64, 128, 128), np.int8), nodata=-128, **kw)


def _dsm(tmp_path, value=10.0, **kw):
    return write_tif(tmp_path / "dsm.tif", np.full((1, 128, 128), value, np.float32), **kw)


def _truncated(tmp_path, tiny_aoi):
    bad = tmp_path / "trunc.tif"
    data = tiny_aoi["embeddings"].read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    return bad, tiny_aoi["dsm"]


CASES = {
    "corrupt": (
        lambda t, a: (
            ((t / "c.tif").write_bytes(b"II*\x00" + b"\x00" * 64) and None)
            or (t / "c.tif", a["dsm"])
        ),
        "cannot read raster",
    ),
    "truncated": (_truncated, "corrupt or truncated"),  # header or data cut off
    "crs_differs": (lambda t, a: (_emb(t), _dsm(t, crs="EPSG:2154", nodata=-9999)), "CRS differs"),
    "crs_missing": (lambda t, a: (_emb(t), _dsm(t, crs=None, nodata=-9999)), "has no CRS"),
    "resolution": (lambda t, a: (_emb(t), _dsm(t, res=5.0, nodata=-9999)), "grid differs"),
    "band_count": (
        lambda t, a: (write_tif(t / "e.tif", np.zeros((3, 128, 128), np.int8)), _dsm(t)),
        "has 3 bands",
    ),
    "dtype": (
        lambda t, a: (write_tif(t / "e.tif", np.zeros((64, 128, 128), np.int16)), _dsm(t)),
        "int16; embeddings are int8 AEF codes or float32",
    ),
    "dsm_all_nodata": (
        lambda t, a: (_emb(t), _dsm(t, -9999.0, nodata=-9999)),
        "no pixel has both valid",
    ),
    "nan_undeclared": (lambda t, a: (_emb(t), _dsm(t, np.nan)), "declares no nodata"),
    "too_small": (
        lambda t, a: (
            write_tif(t / "e.tif", np.zeros((64, 40, 40), np.int8)),
            write_tif(t / "d.tif", np.zeros((1, 40, 40), np.float32)),
        ),
        "smaller than one",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_tile_rejects_bad_rasters_and_keeps_earlier_outputs(case, tiny_aoi, tiled, tmp_path):
    build, message = CASES[case]
    bad = tmp_path / "bad"
    bad.mkdir()
    emb, dsm = build(bad, tiny_aoi)
    before = _digest(tiled)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "aefheight",
            "tile",
            "--settings",
            '{"patch_size": 64}',
            "--embeddings",
            str(emb),
            "--dsm",
            str(dsm),
            *tile_flags(tiled, dsm),  # the DSM as its coarse DEM: same grid
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("aefheight tile: error:") and message in last, proc.stderr
    assert "Traceback" not in proc.stderr
    assert _digest(tiled) == before  # nothing lost, no temporary file left


def test_too_few_patches_for_the_split_says_how_many(tiny_aoi, tmp_path):
    out = tmp_path / "p"
    cut_patches(
        tiny_aoi["embeddings"],
        tiny_aoi["dsm"],
        make(TilingSettings, patch_size=128),
        **store_paths(out),
    )
    shutil.copy(out / "index.parquet", tmp_path / "index.parquet")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "aefheight",
            "split",
            "--settings",
            "{}",
            "--index",
            str(out / "index.parquet"),
            "--grid",
            str(tiny_aoi["embeddings"]),
            "--gpkg",
            str(tmp_path / "s.gpkg"),
            "--raster",
            str(tmp_path / "s.tif"),
            "--areas",
            str(tmp_path / "areas.csv"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "2 patches give" in proc.stderr and "at least 1 train, 1 val and 1 test" in proc.stderr
    assert not (tmp_path / "s.gpkg").exists()

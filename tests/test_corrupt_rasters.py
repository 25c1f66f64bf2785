"""Damaged rasters, for every raster each step reads: one line, exit 2, nothing written.

Kinds of damage: zero length, wrong magic bytes, truncated at 10 %, 50 % and 90 % of the file,
a band missing (or one too many for single-band rasters), and a header declaring a size no AOI
has. Each step runs through the rule's entry point (``aefheight.cli.main``, in process) with one
of its inputs damaged and the others intact; its output folder must stay empty.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from aefheight.cli import main
from aefheight.core import aef
from aefheight.core.schema import make
from aefheight.models.factory import ModelSettings, build_model, save_checkpoint
from aefheight.predict.infer import PredictSettings, predict_raster
from aefheight.split.spatial import SplitSettings, write_split
from aefheight.tiles.patches import TilingSettings, cut_patches
from helpers import AEF, store_paths

DAMAGE = ["zero_length", "magic", "cut10", "cut50", "cut90", "bands", "huge"]


@pytest.fixture(scope="module")
def good(tiny_aoi, tmp_path_factory) -> dict[str, Path]:
    """Intact inputs of every step: the AOI, a split and a prediction."""
    d = tmp_path_factory.mktemp("good")
    paths = store_paths(d)
    cut_patches(
        tiny_aoi["embeddings"], tiny_aoi["dsm"], make(TilingSettings, patch_size=64), **paths
    )
    split = make(SplitSettings, method="blocks", block_patches=1, buffer_px=4)
    write_split(
        paths["index"], tiny_aoi["embeddings"], d / "s.gpkg", d / "s.tif", d / "a.csv", split
    )
    ms = make(ModelSettings, arch="ridge")
    save_checkpoint(d / "m.pt", build_model(ms, 64), ms, 50.0, 10.0, AEF, patch_size=64)
    meta = {"model": "ridge", "seed": "0"}
    predict_raster(
        tiny_aoi["embeddings"], d / "m.pt", d / "p.tif", make(PredictSettings), meta=meta
    )
    (d / "metrics.csv").write_text("model,seed,split,r2\nridge,0,test,0.5\n")
    made = {"split": "s.tif", "gpkg": "s.gpkg", "prediction": "p.tif", "checkpoint": "m.pt"}
    made["metrics"] = "metrics.csv"
    return {**tiny_aoi, **paths, **{k: d / v for k, v in made.items()}}


def _data_end(path: Path) -> int:
    """The byte where the raster's last block of pixels ends (GDAL's TIFF block offsets)."""
    end = 0
    with rasterio.open(path) as ds:
        for b in range(1, ds.count + 1):
            for (i, j), _ in ds.block_windows(b):
                off = ds.get_tag_item(f"BLOCK_OFFSET_{j}_{i}", "TIFF", bidx=b)
                size = ds.get_tag_item(f"BLOCK_SIZE_{j}_{i}", "TIFF", bidx=b)
                if off and size:
                    end = max(end, int(off) + int(size))
    assert end > 0, f"no block offsets in {path}"
    return end


def _damage(src: Path, kind: str, dst: Path) -> Path:
    """A copy of ``src`` with one kind of damage."""
    data = src.read_bytes()
    if kind == "zero_length":
        dst.write_bytes(b"")
    elif kind == "magic":
        dst.write_bytes(b"XXXX" + data[4:])
    elif kind.startswith("cut"):  # cut inside the pixel data (a file's tail may hold none)
        dst.write_bytes(data[: _data_end(src) * int(kind[3:]) // 100])
    else:
        with rasterio.open(src) as ds:
            prof, count = ds.profile, ds.count
        if kind == "bands":  # one band fewer; a single-band raster gets a second band
            count = count - 1 if count > 1 else 2
            prof.update(count=count, driver="GTiff")
            with rasterio.open(dst, "w", **prof) as out:
                out.write(np.zeros((count, prof["height"], prof["width"]), prof["dtype"]))
        else:  # a valid header declaring 10^6 x 10^6 px, no data blocks (sparse)
            big = {"width": 10**6, "height": 10**6, "blockxsize": 4096, "blockysize": 4096}
            prof.update(driver="GTiff", tiled=True, sparse_ok=True, BIGTIFF="YES", **big)
            with rasterio.open(dst, "w", **prof):
                pass
    return dst


def _outputs(out: Path) -> dict[str, list[str]]:
    """Each step's command: its raster inputs (by flag) and its output flags, all under out/."""
    o = lambda name: str(out / name)  # noqa: E731
    return {
        "tile": ["tile", "--settings", json.dumps({"patch_size": 64}), "--index", o("i.parquet"),
                 "--store-embeddings", o("e.npy"), "--store-dsm", o("d.npy"),
                 "--store-coarse-dem", o("c.npy")],
        "split": ["split", "--settings", json.dumps({"buffer_px": 4}), "--gpkg", o("s.gpkg"),
                  "--raster", o("s.tif"), "--areas", o("a.csv")],
        "predict": ["predict", "--settings", "{}", "--model", "ridge", "--seed", "0",
                    "--prediction", o("p.tif")],
        "predict-coarse-dem": ["predict-coarse-dem", "--model", "coarse_dem", "--seed", "0",
                               "--prediction", o("p.tif")],
        "correct": ["correct", "--settings", "{}", "--model", "ridge", "--method", "quantile_map",
                    "--seed", "0", "--corrected", o("c.tif"), "--fit", o("f.csv")],
        "evaluate": ["evaluate", "--model", "ridge", "--seed", "0", "--metrics", o("m.csv"),
                     "--samples", o("s.csv"), "--by-height", o("h.csv"), "--by-class", o("c.csv"),
                     "--seams", o("x.csv")],
        "height-shift": ["height-shift", "--hist", o("h.csv"), "--quantiles", o("q.csv"),
                         "--stats", o("s.csv")],
        "split-map": ["split-map", "--png", o("m.png"), "--pdf", o("m.pdf")],
        "plot-residual-maps": ["plot-residual-maps", "--png", o("r.png"), "--pdf", o("r.pdf"),
                               "--all-seeds", o("a.pdf")],
    }  # fmt: skip


# step -> {flag: input name in the `good` fixture}; every raster each step reads
READS = {
    "tile": {"embeddings": "embeddings", "dsm": "dsm", "coarse_dem": "coarse_dem"},
    "split": {"grid": "embeddings"},
    "predict": {"embeddings": "embeddings"},
    "predict-coarse-dem": {"coarse_dem": "coarse_dem", "embeddings": "embeddings"},
    "correct": {"prediction": "prediction", "split": "split", "coarse_dem": "coarse_dem"},
    "evaluate": {"prediction": "prediction", "dsm": "dsm", "split": "split",
                 "landcover": "landcover"},
    "height-shift": {"dsm": "dsm", "split": "split", "embeddings": "embeddings"},
    "split-map": {"raster": "split", "dsm": "dsm"},
    "plot-residual-maps": {"predictions": "prediction", "dsm": "dsm", "split": "split"},
}  # fmt: skip
NON_RASTER = {
    "split": {"index": "index"},
    "predict": {"checkpoint": "checkpoint"},
    "split-map": {"gpkg": "gpkg"},
    "plot-residual-maps": {"metrics": "metrics"},
}
# the split reads only the grid of its raster (any band count is fine there)
CASES = [
    (step, flag, kind)
    for step, flags in READS.items()
    for flag in flags
    for kind in DAMAGE
    if (step, flag, kind) != ("split", "grid", "bands")
]


@pytest.mark.parametrize(("step", "flag", "kind"), CASES, ids=["-".join(c) for c in CASES])
def test_a_damaged_raster_is_one_line_and_leaves_nothing(good, tmp_path, capsys, step, flag, kind):
    bad = _damage(good[READS[step][flag]], kind, tmp_path / f"bad_{flag}.tif")
    out = tmp_path / "out"
    out.mkdir()
    args = _outputs(out)[step]
    for f, name in {**READS[step], **NON_RASTER.get(step, {})}.items():
        args += [f"--{f.replace('_', '-')}", str(bad if f == flag else good[name])]
    rc = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, f"{step} accepted a {kind} {flag}: {err[-3:]}"
    assert err and err[-1].startswith(f"aefheight {step}: error:"), err[-5:]
    assert "Traceback" not in "\n".join(err)
    assert str(bad) in err[-1] or kind in ("bands", "huge", "cut90"), err[-1]
    assert not [p for p in out.rglob("*") if p.is_file()], "a file was left under the outputs"


def test_the_damage_is_real(good, tmp_path):
    """Each kind of damage changes the file (so a pass above is a refusal, not a no-op)."""
    src = good["dsm"]
    for kind in DAMAGE:
        dst = _damage(src, kind, tmp_path / f"{kind}.tif")
        assert dst.read_bytes() != src.read_bytes(), kind
    with rasterio.open(tmp_path / "huge.tif") as ds:
        assert ds.width * ds.height == 10**12
    with rasterio.open(_damage(good["embeddings"], "bands", tmp_path / "e.tif")) as ds:
        assert ds.count == aef.BANDS - 1


def test_a_damaged_checkpoint_or_table_is_one_line(good, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    for flag, step in (("checkpoint", "predict"), ("index", "split")):
        bad = tmp_path / f"bad_{flag}"
        shutil.copy(good[flag], bad)
        bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
        args = _outputs(out)[step]
        for f, name in {**READS[step], **NON_RASTER[step]}.items():
            args += [f"--{f.replace('_', '-')}", str(bad if f == flag else good[name])]
        assert main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith(f"aefheight {step}: error:") and "Traceback" not in "\n".join(err)
        assert not [p for p in out.rglob("*") if p.is_file()]

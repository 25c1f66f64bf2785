"""Shared helpers of the benchmarks: test rasters, page-cache eviction, peak RSS, tables.

The benchmark rasters are made here, not downloaded: a small AOI from the project's own
synthetic generator (``aefheight.inputs.synthetic``), mirrored edge to edge up to the asked
size, and
written with the pipeline's own GeoTIFF profile (256 px tiles, deflate, pixel-interleaved int8
x 64 bands; float32 DSM). Mirroring keeps the statistics (and so the deflate ratio) of the
synthetic embeddings without synthesizing a huge AOI, and the result is seamless.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow"))

import numpy as np  # noqa: E402
import rasterio  # noqa: E402
from aefheight import aef  # noqa: E402
from aefheight.core.raster import Grid  # noqa: E402
from aefheight.core.schema import make as settings_of  # noqa: E402
from aefheight.inputs.synthetic import SyntheticSettings, write_synthetic  # noqa: E402

DATA = Path(os.environ.get("AEF_BENCH_DATA", ROOT / "benchmarks" / "data"))
BASE_TILE = 1024  # px side of the synthetic AOI that is mirrored


def log(*args: object) -> None:
    print(*args, file=sys.stderr, flush=True)


def evict(*paths: os.PathLike | str) -> None:
    """Drop these files' pages from the page cache (only ours; no root, no global drop)."""
    for p in paths:
        p = Path(p)
        if not p.exists():
            continue
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)  # dirty pages cannot be dropped before they are written
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _mirror(a: np.ndarray, reps_y: int, reps_x: int) -> np.ndarray:
    """Tile ``a`` (..., h, w) reps_y x reps_x times, flipping every other copy (seamless)."""
    row = np.concatenate([a if j % 2 == 0 else a[..., ::-1] for j in range(reps_x)], axis=-1)
    return np.concatenate(
        [row if i % 2 == 0 else row[..., ::-1, :] for i in range(reps_y)], axis=-2
    )


def make_aoi(width: int, height: int, name: str | None = None) -> dict[str, Path]:
    """Co-registered ``embeddings.tif`` (int8 x 64) and ``dsm.tif`` of ``width`` x ``height`` px.

    Cached under ``DATA/<name>``: made once, reused while the files and their stamp exist.
    """
    name = name or f"aoi_{width}x{height}"
    out = DATA / name
    paths = {"embeddings": out / "embeddings.tif", "dsm": out / "dsm.tif"}
    stamp = out / "stamp.json"
    want = {"width": width, "height": height, "base": BASE_TILE, "version": 1}
    if stamp.exists() and json.loads(stamp.read_text()) == want:
        if all(p.exists() for p in paths.values()):
            return paths
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    base = settings_of(SyntheticSettings, width=BASE_TILE, height=BASE_TILE, seed=7, holes=3)
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        e0, d0 = Path(tmp) / "e.tif", Path(tmp) / "d.tif"
        write_synthetic(base, e0, d0)
        with rasterio.open(e0) as src:
            codes = src.read()
        with rasterio.open(d0) as src:
            dsm = src.read(1)
            dsm_nodata = src.nodata
    grid = Grid(base.grid.crs, base.grid.transform, width, height)
    reps_x = -(-width // BASE_TILE)
    strip = 256
    mirrored_cols = _mirror(codes, 1, reps_x)[..., :width]  # one row of copies (64 x 1024 x W)
    mirrored_cols_z = _mirror(dsm, 1, reps_x)[..., :width]
    opts = {"num_threads": "ALL_CPUS"}  # creation speed only; same file format
    prof_e = {**grid.profile(aef.BANDS, "int8", aef.NODATA), **opts}
    prof_d = {**grid.profile(1, "float32", dsm_nodata), **opts}
    tmp_e, tmp_d = (
        paths["embeddings"].with_suffix(".part.tif"),
        paths["dsm"].with_suffix(".part.tif"),
    )
    with rasterio.open(tmp_e, "w", **prof_e) as de, rasterio.open(tmp_d, "w", **prof_d) as dd:
        for r0 in range(0, height, strip):
            n = min(strip, height - r0)
            rows = np.arange(r0, r0 + n)
            copy, inside = rows // BASE_TILE, rows % BASE_TILE
            src_rows = np.where(copy % 2 == 0, inside, BASE_TILE - 1 - inside)
            de.write(mirrored_cols[:, src_rows, :], window=((r0, r0 + n), (0, width)))
            dd.write(mirrored_cols_z[src_rows, :], 1, window=((r0, r0 + n), (0, width)))
    os.replace(tmp_e, paths["embeddings"])
    os.replace(tmp_d, paths["dsm"])
    stamp.write_text(json.dumps(want))
    size = sum(p.stat().st_size for p in paths.values())
    dt = time.perf_counter() - t0
    log(f"made {name}: {width}x{height} px, {size / 2**30:.2f} GiB in {dt:.0f} s")
    return paths


# A fresh, small Python runs the command as its child and reports the child's peak RSS. Not
# wait4 on our own child: Linux carries a process's peak RSS through fork and exec, so a
# child of this (large) benchmark process would start with our peak as its own.
_SHIM = """
import json, os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, ru = os.wait4(pid, 0)
with open(sys.argv[1], "w") as fh:
    json.dump([os.waitstatus_to_exitcode(status), ru.ru_maxrss], fh)
"""


def run_measured(cmd: Sequence[str], env: dict | None = None) -> tuple[float, float, str]:
    """Run a command; return (wall seconds, its peak RSS in MiB, stdout)."""
    with tempfile.NamedTemporaryFile("r", suffix=".json") as rec:
        t0 = time.perf_counter()
        res = subprocess.run(
            [sys.executable, "-S", "-c", _SHIM, rec.name, *cmd],
            stdout=subprocess.PIPE,
            env=env,
            check=True,
        )
        wall = time.perf_counter() - t0
        rc, maxrss_kib = json.load(rec)
    if rc:
        raise RuntimeError(f"{' '.join(cmd)} failed with exit code {rc}")
    return wall, maxrss_kib / 1024.0, res.stdout.decode()


def machine() -> str:
    """One line describing where the numbers were taken."""
    load = os.getloadavg()[0]
    return (
        f"{platform.node() or 'host'}: {os.cpu_count()} CPUs, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM, "
        f"Python {platform.python_version()}, load {load:.1f} at start"
    )


def table(rows: Iterable[dict], columns: Sequence[str]) -> str:
    """A Markdown table of ``rows`` (dicts) with the given columns."""
    rows = list(rows)

    def fmt(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def store_files(store_dir: Path) -> tuple[Path, Path]:
    """The patch store's two files in ``store_dir`` (named as the tile rule names them)."""
    return store_dir / "embeddings.npy", store_dir / "dsm.npy"


def tile_store(paths: dict[str, Path], store_dir: Path, patch: int):
    """The tile step into ``store_dir``: index.parquet, embeddings.npy, dsm.npy."""
    from aefheight.tiles.patches import TilingSettings, cut_patches

    emb, dsm = store_files(store_dir)
    s = settings_of(TilingSettings, patch_size=patch)
    return cut_patches(paths["embeddings"], paths["dsm"], s, store_dir / "index.parquet", emb, dsm)


_TILE = """
import sys
sys.path.insert(0, {workflow!r})
from pathlib import Path
from aefheight.tiles.patches import TilingSettings, cut_patches
from aefheight.core.schema import make
out = Path({out!r})
cut_patches(Path({emb!r}), Path({dsm!r}), make(TilingSettings, patch_size={patch}),
    out / "index.parquet", out / "embeddings.npy", out / "dsm.npy")
"""


def tile_code(paths: dict[str, Path], store_dir: Path, patch: int) -> str:
    """Python source running the tile step into ``store_dir``, for ``python -c`` in a fresh
    process (so that its time and peak RSS are the step's own, with only what it imports)."""
    return _TILE.format(workflow=str(ROOT / "workflow"), out=str(store_dir), patch=patch,
                        emb=str(paths["embeddings"]), dsm=str(paths["dsm"]))  # fmt: skip

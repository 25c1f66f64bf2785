"""Item 1: training-patch sampling, our patch store against TorchGeo, rasterio and memcpy.

One invocation runs every contender on the same co-registered rasters and prints patches/s and
ratios. Each contender runs in its own process (so one's mapped pages or GDAL block cache
cannot help another), single-threaded, twice over the same patches: ``cold`` after this
script has evicted the files it reads from the page cache (``posix_fadvise(DONTNEED)`` on
those files only), then ``warm`` (the same patches again, now cached).

Contenders (a patch = 64 x P x P int8 embedding codes + P x P float32 heights):

* ``memcpy``: copy the same bytes from RAM into a patch buffer: the ceiling.
* ``disk``: read the same bytes cold in one sequential pass: the ceiling of a cold read.
* ``ours``: the pipeline's :class:`aefheight.patches.PatchStore` (int8 ``.npy`` store written
  by the ``tile`` rule, one contiguous run per patch), patches in random order, each batch of
  8 announced with ``PatchStore.prefetch`` first (as ``PatchDataset`` does for the DataLoader),
  then copied into RAM; ``ours, no prefetch``: the same without the hint (the reader before).
  ``ours`` also times a RAM copy of the same bytes after each patch: ``memcpy (interleaved)``.
* ``ours+dequant``: the same through ``PatchDataset`` (de-quantized float32 x, target, mask).
* ``rasterio random`` / ``rasterio aligned``: per-patch ``DatasetReader.read(window=...)`` of
  the GeoTIFFs at random positions, or at block-aligned positions (the patches of ``ours``).
* ``torchgeo random`` / ``torchgeo grid``: TorchGeo 0.10 ``RasterDataset`` (embeddings) &
  ``RasterDataset`` (DSM) with ``RandomGeoSampler`` / ``GridGeoSampler`` (own venv, Python
  3.12: see ``--setup-torchgeo``).

Run:  nice -n 19 .venv/bin/python benchmarks/bench_sampling.py [--size 8192] [--patch 256]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import _common as c
import numpy as np


def torchgeo_spec() -> str:
    """TorchGeo's pin, from pyproject's ``bench`` extra (without its Python marker)."""
    import tomllib

    extra = tomllib.loads((c.ROOT / "pyproject.toml").read_text())["project"]
    spec = next(r for r in extra["optional-dependencies"]["bench"] if r.startswith("torchgeo"))
    return spec.split(";")[0].strip()


TORCHGEO_VENV = c.ROOT / "benchmarks" / ".venv-torchgeo"


def _runs_312(py: str) -> bool:
    """Whether ``py`` starts and is Python >= 3.12 (a pyenv shim of an uninstalled version
    exits 127)."""
    try:
        r = subprocess.run(
            [py, "-c", "import sys; sys.exit(sys.version_info < (3, 12))"],
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def python312() -> tuple[str | None, list[str]]:
    """An installed Python >= 3.12 for the TorchGeo venv, and every candidate tried.

    pyenv's installed versions first (real binaries), then ``python3.13``/``python3.12`` on
    PATH; each is started once, so a shim of a version pyenv lacks is skipped.
    """
    pyenv = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.1[2-9]*/bin/python")))
    on_path = [p for name in ("python3.13", "python3.12") if (p := shutil.which(name))]
    tried = [*pyenv, *on_path]
    return next((p for p in tried if _runs_312(p)), None), tried


def setup_torchgeo() -> None:
    """Create benchmarks/.venv-torchgeo with TorchGeo (pulls PyPI's torch, several GB)."""
    py, tried = python312()
    if py is None:
        sys.exit(
            "no working Python >= 3.12 (TorchGeo 0.10 needs it); tried: "
            + (", ".join(tried) or "none on PATH or in ~/.pyenv/versions")
            + ". Install one, e.g. `pyenv install 3.12`"
        )
    c.log(f"TorchGeo venv from {py}")
    subprocess.run([py, "-m", "venv", str(TORCHGEO_VENV)], check=True)
    pip = [str(TORCHGEO_VENV / "bin" / "pip"), "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, torchgeo_spec()], check=True)


# --- the contenders, each run by a child process (--worker) -------------------------------


def warm_up(files: list[Path]) -> None:
    """Read whole files once so that the page cache holds them (not timed)."""
    buf = bytearray(8 << 20)
    for f in files:
        with open(f, "rb", buffering=0) as fh:
            while fh.readinto(buf):
                pass


def _memcpy_ceiling(p: int):
    """``copy(k)``: copy one patch's bytes between RAM buffers (pool beyond CPU caches)."""
    pool = 64
    src_e = np.ones((pool, 64, p, p), np.int8)
    src_z = np.ones((pool, p, p), np.float32)
    dst_e, dst_z = np.empty_like(src_e[0]), np.empty_like(src_z[0])

    def copy(k: int) -> None:
        np.copyto(dst_e, src_e[k % pool])
        np.copyto(dst_z, src_z[k % pool])

    return copy


def _passes(make, items: list, budget: float, files: list[Path], ceiling=None) -> list[dict]:
    """Time a reader over the first half of ``items`` cold, then over the second half warm.

    ``make()`` returns a fresh ``read_one(item) -> bytes`` (new file handles and caches) for
    each pass, so the warm pass is helped by the page cache only, not by the reader's own
    block cache or mapped pages of the cold pass.
    """
    half = len(items) // 2
    out = []
    for name, part in (("cold", items[:half]), ("warm", items[half:])):
        if name == "warm":
            warm_up(files)
        read_one = make()
        k, nbytes, t_ceil = 0, 0, 0.0
        t0 = time.perf_counter()
        for it in part:
            nbytes += read_one(it)
            k += 1
            if ceiling is not None:  # the same bytes copied in RAM, timed apart, interleaved
                t1 = time.perf_counter()
                ceiling(k)
                t_ceil += time.perf_counter() - t1
            if time.perf_counter() - t0 > budget:
                break
        dt = time.perf_counter() - t0 - t_ceil
        out.append({"pass": name, "patches": k, "seconds": dt, "source_bytes": nbytes})
        if ceiling is not None:
            out[-1]["memcpy_seconds"] = t_ceil
        del read_one
    return out


def worker(name: str, a: argparse.Namespace) -> list[dict]:
    import rasterio
    from aefheight.dataset import PatchDataset
    from aefheight.patches import PatchStore
    from rasterio.windows import Window

    p = a.patch
    n_store = len(PatchStore(*c.store_files(a.store)))
    rng = np.random.default_rng(a.seed)
    order = rng.permutation(n_store).tolist()
    store_files = list(c.store_files(a.store))
    e_bytes, z_bytes = 64 * p * p, 4 * p * p
    if name == "memcpy":

        def make():
            copy = _memcpy_ceiling(p)

            def read(k: int) -> int:
                copy(k)
                return e_bytes + z_bytes

            return read

        return _passes(make, order + order, a.budget, [])
    if name == "disk":  # the same bytes in one sequential pass, reused buffers: the best case
        store = PatchStore(*c.store_files(a.store))

        def make():
            chunk = bytearray(e_bytes)
            fds = [open(f, "rb", buffering=0) for f in store_files]

            def read(k: int) -> int:
                n = os.preadv(fds[0].fileno(), [chunk], store.embeddings.offset + k * e_bytes)
                view = memoryview(chunk)[:z_bytes]
                return n + os.preadv(fds[1].fileno(), [view], store.dsm.offset + k * z_bytes)

            return read

        seq = list(range(n_store))
        return _passes(make, seq[: n_store // 2] * 2, a.budget, store_files)
    if name in ("ours", "ours, no prefetch", "ours+dequant"):
        batch = a.batch
        pos = {k: i for i, k in enumerate(order)}

        def make():
            store = PatchStore(*c.store_files(a.store))
            if name == "ours+dequant":  # PatchDataset: prefetch a batch, then item by item
                ds = PatchDataset(store, np.arange(n_store), mean=0.0, std=1.0)

                def read(k: int) -> int:
                    i = pos[k]
                    if i % batch == 0:
                        store.prefetch(order[i : i + batch])
                    ds[k]
                    return e_bytes + z_bytes
            elif name == "ours, no prefetch":  # the reader before this benchmark

                def read(k: int) -> int:
                    return np.array(store.embeddings[k]).nbytes + np.array(store.dsm[k]).nbytes
            else:  # the training reader: a batch is prefetched, then read patch by patch

                def read(k: int) -> int:
                    i = pos[k]
                    if i % batch == 0:
                        store.prefetch(order[i : i + batch])
                    e, z = store.read(k)
                    return e.nbytes + z.nbytes

            return read

        ceiling = _memcpy_ceiling(p) if name == "ours" else None
        return _passes(make, order, a.budget, store_files, ceiling)
    tifs = [a.embeddings, a.dsm]
    with rasterio.open(a.embeddings) as ds:
        height, width = ds.height, ds.width
    if name == "rasterio random":
        items = rng.integers(0, [height - p, width - p], size=(2 * a.n, 2)).tolist()
    elif name == "rasterio aligned":
        rows = store_rows_cols(a.store)
        items = [rows[k] for k in order]
    else:
        raise ValueError(name)

    def make():
        emb = rasterio.open(a.embeddings)
        dsm = rasterio.open(a.dsm)

        def read(rc: tuple[int, int]) -> int:
            w = Window(rc[1], rc[0], p, p)
            e = emb.read(window=w)
            z = dsm.read(1, window=w)
            return e.nbytes + z.nbytes

        return read

    return _passes(make, items, a.budget, tifs)


def store_rows_cols(store_dir: Path) -> list[tuple[int, int]]:
    import pandas as pd

    idx = pd.read_parquet(store_dir / "index.parquet", columns=["patch_id", "row", "col"])
    idx = idx.sort_values("patch_id")
    return list(zip(idx["row"].tolist(), idx["col"].tolist(), strict=True))


# --- the parent: data, eviction, one child per contender, the table ----------------------


def run_child(cmd: list[str], evict: list[Path]) -> list[dict]:
    c.evict(*evict)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    res = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, env=env)
    return [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--size", type=int, default=8192, help="AOI side, px (default 8192)")
    ap.add_argument("--patch", type=int, default=256, help="patch side, px (default 256)")
    ap.add_argument("--n", type=int, default=300, help="patches per pass of the slow readers")
    ap.add_argument("--budget", type=float, default=60.0, help="seconds per pass at most")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=8, help="patches prefetched together (ours)")
    ap.add_argument("--only", nargs="*", help="run only these contenders")
    ap.add_argument("--setup-torchgeo", action="store_true", help="create the TorchGeo venv")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--embeddings", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--dsm", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        for r in worker(a.worker, a):
            print(json.dumps(r), flush=True)
        return
    if a.setup_torchgeo:
        setup_torchgeo()
        return

    from aefheight.patches import PatchStore

    paths = c.make_aoi(a.size, a.size, f"aoi_{a.size}")
    store_dir = paths["embeddings"].parent / f"store{a.patch}"
    tiling_s = None
    if not (store_dir / "index.parquet").exists():
        c.evict(*paths.values())
        t0 = time.perf_counter()
        c.tile_store(paths, store_dir, a.patch)
        tiling_s = time.perf_counter() - t0
    n_store = len(PatchStore(*c.store_files(store_dir)))
    store_files = list(c.store_files(store_dir))
    tif_files = [paths["embeddings"], paths["dsm"]]
    me = [sys.executable, __file__, "--patch", str(a.patch), "--n", str(a.n)]
    me += ["--budget", str(a.budget), "--seed", str(a.seed), "--store", str(store_dir)]
    me += ["--batch", str(a.batch)]
    me += ["--embeddings", str(paths["embeddings"]), "--dsm", str(paths["dsm"])]
    tg_py = TORCHGEO_VENV / "bin" / "python"
    tg = [str(tg_py), str(c.ROOT / "benchmarks" / "_torchgeo_reader.py")]
    tg += ["--embeddings", str(paths["embeddings"]), "--dsm", str(paths["dsm"])]
    tg += ["--patch", str(a.patch), "--n", str(a.n), "--budget", str(a.budget)]
    tg += ["--seed", str(a.seed)]
    contenders = {
        "memcpy": ([*me, "--worker", "memcpy"], []),
        "disk": ([*me, "--worker", "disk"], store_files),
        "ours": ([*me, "--worker", "ours"], store_files),
        "ours, no prefetch": ([*me, "--worker", "ours, no prefetch"], store_files),
        "ours+dequant": ([*me, "--worker", "ours+dequant"], store_files),
        "rasterio random": ([*me, "--worker", "rasterio random"], tif_files),
        "rasterio aligned": ([*me, "--worker", "rasterio aligned"], tif_files),
        "torchgeo random": ([*tg, "--sampler", "random"], tif_files),
        "torchgeo grid": ([*tg, "--sampler", "grid"], tif_files),
    }
    c.log(c.machine())
    c.log(f"AOI {a.size}x{a.size} px x 64 bands; {n_store} patches of {a.patch} px in the store")
    results: dict[str, dict[str, dict]] = {}
    for name, (cmd, files) in contenders.items():
        if a.only and name not in a.only:
            continue
        if name.startswith("torchgeo") and not tg_py.exists():
            c.log(f"skip {name}: no {TORCHGEO_VENV} (run with --setup-torchgeo once)")
            continue
        c.log(f"running {name} ...")
        results[name] = {r["pass"]: r for r in run_child(cmd, files)}

    def rate(name: str, which: str) -> float:
        r = results.get(name, {}).get(which)
        return r["patches"] / r["seconds"] if r and r["seconds"] > 0 else float("nan")

    patch_mib = (64 * a.patch * a.patch + 4 * a.patch * a.patch) / 2**20
    rows = []
    for name, passes in results.items():
        row = {"contender": name}
        for which in ("cold", "warm"):
            if which in passes:
                row[f"{which} patches/s"] = rate(name, which)
                row[f"{which} MiB/s"] = rate(name, which) * patch_mib
                row[f"{which} n"] = passes[which]["patches"]
        rows.append(row)
    cols = ["contender", "cold patches/s", "cold MiB/s", "cold n"]
    cols += ["warm patches/s", "warm MiB/s", "warm n"]
    print(f"\n## Patch sampling: {a.size}x{a.size} px x 64 bands int8, {a.patch} px patches")
    print(f"({c.machine()}; one process per contender, single-threaded)\n")
    print(c.table(rows, cols))
    if tiling_s is not None:
        rate_t = n_store / tiling_s
        print(f"\none-off tiling into the store: {tiling_s:.0f} s ({rate_t:.1f} patches/s)")
    ratios = []
    for which in ("cold", "warm"):
        ours = rate("ours", which)
        tgs = {n: rate(n, which) for n in ("torchgeo random", "torchgeo grid")}
        ceil = rate("memcpy", "warm")
        r_ours = results.get("ours", {}).get(which, {})
        interleaved = r_ours.get("memcpy_seconds", float("nan")) / r_ours.get("seconds", 1.0)
        line = {"pass": which, "ours / memcpy (interleaved)": interleaved}
        line["ours / memcpy (own run)"] = ours / ceil
        line["ours / disk (cold)"] = ours / rate("disk", "cold") if which == "cold" else ""
        for n, v in tgs.items():
            line[f"ours / {n}"] = ours / v
        line["ours / rasterio random"] = ours / rate("rasterio random", which)
        line["ours / rasterio aligned"] = ours / rate("rasterio aligned", which)
        deq = rate("ours+dequant", which)
        line["ours+dequant / torchgeo random"] = deq / tgs["torchgeo random"]
        ratios.append(line)
    print("\nRatios (goal: ours >= 20x TorchGeo, >= 0.5x memcpy):\n")
    print(c.table(ratios, list(ratios[0])))
    out = c.DATA / f"sampling_{a.size}_{a.patch}.json"
    out.write_text(json.dumps({"results": results, "ratios": ratios}, indent=1))


if __name__ == "__main__":
    main()

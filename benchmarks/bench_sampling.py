"""Item 1: training-patch sampling, our patch store against TorchGeo, rasterio and memcpy.

One invocation runs every contender on the same co-registered rasters, ``--repeats`` times,
**interleaved** (repeat 1: A B C ..., repeat 2: A B C ...), and takes every ratio pair by pair
within a repeat, so load from other jobs hits both sides of a ratio alike; tables give the
median and the min-max over the repeats, and the machine's load (1-min average) at the start
of every run. Each contender runs in its own process (so one's mapped pages or GDAL block
cache cannot help another), single-threaded but for the de-quantization (OpenCV's threads, as
in training), over the same patches: ``cold`` after this script has evicted the files it reads
from the page cache (``posix_fadvise(DONTNEED)`` on those files only), then ``warm`` (the
files read into the page cache first, a fresh reader).

Contenders (a patch = 64 x P x P embeddings + P x P heights):

* ``memcpy``: copy the same bytes from RAM into a patch buffer: the ceiling.
* ``disk``: read the same bytes cold in one sequential pass: the ceiling of a cold read.
* ``ours int8``: the pipeline's :class:`aefheight.tiles.patches.PatchStore` (int8 ``.npy`` store
  written by the ``tile`` rule, one contiguous run per patch), patches in random order, each
  batch announced with ``PatchStore.prefetch`` first, then copied into RAM as int8. It also
  times a RAM copy of the same bytes after each patch: ``memcpy (interleaved)``.
* ``ours batch``: the DataLoader's fetch, ``PatchDataset.__getitems__``: a collated batch of
  int8 codes, standardized float32 target and bool mask, what crosses the DataLoader and the
  host-to-device copy (the codes are de-quantized on the training device).
* ``ours float32``: model-ready float32 on the CPU in TorchGeo's layout (N, C, H, W): the same
  batch, its codes then de-quantized with ``aef.dequantize`` (OpenCV's threaded lookup).
  Training itself de-quantizes with ``dataset.model_input`` inside the step, channels-last
  (timed by ``bench_training.py``).
* ``rasterio random`` / ``rasterio aligned``: per-patch ``DatasetReader.read(window=...)`` of
  the GeoTIFFs at random positions, or at block-aligned positions (the patches of ``ours``).
* ``torchgeo random`` / ``torchgeo grid``: TorchGeo 0.10 ``RasterDataset`` (embeddings) &
  ``RasterDataset`` (DSM) with ``RandomGeoSampler`` / ``GridGeoSampler`` (stride = size: the
  store's patch positions); both return float32 image and target (own venv, Python 3.12: see
  ``--setup-torchgeo``).
* ``tiling``: the one-off conversion of the GeoTIFFs into the store (the ``tile`` step, cold),
  into a scratch directory, once per repeat: the cost that ``ours`` pays up front.

Run:  .venv/bin/python benchmarks/bench_sampling.py [--size 8192] [--patch 256] [--repeats 3]
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

    ``make()`` returns a fresh ``read(item) -> patches read`` (new file handles and caches) for
    each pass, so the warm pass is helped by the page cache only, not by the reader's own
    block cache or mapped pages of the cold pass.
    """
    half = len(items) // 2
    out = []
    for name, part in (("cold", items[:half]), ("warm", items[half:])):
        if name == "warm":
            warm_up(files)
        read = make()
        k, t_ceil = 0, 0.0
        t0 = time.perf_counter()
        for it in part:
            n = read(it)
            k += n
            if ceiling is not None:  # the same bytes copied in RAM, timed apart, interleaved
                t1 = time.perf_counter()
                ceiling(k)
                t_ceil += time.perf_counter() - t1
            if time.perf_counter() - t0 > budget:
                break
        dt = time.perf_counter() - t0 - t_ceil
        out.append({"pass": name, "patches": k, "seconds": dt})
        if ceiling is not None:
            out[-1]["memcpy_seconds"] = t_ceil
        del read
    return out


def worker(name: str, a: argparse.Namespace) -> list[dict]:
    import rasterio
    from aefheight.core import aef
    from aefheight.tiles.store import PatchStore
    from aefheight.train.dataset import PatchDataset
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
                return 1

            return read

        return _passes(make, order + order, a.budget, [])
    if name == "disk":  # the same bytes in one sequential pass, reused buffers: the best case
        store = PatchStore(*c.store_files(a.store))

        def make():
            chunk = bytearray(e_bytes)
            fds = [open(f, "rb", buffering=0) for f in store_files]

            def read(k: int) -> int:
                os.preadv(fds[0].fileno(), [chunk], store.embeddings.offset + k * e_bytes)
                view = memoryview(chunk)[:z_bytes]
                os.preadv(fds[1].fileno(), [view], store.dsm.offset + k * z_bytes)
                return 1

            return read

        seq = list(range(n_store))
        return _passes(make, seq[: n_store // 2] * 2, a.budget, store_files)
    if name in ("ours batch", "ours float32"):  # the DataLoader's fetch, batch by batch
        batches = [order[i : i + a.batch] for i in range(0, n_store, a.batch)]

        def make():
            ds = PatchDataset(PatchStore(*c.store_files(a.store)), np.arange(n_store), 0.0, 1.0)
            aef.dequantize(np.zeros(1, np.int8))  # imports OpenCV before the clock starts

            def read(batch: list[int]) -> int:
                codes, _, y, _ = ds.__getitems__(batch)
                if name == "ours float32":
                    x = aef.dequantize(codes.numpy(), nodata_value=0.0)
                    assert x.dtype == y.numpy().dtype == np.float32
                return len(batch)

            return read

        return _passes(make, batches, a.budget, store_files)
    if name == "ours int8":  # the training reader's I/O: prefetch a batch, copy patch by patch
        pos = {k: i for i, k in enumerate(order)}

        def make():
            store = PatchStore(*c.store_files(a.store))

            def read(k: int) -> int:
                i = pos[k]
                if i % a.batch == 0:
                    store.prefetch(order[i : i + a.batch])
                store.read(k)
                return 1

            return read

        return _passes(make, order, a.budget, store_files, _memcpy_ceiling(p))
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
            emb.read(window=w)
            dsm.read(1, window=w)
            return 1

        return read

    return _passes(make, items, a.budget, tifs)


def store_rows_cols(store_dir: Path) -> list[tuple[int, int]]:
    import pandas as pd

    idx = pd.read_parquet(store_dir / "index.parquet", columns=["patch_id", "row", "col"])
    idx = idx.sort_values("patch_id")
    return list(zip(idx["row"].tolist(), idx["col"].tolist(), strict=True))


# --- the parent: data, eviction, the contenders interleaved, the tables ------------------

# (section, what, numerator, denominator): every ratio is taken within one repeat
PAIRS: list[tuple[str, str, str, str]] = [
    ("fair", "model-ready float32, same positions: ours / TorchGeo grid", "ours float32",
     "torchgeo grid"),
    ("int8 only", "ours int8 / TorchGeo grid (float32)", "ours int8", "torchgeo grid"),
    ("random sampler", "ours float32 / TorchGeo random", "ours float32", "torchgeo random"),
    ("random sampler", "ours int8 / TorchGeo random", "ours int8", "torchgeo random"),
    ("reader", "ours batch (int8 codes) / ours int8 (goal >= 0.5 warm)", "ours batch",
     "ours int8"),
    ("reader", "ours float32 (on the CPU) / ours int8", "ours float32", "ours int8"),
    ("reader", "ours int8 / disk", "ours int8", "disk"),
    ("reader", "ours int8 / memcpy (own run)", "ours int8", "memcpy"),
    ("reader", "ours int8 / rasterio aligned", "ours int8", "rasterio aligned"),
    ("reader", "rasterio aligned / rasterio random", "rasterio aligned", "rasterio random"),
]  # fmt: skip


def run_child(cmd: list[str], evict: list[Path]) -> tuple[list[dict], float]:
    """Run one contender after evicting its files; (its JSON lines, the load at its start)."""
    c.evict(*evict)
    load = os.getloadavg()[0]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    res = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, env=env)
    return [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")], load


def med(values: list[float]) -> str:
    """``median [min-max]`` of the finite values (``-`` when none)."""
    v = [x for x in values if np.isfinite(x)]
    if not v:
        return "-"
    f = (lambda x: f"{x:.3g}") if max(map(abs, v)) < 1000 else (lambda x: f"{x:.0f}")
    return f"{f(float(np.median(v)))} [{f(min(v))}-{f(max(v))}]"


def summarise(runs: list[dict], n_store: int, sizes: dict[str, float]) -> dict[str, list[dict]]:
    """The tables from the runs (one dict per repeat x contender x pass, with its load)."""
    rate = {(r["repeat"], r["contender"], r["pass"]): r["patches"] / r["seconds"] for r in runs}
    repeats = sorted({r["repeat"] for r in runs})
    names = list(dict.fromkeys(r["contender"] for r in runs if r["contender"] != "tiling"))
    nan = float("nan")

    def per_repeat(name: str, which: str) -> list[float]:
        return [rate.get((k, name, which), nan) for k in repeats]

    def loads(name: str) -> str:
        v = [r["load"] for r in runs if r["contender"] == name]
        return f"{min(v):.1f}-{max(v):.1f}"

    contenders = [
        {"contender": n, "cold patches/s": med(per_repeat(n, "cold")),
         "warm patches/s": med(per_repeat(n, "warm")), "load at start": loads(n)}
        for n in names
    ]  # fmt: skip
    ratios = []
    for section, what, num, den in PAIRS:
        row = {"rows": section, "ratio": what}
        for which in ("cold", "warm"):
            pairs = zip(per_repeat(num, which), per_repeat(den, which), strict=True)
            v = [a / b for a, b in pairs]
            row[which] = med(v)
            row[f"{which} per repeat"] = ", ".join(f"{x:.3g}" for x in v)
        ratios.append(row)
    inter = {
        w: [r["memcpy_seconds"] / r["seconds"] for r in runs
            if r["contender"] == "ours int8" and r["pass"] == w]
        for w in ("cold", "warm")
    }  # fmt: skip
    ratios.append({"rows": "reader", "ratio": "ours int8 / memcpy (interleaved)",
                   "cold": med(inter["cold"]), "warm": med(inter["warm"])})  # fmt: skip
    # the one-off conversion: tiling + n passes of ours vs n passes of TorchGeo grid
    tile_s = [r["seconds"] for r in runs if r["contender"] == "tiling"]
    conversion = [
        {"what": "tiling (GeoTIFF -> store, cold), s", "value": med(tile_s),
         "load at start": loads("tiling")},
        {"what": "extra disk: the store beside the GeoTIFFs, GiB",
         "value": f"{sizes['store']:.2f} (GeoTIFFs {sizes['tif']:.2f})"},
    ]  # fmt: skip
    for which in ("cold", "warm"):
        t_tg = [n_store / x for x in per_repeat("torchgeo grid", which)]
        t_us = [n_store / x for x in per_repeat("ours float32", which)]
        per = list(zip(tile_s, t_us, t_tg, strict=False))
        conversion.append(
            {
                "what": f"one pass of all {n_store} patches ({which}), tiling included: "
                "ours float32 / TorchGeo grid speed",
                "value": med([g / (t + u) for t, u, g in per]),
            }
        )
        conversion.append({
            "what": f"break-even passes ({which}): tiling / (TorchGeo grid pass - ours pass)",
            "value": med([t / (g - u) if g > u else float("inf") for t, u, g in per])})  # fmt: skip
    raw = [
        {"repeat": r["repeat"], "contender": r["contender"], "pass": r["pass"],
         "patches": r["patches"], "s": r["seconds"],
         "patches/s": r["patches"] / r["seconds"], "load": r["load"]}
        for r in runs
    ]  # fmt: skip
    return {"contenders": contenders, "ratios": ratios, "conversion": conversion, "raw": raw}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--size", type=int, default=8192, help="AOI side, px (default 8192)")
    ap.add_argument("--patch", type=int, default=256, help="patch side, px (default 256)")
    ap.add_argument("--n", type=int, default=300, help="patches per pass of the slow readers")
    ap.add_argument("--budget", type=float, default=30.0, help="seconds per pass at most")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats (default 3)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=8, help="patches per batch (ours)")
    ap.add_argument("--only", nargs="*", help="run only these contenders")
    ap.add_argument("--setup-torchgeo", action="store_true", help="create the TorchGeo venv")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--embeddings", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--dsm", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker == "tiling":  # the one-off conversion, timed, into a scratch store
        t0 = time.perf_counter()
        c.tile_store({"embeddings": a.embeddings, "dsm": a.dsm}, a.store, a.patch)
        print(json.dumps({"pass": "once", "patches": 1, "seconds": time.perf_counter() - t0}))
        return
    if a.worker:
        for r in worker(a.worker, a):
            print(json.dumps(r), flush=True)
        return
    if a.setup_torchgeo:
        setup_torchgeo()
        return

    from aefheight.tiles.store import PatchStore

    paths = c.make_aoi(a.size, a.size, f"aoi_{a.size}")
    store_dir = paths["embeddings"].parent / f"store{a.patch}"
    if not (store_dir / "index.parquet").exists():
        c.tile_store(paths, store_dir, a.patch)
    n_store = len(PatchStore(*c.store_files(store_dir)))
    store_files = list(c.store_files(store_dir))
    tif_files = [paths["embeddings"], paths["dsm"]]
    scratch = paths["embeddings"].parent / "tiling_scratch"
    me = [sys.executable, __file__, "--patch", str(a.patch), "--n", str(a.n)]
    me += ["--budget", str(a.budget), "--seed", str(a.seed), "--batch", str(a.batch)]
    me += ["--embeddings", str(paths["embeddings"]), "--dsm", str(paths["dsm"])]
    ours = [*me, "--store", str(store_dir)]
    tg_py = TORCHGEO_VENV / "bin" / "python"
    tg = [str(tg_py), str(c.ROOT / "benchmarks" / "_torchgeo_reader.py")]
    tg += ["--embeddings", str(paths["embeddings"]), "--dsm", str(paths["dsm"])]
    tg += ["--patch", str(a.patch), "--n", str(a.n), "--budget", str(a.budget)]
    tg += ["--seed", str(a.seed)]
    contenders = {
        "ours float32": ([*ours, "--worker", "ours float32"], store_files),
        "torchgeo grid": ([*tg, "--sampler", "grid"], tif_files),
        "ours int8": ([*ours, "--worker", "ours int8"], store_files),
        "ours batch": ([*ours, "--worker", "ours batch"], store_files),
        "torchgeo random": ([*tg, "--sampler", "random"], tif_files),
        "memcpy": ([*ours, "--worker", "memcpy"], []),
        "disk": ([*ours, "--worker", "disk"], store_files),
        "rasterio random": ([*ours, "--worker", "rasterio random"], tif_files),
        "rasterio aligned": ([*ours, "--worker", "rasterio aligned"], tif_files),
        "tiling": ([*me, "--store", str(scratch), "--worker", "tiling"], tif_files),
    }
    if not tg_py.exists():
        c.log(f"no {TORCHGEO_VENV}: the TorchGeo rows are skipped (run --setup-torchgeo once)")
    todo = [n for n in contenders if (not a.only or n in a.only)]
    todo = [n for n in todo if tg_py.exists() or not n.startswith("torchgeo")]
    c.log(c.machine())
    c.log(f"AOI {a.size}x{a.size} px x 64 bands; {n_store} patches of {a.patch} px in the store")
    runs: list[dict] = []
    for k in range(a.repeats):
        for name in todo:
            cmd, files = contenders[name]
            shutil.rmtree(scratch, ignore_errors=True)
            out, load = run_child(cmd, files)
            shutil.rmtree(scratch, ignore_errors=True)
            for r in out:
                runs.append({**r, "repeat": k + 1, "contender": name, "load": load})
                c.log(f"repeat {k + 1} {name} {r['pass']}: {r['patches'] / r['seconds']:.3g}"
                      f"/s (load {load:.1f})")  # fmt: skip
    sizes = {
        "store": sum(f.stat().st_size for f in store_files) / 2**30,
        "tif": sum(f.stat().st_size for f in tif_files) / 2**30,
    }
    t = summarise(runs, n_store, sizes)
    print(f"\n## Patch sampling: {a.size}x{a.size} px x 64 bands, {a.patch} px patches")
    print(f"({c.machine()}; {a.repeats} interleaved repeats; median [min-max])\n")
    print("### Ratios (each taken within one repeat)\n")
    print(c.table(t["ratios"], ["rows", "ratio", "cold", "warm", "cold per repeat",
                                "warm per repeat"]))  # fmt: skip
    print("\n### The one-off conversion into the store\n")
    print(c.table(t["conversion"], ["what", "value", "load at start"]))
    print("\n### Contenders\n")
    print(c.table(t["contenders"], list(t["contenders"][0])))
    print("\n### Every run\n")
    print(c.table(t["raw"], list(t["raw"][0])))
    out = c.DATA / f"sampling_{a.size}_{a.patch}.json"
    out.write_text(json.dumps({"runs": runs, "sizes": sizes, **t}, indent=1))


if __name__ == "__main__":
    main()

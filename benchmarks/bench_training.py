"""Item 2: share of each training step spent waiting for data (real U-Net++, CPU).

Runs the pipeline's own ``aefheight.train.fit.fit_net`` (U-Net++ ResNet-18, 64 bands, AdamW,
augmentation on, the study's batch size) for one epoch on a patch store made by the ``tile``
step, and times from outside, without touching the training code: every ``next()`` on the
training DataLoader (reading, masking, collating int8 batches: the wait for data, since on the
CPU the loader runs in the training process), the batch augmentation, ``model_input`` (the
codes' de-quantization into the float32 channels-last input, inside the step), and the
validation pass (left out of the step time). Share = that time / training-loop time.

The reader compared in earlier runs (``before``: no batch prefetch, numpy's LUT through an
int16 copy) is gone from the code; its numbers stay in benchmarks/README.md.

Run:  nice -n 19 .venv/bin/python benchmarks/bench_training.py [--patch 128] [--steps 15]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import _common as c
import numpy as np


def prepare(a: argparse.Namespace) -> tuple[Path, Path, Path]:
    """A patch store (the tile step), a split with ``steps`` x batch train patches, its raster."""
    import geopandas as gpd
    import rasterio
    from aefheight.core.raster import Grid
    from aefheight.split.spatial import CODES

    n_train = a.steps * a.batch
    n = n_train + a.batch + 1  # + one validation batch + one test patch
    cols = max(8, int(np.ceil(np.sqrt(n * 1.6))))
    rows = -(-n // cols)
    w, h = cols * a.patch, rows * a.patch
    paths = c.make_aoi(w, h, f"aoi_{w}x{h}")
    store = paths["embeddings"].parent / f"store{a.patch}"
    if not (store / "index.parquet").exists():
        c.tile_store(paths, store, a.patch)
    index = gpd.read_parquet(store / "index.parquet")
    if len(index) < n:
        sys.exit(f"only {len(index)} patches; need {n}")
    split = np.array(["test"] * len(index), dtype=object)
    split[:n_train] = "train"
    split[n_train : n_train + a.batch] = "val"
    index["split"] = split
    gpkg = store.parent / f"split{a.patch}_{a.steps}x{a.batch}.gpkg"
    if not gpkg.exists():
        index.to_file(gpkg, driver="GPKG", layer="patches")
    tif = gpkg.with_suffix(".tif")
    if not tif.exists():
        with rasterio.open(paths["embeddings"]) as ds:
            grid = Grid.of(ds)
        lab = np.zeros((grid.height, grid.width), np.uint8)
        for r, col, p, name in index[["row", "col", "size", "split"]].itertuples(index=False):
            lab[r : r + p, col : col + p] = CODES[name]
        with rasterio.open(tif, "w", **grid.profile(1, "uint8", 0)) as dst:
            dst.write(lab, 1)
    return store, gpkg, tif


def run_variant(a: argparse.Namespace, store: Path, split: Path, tif: Path, out: Path) -> dict:
    import torch
    from aefheight.models.factory import ModelSettings
    from aefheight.train import fit as train

    t = {"wait": 0.0, "augment": 0.0, "input": 0.0, "validation": 0.0, "loop": 0.0, "steps": 0}
    in_eval = [False]
    base = torch.utils.data.DataLoader

    class TimedLoader(base):
        def __init__(self, *args, **kw):
            self.is_train = isinstance(kw.get("sampler"), list)  # train_net's train loader
            super().__init__(*args, **kw)

        def __iter__(self):
            it = super().__iter__()
            t_loop = time.perf_counter()
            while True:
                t0 = time.perf_counter()
                try:
                    batch = next(it)
                except StopIteration:
                    break
                if self.is_train:
                    t["wait"] += time.perf_counter() - t0
                    t["steps"] += 1
                yield batch
            if self.is_train:
                t["loop"] += time.perf_counter() - t_loop

    augment, evaluate, model_input = train.augment, train._evaluate, train.model_input

    def timed_augment(*args, **kw):
        t0 = time.perf_counter()
        r = augment(*args, **kw)
        t["augment"] += time.perf_counter() - t0
        return r

    def timed_evaluate(*args, **kw):
        t0 = time.perf_counter()
        in_eval[0] = True
        r = evaluate(*args, **kw)
        in_eval[0] = False
        t["validation"] += time.perf_counter() - t0
        return r

    def timed_model_input(*args, **kw):
        t0 = time.perf_counter()
        r = model_input(*args, **kw)
        if not in_eval[0]:
            t["input"] += time.perf_counter() - t0
        return r

    torch.utils.data.DataLoader = TimedLoader
    train.augment, train._evaluate = timed_augment, timed_evaluate
    train.model_input = timed_model_input
    ms = c.settings_of(ModelSettings, arch="unetplusplus")
    ts = c.settings_of(
        train.TrainSettings, max_epochs=1, patience=1, batch_size=a.batch, device="cpu"
    )
    t0 = time.perf_counter()
    train.fit_net(
        *c.store_files(store), split, tif, ms, ts, 0, "unetplusplus",
        out / "checkpoint.pt", out / "history.csv", out / "resume.pt", threads=a.threads,
        embeddings_path=store.parent / "embeddings.tif",
    )  # fmt: skip
    t["train_net"] = time.perf_counter() - t0
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--patch",
        type=int,
        default=128,
        help="patch side (128: the numbers in benchmarks/README.md)",
    )
    ap.add_argument("--batch", type=int, default=8, help="batch size (the study's 8)")
    ap.add_argument("--steps", type=int, default=15, help="training steps (one epoch)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variants", nargs="*", default=["after"], choices=["after"])
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    a = ap.parse_args()
    store, split, tif = prepare(a)
    if a.variant:
        out = c.DATA / f"train_{a.variant}"
        print(json.dumps(run_variant(a, store, split, tif, out)))
        return
    c.log(c.machine())
    rows = []
    for v in a.variants:
        cmd = [sys.executable, __file__, "--variant", v, "--patch", str(a.patch)]
        cmd += ["--batch", str(a.batch), "--steps", str(a.steps), "--threads", str(a.threads)]
        res = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)
        t = json.loads(res.stdout.strip().splitlines()[-1])
        rows.append(
            {
                "reader": v,
                "steps": t["steps"],
                "step s": t["loop"] / t["steps"],
                "data wait ms/step": 1000 * t["wait"] / t["steps"],
                "augment ms/step": 1000 * t["augment"] / t["steps"],
                "de-quantize ms/step": 1000 * t["input"] / t["steps"],
                "data wait share": f"{100 * t['wait'] / t['loop']:.2f} %",
                "wait+de-quantize share": f"{100 * (t['wait'] + t['input']) / t['loop']:.2f} %",
                "wait+augment+de-quantize share": (
                    f"{100 * (t['wait'] + t['augment'] + t['input']) / t['loop']:.2f} %"
                ),
                "validation s": t["validation"],
            }
        )
        c.log(rows[-1])
    print(f"\n## Training input: U-Net++ on CPU, {a.patch} px patches, batch {a.batch}")
    print(f"({c.machine()}; {a.threads} torch threads, DataLoader in-process as on CPU)\n")
    print(c.table(rows, list(rows[0])))
    print("\ngoal: data wait share <= 5 %")


if __name__ == "__main__":
    main()

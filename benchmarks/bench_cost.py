"""Item 8: what a study costs: measured throughput per step, scaled to the paper's AOI, the region
and France.

Measures on this machine (``--threads`` CPU threads; no GPU here) with the paper's settings
(``config/paper.yaml``: 512 px patches; prediction window 512, overlap 128, batch 4):

* ``tile``: ``aefheight.tiles.patches.cut_patches`` (the rule's function) on a mirrored
  benchmark AOI, in its own process, start-up included: AOI px/s.
* ``train``: AdamW steps of U-Net and U-Net++ (ResNet-18, 64 bands, batch 8 of 512^2 px,
  channels-last and bf16 where the CPU has it, as ``train.py``; the first step is dropped):
  patch px per second, i.e. px-epochs/s.
* ``predict``: ``python -m aefheight predict`` (the rule's command) with random weights (the
  same cost as trained ones) for U-Net, U-Net++ and the Ridge: AOI px/s, start-up included.

and scales them linearly in pixels (every step is per pixel or per patch) to the three AOIs.
Training hours are per model and seed, for the train share of the AOI (60 %) and a number of
epochs (``--epochs``: the config's cap is 40; early stopping usually ends sooner). Evaluation
is not timed here: item 4's large run gives its rate. Download and disk volumes follow from
the formats: AEF int8 x 64 bands, 64 B/px uncompressed; our GeoTIFFs and the store per pixel
as measured on the benchmark AOI (synthetic embeddings: real ones compress differently).

Run:  .venv/bin/python benchmarks/bench_cost.py [--threads 2] [--epochs 40]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import _common as c

AOIS = {  # name -> pixels at 10 m
    "paper AOI (7,865 km2)": 7865e6 / 100,
    "Nouvelle-Aquitaine (84,000 km2)": 84000e6 / 100,
    "France (551,000 km2)": 551000e6 / 100,
}
TRAIN_SHARE = 0.6  # the split's train fraction (config/paper.yaml)
PREDICT = {"window": 512, "overlap": 128, "batch_size": 4, "device": "cpu"}


def tile_rate(size: int) -> tuple[float, dict[str, float]]:
    """AOI px/s of tiling, and bytes per AOI pixel of the GeoTIFFs and of the store."""
    import shutil

    paths = c.make_aoi(size, size, f"aoi_{size}")
    out = c.DATA / "cost_store"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    code = c.tile_code(paths, out, patch=512)
    wall, _, _ = c.run_measured([sys.executable, "-c", code], env={**os.environ})
    px = size * size
    per_px = {
        "embeddings.tif": paths["embeddings"].stat().st_size / px,
        "dsm.tif": paths["dsm"].stat().st_size / px,
        "patch store": sum(f.stat().st_size for f in c.store_files(out)) / px,
    }
    shutil.rmtree(out, ignore_errors=True)
    return px / wall, per_px


def train_rates(threads: int, steps: int) -> dict[str, float]:
    """Patch px per second of an AdamW step at 512 px, batch 8, per architecture."""
    import torch
    from bench_train_step import make, step

    torch.set_num_threads(threads)
    bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    x = torch.randn(8, 64, 512, 512).contiguous(memory_format=torch.channels_last)
    y = torch.randn(8, 1, 512, 512)
    rates = {}
    for arch in ("unet", "unetplusplus"):
        model, opt = make(arch, channels_last=True)
        times = []
        for i in range(steps + 1):
            t0 = time.perf_counter()
            step(model, opt, x, y, bf16)
            if i:  # the first step warms up
                times.append(time.perf_counter() - t0)
        rates[arch] = 8 * 512 * 512 / statistics.median(times)
        c.log(f"train {arch}: {statistics.median(times):.2f} s per step of 8 x 512^2")
    return rates


def predict_rates(size: int, threads: int) -> dict[str, float]:
    """AOI px/s of the predict command per model (random weights)."""
    from bench_predict import make_checkpoint

    paths = c.make_aoi(size, size, f"aoi_{size}")
    env = {**os.environ, "PYTHONPATH": str(c.ROOT / "workflow")}
    rates = {}
    for arch in ("unet", "unetplusplus", "ridge"):
        ckpt = make_checkpoint(arch, c.DATA / f"{arch}_random.pt", PREDICT["window"])
        out = c.DATA / "cost_pred.tif"
        cmd = [sys.executable, "-m", "aefheight", "predict", "--settings", json.dumps(PREDICT)]
        cmd += ["--model", arch, "--seed", "0", "--embeddings", str(paths["embeddings"])]
        cmd += ["--checkpoint", str(ckpt), "--prediction", str(out), "--threads", str(threads)]
        wall, _, _ = c.run_measured(cmd, env=env)
        out.unlink(missing_ok=True)
        rates[arch] = size * size / wall
        c.log(f"predict {arch}: {wall:.1f} s for {size}^2 px")
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=40, help="training epochs assumed (cap: 40)")
    ap.add_argument("--tile-size", type=int, default=4096, help="AOI side for tiling, px")
    ap.add_argument("--predict-size", type=int, default=2048, help="AOI side for predict, px")
    ap.add_argument("--steps", type=int, default=3, help="timed training steps per net")
    a = ap.parse_args()
    c.log(c.machine())
    tile_px_s, per_px = tile_rate(a.tile_size)
    train = train_rates(a.threads, a.steps)
    predict = predict_rates(a.predict_size, a.threads)
    rates = [{"step": "tile", "px/s": tile_px_s, "unit": "AOI px"}]
    rates += [
        {"step": f"train {k}", "px/s": v, "unit": "patch px x epochs"} for k, v in train.items()
    ]
    rates += [{"step": f"predict {k}", "px/s": v, "unit": "AOI px"} for k, v in predict.items()]
    print(f"\n## Measured throughput ({c.machine()}; {a.threads} threads, CPU)\n")
    print(c.table(rates, ["step", "px/s", "unit"]))
    rows = []
    for name, px in AOIS.items():
        row = {"AOI": name, "M px": px / 1e6, "tile h": px / tile_px_s / 3600}
        for k, v in train.items():
            row[f"train {k} h"] = px * TRAIN_SHARE * a.epochs / v / 3600
        for k, v in predict.items():
            row[f"predict {k} h"] = px / v / 3600
        row["AEF download GB (int8, uncompressed)"] = px * 64 / 1e9
        for k, v in per_px.items():
            row[f"{k} GB"] = px * v / 1e9
        rows.append(row)
    print(f"\n## Scaled to whole AOIs (CPU hours on {a.threads} threads; train: per model and "
          f"seed, {TRAIN_SHARE:.0%} of the AOI x {a.epochs} epochs)\n")  # fmt: skip
    print(c.table(rows, list(rows[0])))


if __name__ == "__main__":
    main()

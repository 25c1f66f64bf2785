"""Item 3: whole-AOI prediction: overhead over pure model time, and peak memory vs AOI size.

Part ``overhead`` (real U-Net++, ResNet-18, 64 bands; random weights, same cost): times
``predict_raster`` (read, de-quantize, forward, blend, stream, COG) against the model's forward
alone on exactly the same window batches, already in memory as float32 tensors. The two
alternate (forward, predict, forward, predict, ...) and the ratio of the fastest of each is
printed, so load from other processes inflates neither side alone. One predict run is profiled
with cProfile; the time outside the model is broken down.

Part ``memory``: peak RSS of the real ``python -m aefheight predict`` command (the rule's) at
2k^2, 4k^2 and 8k^2 px AOIs x 64 bands, with the cheap stand-in model of the study, the
pixel-wise Ridge (a 1x1 convolution), so that the sweep ends in minutes; against the common
approach of MONAI's ``sliding_window_inference``: the same windows, weights and model, but
the output and the weight canvases held whole in memory (float32, AOI-sized) and written at
the end. Each run is its own process; its peak RSS comes from ``wait4`` (through a small
launcher, see ``_common.run_measured``). Window 512 / overlap 64 / batch 2 (the large config's)
by default, so that the 8k^2 AOI takes minutes.

Run:  nice -n 19 .venv/bin/python benchmarks/bench_predict.py [--part overhead|memory|both]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import statistics
import sys
import time
from pathlib import Path

import _common as c
import numpy as np

os.environ.setdefault("GDAL_CACHEMAX", "256")  # as `python -m aefheight` sets it for every step


def make_checkpoint(arch: str, path: Path, patch: int) -> Path:
    """A checkpoint with random weights (the same cost as trained ones), as train.py writes it."""
    import torch
    from aefheight.models.factory import ModelSettings, build_model, save_checkpoint

    torch.manual_seed(0)
    ms = c.settings_of(ModelSettings, arch=arch)
    save_checkpoint(path, build_model(ms, 64), ms, 60.0, 25.0, ("aef", 64), patch_size=patch)
    return path


def window_batches(emb: Path, s) -> list:
    """Every window batch of predict_raster, read and de-quantized (float32 tensors)."""
    import rasterio
    import torch
    from aefheight.core import aef
    from aefheight.core.raster import window_origins
    from rasterio.windows import Window

    out = []
    with rasterio.open(emb) as src:
        h, w = src.height, src.width
        stride = s.window - s.overlap
        rows, cols = window_origins(h, s.window, stride), window_origins(w, s.window, stride)
        for r0 in rows:
            for i in range(0, len(cols), s.batch_size):
                codes = np.stack(
                    [
                        src.read(
                            window=Window(c0, r0, s.window, s.window),
                            boundless=r0 + s.window > h or c0 + s.window > w,
                            fill_value=aef.NODATA,
                        )
                        for c0 in cols[i : i + s.batch_size]
                    ]
                )
                out.append(torch.from_numpy(aef.dequantize(codes, nodata_value=0.0)))
    return out


def part_overhead(a: argparse.Namespace) -> dict:
    import torch
    from aefheight.models.factory import load_checkpoint
    from aefheight.predict.infer import PredictSettings, predict_raster

    torch.set_num_threads(a.threads)
    paths = c.make_aoi(a.overhead_size, a.overhead_size, f"aoi_{a.overhead_size}")
    ckpt = make_checkpoint("unetplusplus", c.DATA / "unetplusplus_random.pt", 256)
    s = c.settings_of(PredictSettings, window=256, overlap=64, batch_size=4)  # the study's config
    batches = window_batches(paths["embeddings"], s)
    model, _ = load_checkpoint(ckpt)
    out = c.DATA / "overhead_pred.tif"

    def forward() -> float:
        t0 = time.perf_counter()
        with torch.no_grad():
            for x in batches:
                model(x)
        return time.perf_counter() - t0

    import aefheight.predict.infer as predict_module

    inside = []  # forward seconds inside each predict run: the same run, the same load

    class TimedModel(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            t0 = time.perf_counter()
            y = self.m(x)
            inside[-1] += time.perf_counter() - t0
            return y

    def timed_load(*args, **kw):
        m, ck = load_checkpoint(*args, **kw)
        return TimedModel(m), ck

    predict_module.load_checkpoint = timed_load

    def predict(profile: bool = False) -> float:
        prof = cProfile.Profile() if profile else None
        inside.append(0.0)
        t0 = time.perf_counter()
        if prof:
            prof.enable()
        predict_raster(paths["embeddings"], ckpt, out, s, threads=a.threads)
        if prof:
            prof.disable()
        dt = time.perf_counter() - t0
        if prof:
            prof.dump_stats(c.DATA / "predict.prof")
        return dt

    fwd, pred = [], []
    forward()  # warm-up (allocator, oneDNN primitives)
    for rep in range(a.reps):
        fwd.append(forward())
        pred.append(predict(profile=rep == a.reps - 1))
        c.log(f"rep {rep}: forward {fwd[-1]:.1f} s, predict {pred[-1]:.1f} s ({inside[-1]:.1f})")
    windows = sum(x.shape[0] for x in batches)
    res = {
        "aoi_px": a.overhead_size,
        "windows": windows,
        "forward_s": fwd,
        "predict_s": pred,
        "forward_inside_s": inside,
        "ratio_inside": [p / f for p, f in zip(pred, inside, strict=True)],
        "ratio_min": min(pred) / min(fwd),
        "ratio_median": statistics.median(pred) / statistics.median(fwd),
        "profile": profile_summary(c.DATA / "predict.prof"),
    }
    return res


def profile_summary(path: Path) -> dict[str, float]:
    """Seconds (cumulative) of the parts of predict_raster, from its cProfile."""
    st = pstats.Stats(str(path))
    parts = {
        "total predict_raster": ("predict.py", "predict_raster"),
        "model forward (Module._call_impl)": ("module.py", "_call_impl"),
        "window reads (rasterio read)": ("raster.py", "read_checked"),
        "de-quantize": ("aef.py", "dequantize"),
        "write strips (flush)": ("predict.py", "flush"),
        "COG copy (to_cog)": ("raster.py", "to_cog"),
        "load checkpoint": ("models.py", "load_checkpoint"),
    }
    out = {}
    for label, (file, func) in parts.items():
        cum = [v[3] for k, v in st.stats.items() if k[0].endswith(file) and k[2] == func]
        out[label] = max(cum) if cum else 0.0  # the outermost call (recursion counts once)
    return out


# --- memory sweep -------------------------------------------------------------------------


def canvas_predict(emb: Path, ckpt: Path, out: Path, window: int, overlap: int, batch: int):
    """MONAI sliding_window_inference style: whole-AOI output and weight canvases in RAM."""
    import rasterio
    import torch
    from aefheight.core import aef
    from aefheight.core.raster import Grid, window_origins
    from aefheight.models.factory import load_checkpoint
    from aefheight.predict import PRED_NODATA
    from aefheight.predict.infer import blend_weights
    from rasterio.windows import Window

    torch.set_num_threads(1)
    model, ck = load_checkpoint(ckpt)
    wts = blend_weights(window)
    with rasterio.open(emb) as src:
        grid = Grid.of(src)
        h, w = grid.height, grid.width
        acc = np.zeros((h, w), np.float32)  # the AOI-sized canvases
        wsum = np.zeros((h, w), np.float32)
        stride = window - overlap
        rows, cols = window_origins(h, window, stride), window_origins(w, window, stride)
        for r0 in rows:
            for i in range(0, len(cols), batch):
                bc = cols[i : i + batch]
                codes = np.stack([src.read(window=Window(c0, r0, window, window)) for c0 in bc])
                valid = aef.valid_mask(codes, axis=1)
                x = torch.from_numpy(aef.dequantize(codes, nodata_value=0.0))
                with torch.no_grad():
                    pred = model(x)[:, 0].numpy() * ck["target_std"] + ck["target_mean"]
                for k, c0 in enumerate(bc):
                    wk = wts * valid[k]
                    acc[r0 : r0 + window, c0 : c0 + window] += pred[k] * wk
                    wsum[r0 : r0 + window, c0 : c0 + window] += wk
    res = np.full((h, w), PRED_NODATA, np.float32)
    np.divide(acc, wsum, out=res, where=wsum > 0)
    with rasterio.open(out, "w", **grid.profile(1, "float32", PRED_NODATA)) as dst:
        dst.write(res, 1)


def part_memory(a: argparse.Namespace) -> list[dict]:
    ckpt = make_checkpoint("ridge", c.DATA / "ridge_random.pt", a.window)
    settings = {"window": a.window, "overlap": a.overlap, "batch_size": a.batch, "device": "cpu"}
    env = {**os.environ, "PYTHONPATH": str(c.ROOT / "workflow"), "OMP_NUM_THREADS": "1"}
    rows = []
    for size in a.sizes:
        paths = c.make_aoi(size, size, f"aoi_{size}")
        row = {"AOI px": f"{size}^2", "Mpx": size * size / 1e6}
        for name in ("streamed (ours)", "canvas (MONAI style)"):
            out = c.DATA / f"mem_pred_{size}.tif"
            if name.startswith("streamed"):
                cmd = [sys.executable, "-m", "aefheight", "predict"]  # the rule's command
                cmd += ["--settings", json.dumps(settings), "--model", "ridge", "--seed", "0"]
                cmd += ["--embeddings", str(paths["embeddings"]), "--checkpoint", str(ckpt)]
                cmd += ["--prediction", str(out), "--threads", "1"]
            else:
                cmd = [sys.executable, __file__, "--canvas-worker", str(paths["embeddings"])]
                cmd += [str(ckpt), str(out), "--window", str(a.window), "--overlap", str(a.overlap)]
                cmd += ["--batch", str(a.batch)]
            wall, rss, _ = c.run_measured(cmd, env=env)
            out.unlink(missing_ok=True)
            row[f"{name} peak RSS MiB"] = rss
            row[f"{name} s"] = wall
            c.log(f"{size}^2 {name}: {rss:.0f} MiB, {wall:.0f} s")
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--part", choices=["overhead", "memory", "both"], default="both")
    ap.add_argument("--overhead-size", type=int, default=1024, help="AOI side for the ratio")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sizes", type=int, nargs="*", default=[2048, 4096, 8192])
    ap.add_argument("--window", type=int, default=512, help="memory sweep: window px")
    ap.add_argument("--overlap", type=int, default=64, help="memory sweep: overlap px")
    ap.add_argument("--batch", type=int, default=2, help="memory sweep: windows per batch")
    ap.add_argument("--canvas-worker", nargs=3, type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.canvas_worker:
        canvas_predict(*a.canvas_worker, window=a.window, overlap=a.overlap, batch=a.batch)
        return
    c.log(c.machine())
    report = {}
    if a.part in ("overhead", "both"):
        r = part_overhead(a)
        report["overhead"] = r
        print(f"\n## Prediction overhead: {r['aoi_px']}^2 px AOI, {r['windows']} windows of 256 px")
        print(f"({c.machine()}; U-Net++ ResNet-18, {a.threads} threads)\n")
        rows = [
            {
                "run": i,
                "forward alone s": f,
                "predict s": p,
                "predict / forward alone": p / f,
                "forward inside predict s": fi,
                "predict / forward inside": p / fi,
            }
            for i, (f, p, fi) in enumerate(
                zip(r["forward_s"], r["predict_s"], r["forward_inside_s"], strict=True)
            )
        ]
        print(c.table(rows, list(rows[0])))
        ins = statistics.median(r["ratio_inside"])
        print(
            f"\npredict / pure forward: {ins:.3f}x (median, forward timed inside the same run); "
            f"{r['ratio_min']:.3f}x (fastest of each), {r['ratio_median']:.3f}x (medians) "
            "against separate forward-only runs; goal <= 1.15x"
        )
        prof = r["profile"]
        total = prof["total predict_raster"]
        print("\ncProfile of the last predict run (cumulative seconds, share of predict_raster):\n")
        print(
            c.table(
                [{"part": k, "s": v, "share": f"{100 * v / total:.1f} %"} for k, v in prof.items()],
                ["part", "s", "share"],
            )
        )
    if a.part in ("memory", "both"):
        rows = part_memory(a)
        report["memory"] = rows
        print(
            "\n## Prediction peak RSS vs AOI size (Ridge 1x1 conv stand-in, "
            f"window {a.window}, overlap {a.overlap}, batch {a.batch})"
        )
        print(f"({c.machine()})\n")
        cols = list(rows[0])
        print(c.table(rows, cols))
        for name in ("streamed (ours)", "canvas (MONAI style)"):
            k = f"{name} peak RSS MiB"
            print(f"{name}: peak RSS x{rows[-1][k] / rows[0][k]:.2f} from smallest to largest AOI")
        print("(goal for ours: <= 1.3x)")
    (c.DATA / "predict.json").write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()

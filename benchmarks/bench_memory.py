"""Peak memory of the AOI-sized steps against the AOI's size (issue: flat memory in every step).

Each step runs in a fresh process (``_common.run_measured``: peak RSS from ``wait4`` through a
small launcher) on AOIs of growing size, with ``GDAL_CACHEMAX=256`` as ``python -m aefheight``
sets it; the ratio is taken against the smallest AOI of the same invocation:

* ``tile``: ``aefheight.tiles.patches.cut_patches`` (the rule's function) on the mirrored
  benchmark AOIs
  (``_common.make_aoi``), 256 px patches, into a scratch store.
* ``predict (Ridge)``: ``aefheight.predict.infer.predict_raster`` (the rule's function) with a
  Ridge checkpoint, the cheap stand-in for the nets (the memory of prediction is its window
  rows and the COG copy, not the model), 256 px windows, 2 threads.
* ``evaluate``: ``aefheight.evaluate.metrics.evaluate_prediction`` (the rule's function:
  per-block partial
  statistics folded in order, as ``merge_evaluation`` folds a sharded AOI's) of the DSM against
  itself with a 60/10/30 % train/val/test label raster made once per AOI.
* ``synthesize``: ``aefheight.inputs.synthetic.write_synthetic`` (the rule's function) at the demo's
  settings but the given size; it streams tile by tile.

Prediction with a U-Net++ has its own sweep (``bench_predict.py --part memory``).

Run:  .venv/bin/python benchmarks/bench_memory.py [--sizes 2048 4096 8192] [--synth 1024 2048 4096]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import _common as c

SYNTH = """
import sys
from pathlib import Path
sys.path.insert(0, {workflow!r})
from pathlib import Path
from aefheight.core.schema import make
from aefheight.inputs.synthetic import SyntheticSettings, write_synthetic
out = Path({out!r})
s = make(SyntheticSettings, width={size}, height={size})
write_synthetic(s, out / "e.tif", out / "d.tif", out / "lc.tif", out / "dem.tif")
"""


PREDICT = """
import sys
from pathlib import Path
sys.path.insert(0, {workflow!r})
sys.path.insert(0, {benchmarks!r})
from pathlib import Path
from aefheight.predict.infer import PredictSettings, predict_raster
from aefheight.core.schema import make
from bench_predict import make_checkpoint
out = Path({out!r})
ckpt = make_checkpoint("ridge", out / "ridge.pt", 256)
s = make(PredictSettings, window=256, overlap=64, batch_size=4)
predict_raster(Path({emb!r}), ckpt, out / "pred.tif", s, threads=2)
"""

EVALUATE = """
import sys
from pathlib import Path
sys.path.insert(0, {workflow!r})
from pathlib import Path
from aefheight.evaluate.metrics import evaluate_prediction
evaluate_prediction(Path({dsm!r}), Path({dsm!r}), Path({split!r}))
"""


def split_raster(paths: dict, size: int) -> Path:
    """A 60/10/30 % train/val/test label raster along x on the AOI's grid (made once)."""
    import numpy as np
    import rasterio
    from aefheight.core.names import CODES

    out = paths["dsm"].parent / "split.tif"
    if out.exists():
        return out
    with rasterio.open(paths["dsm"]) as ds:
        prof = {**ds.profile, "dtype": "uint8", "nodata": 0, "count": 1}
    row = np.full(size, CODES["train"], np.uint8)
    row[int(0.6 * size) : int(0.7 * size)], row[int(0.7 * size) :] = CODES["val"], CODES["test"]
    tmp = out.with_suffix(".tmp.tif")
    with rasterio.open(tmp, "w", **prof) as dst:
        for r0 in range(0, size, 256):
            n = min(256, size - r0)
            dst.write(np.broadcast_to(row, (n, size)), 1, window=((r0, r0 + n), (0, size)))
    tmp.rename(out)
    return out


def measure(step: str, code: str, size: int, out) -> dict:
    """Run one step in its own process; its wall time and peak RSS."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    env = {**os.environ, "GDAL_CACHEMAX": "256", "OMP_NUM_THREADS": "2"}
    load = os.getloadavg()[0]
    wall, rss, _ = c.run_measured([sys.executable, "-c", code], env=env)
    shutil.rmtree(out, ignore_errors=True)
    row = {"step": step, "AOI px": f"{size}^2", "Mpx": size * size / 1e6, "peak RSS MiB": rss}
    c.log(row | {"s": wall})
    return row | {"s": wall, "load at start": load}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="*", default=[2048, 4096, 8192])
    ap.add_argument("--synth", type=int, nargs="*", default=[1024, 2048, 4096])
    a = ap.parse_args()
    c.log(c.machine())
    workflow = str(c.ROOT / "workflow")
    scratch = c.DATA / "memory_scratch"
    rows = []
    benchmarks = str(c.ROOT / "benchmarks")
    for size in a.sizes:
        paths = c.make_aoi(size, size, f"aoi_{size}")
        code = c.tile_code(paths, scratch, patch=256)
        rows.append(measure("tile", code, size, scratch))
        emb, out = str(paths["embeddings"]), str(scratch)
        code = PREDICT.format(workflow=workflow, benchmarks=benchmarks, out=out, emb=emb)
        rows.append(measure("predict (Ridge)", code, size, scratch))
        split = str(split_raster(paths, size))
        code = EVALUATE.format(workflow=workflow, dsm=str(paths["dsm"]), split=split)
        rows.append(measure("evaluate", code, size, scratch))
    for size in a.synth:
        code = SYNTH.format(workflow=workflow, out=str(scratch), size=size)
        rows.append(measure("synthesize", code, size, scratch))
    for r in rows:
        first = next(q for q in rows if q["step"] == r["step"])
        r["RSS / smallest"] = r["peak RSS MiB"] / first["peak RSS MiB"]
        r["px / smallest"] = r["Mpx"] / first["Mpx"]
    print(f"\n## Peak RSS against AOI size ({c.machine()})\n")
    print(c.table(rows, ["step", "AOI px", "Mpx", "peak RSS MiB", "RSS / smallest",
                         "px / smallest", "s", "load at start"]))  # fmt: skip


if __name__ == "__main__":
    main()

"""Whole-AOI prediction: overlapping sliding windows, smooth blending, streamed to a COG.

Windows are processed one window row at a time. Their weighted predictions accumulate in a
strip as tall as one window; rows no later window can reach are written out at once, so memory
is bounded by the window size times the AOI width, never by the AOI area. Blending weights are
a separable squared sine (Hann) that is positive everywhere, so every pixel's weights sum to a
positive number and overlapping windows fade into each other without seams.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import rasterio
import torch
from rasterio.windows import Window
from tqdm import tqdm

from aefheight.core import embeddings
from aefheight.core.dem import DemUse, dem_channel
from aefheight.core.errors import ConfigError
from aefheight.core.files import atomic_path, scratch_path
from aefheight.core.raster import (
    Grid,
    check_same_grid,
    open_raster,
    read_checked,
    to_cog,
    window_origins,
)
from aefheight.core.steps import step
from aefheight.inputs.shards import ShardingSettings, shard_of
from aefheight.models.factory import check_embeddings, load_checkpoint, pick_device
from aefheight.predict import PRED_NODATA

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PredictSettings:
    """Settings of whole-AOI prediction (config ``prediction``)."""

    SECTION: ClassVar[str] = "prediction"
    window: int | None  # px; None = the patch size the model was trained on
    overlap: int | None  # px; None = a quarter of the window
    batch_size: int
    device: str

    def check(self, section: str) -> None:
        """Cross-field rule: the overlap is smaller than the window."""
        if self.overlap is not None and self.window is not None and self.overlap >= self.window:
            raise ConfigError(f"{section}.overlap must be in [0, window)")

    def resolve(self, patch_size: int) -> tuple[int, int]:
        """(window, overlap) in px for a model trained on ``patch_size`` px patches.

        The default overlap is 5/8 of the window (windows every 3/8 of a window): a net's level
        depends on its window (its deepest features see all of it), and a multi-scale Ridge's
        box means do near the window's edges; with a quarter overlap both printed the window
        grid into the map, dense blending keeps it out (the seam check, README).
        """
        win = self.window or patch_size
        overlap = win - (3 * win) // 8 if self.overlap is None else self.overlap
        if overlap >= win:
            raise ConfigError(
                f"prediction.overlap {overlap} must be smaller than the window ({win} px)"
            )
        return win, overlap


def blend_weights(size: int) -> np.ndarray:
    """2-D blending weights: outer product of ``sin(pi (i + 0.5) / size) ** 2``; all > 0."""
    w = np.sin(np.pi * (np.arange(size) + 0.5) / size) ** 2
    return np.outer(w, w).astype(np.float32)


@dataclass
class _Model:
    """A checkpoint's model, its target scaling and windows, and how it uses the coarse DEM."""

    net: torch.nn.Module
    mean: float
    std: float
    patch: int
    win: int
    overlap: int
    dem: DemUse | None
    embeddings: tuple[str, int]  # (product, bands) trained on


def _load_model(checkpoint_path: Path, s: PredictSettings, device: torch.device) -> _Model:
    model, ckpt = load_checkpoint(checkpoint_path, device=str(device))
    patch = int(ckpt["patch_size"])
    win, overlap = s.resolve(patch)
    if win != patch:
        log.warning(
            "prediction.window %d px differs from the %d px patches this model was trained on: "
            "window centres lie farther from an edge than any training pixel (see the seam "
            "check in the report)",
            win,
            patch,
        )
    ms = ckpt["settings"]
    dem = None
    if ms.get("dem_channel") or ms.get("target") == "residual":
        sd = float(ckpt.get("dem_relief_sd", 1.0))
        dem = DemUse(bool(ms.get("dem_channel")), ms.get("target") == "residual", sd)
    trained = (str(ckpt["embedding_product"]), int(ckpt["embedding_bands"]))
    return _Model(model, ckpt["target_mean"], ckpt["target_std"], patch, win, overlap, dem, trained)


class _Rows:
    """Weighted sums of the window predictions over ``win`` rows, written out as they finish.

    The buffer spans AOI columns ``cols``; only the pixels inside ``out`` (the AOI, or a shard)
    are written, to ``dst`` whose first pixel is ``out``'s.
    """

    def __init__(self, win: int, cols: tuple[int, int], out: Window, first_row: int) -> None:
        self.c0, self.out = cols[0], out
        self.acc = np.zeros((win, cols[1] - cols[0]), np.float32)  # weighted sum of predictions
        self.wsum = np.zeros_like(self.acc)  # sum of weights of valid pixels
        self.base = first_row  # AOI row of acc[0]

    def add(self, r0: int, c0: int, pred: np.ndarray, weight: np.ndarray) -> None:
        h, w = pred.shape
        r, c = r0 - self.base, c0 - self.c0
        self.acc[r : r + h, c : c + w] += pred * weight
        self.wsum[r : r + h, c : c + w] += weight

    def flush(self, dst: rasterio.io.DatasetWriter, upto: int) -> None:
        """Write the rows above ``upto`` (no later window reaches them) and shift the buffer."""
        n = upto - self.base
        if n <= 0:
            return
        (o0, o1), (oc0, oc1) = self.out.toranges()
        lo, hi = max(self.base, o0), min(upto, o1)
        if hi > lo:
            rows, cols = slice(lo - self.base, hi - self.base), slice(oc0 - self.c0, oc1 - self.c0)
            acc, wsum = self.acc[rows, cols], self.wsum[rows, cols]
            out = np.full(acc.shape, PRED_NODATA, np.float32)
            ok = wsum > 0
            out[ok] = acc[ok] / wsum[ok]
            dst.write(out, 1, window=Window(0, lo - o0, oc1 - oc0, hi - lo))
        width = self.acc.shape[1]
        self.acc = np.concatenate([self.acc[n:], np.zeros((n, width), np.float32)])
        self.wsum = np.concatenate([self.wsum[n:], np.zeros((n, width), np.float32)])
        self.base = upto


def _read_windows(
    src: rasterio.io.DatasetReader, r0: int, cols: list[int], win: int, fill: float
) -> np.ndarray:
    """The ``win`` px windows at row ``r0`` and columns ``cols``, stacked (boundless past edges)."""
    return np.stack(
        [
            read_checked(
                src,
                Window(c0, r0, win, win),
                fill_value=fill,
                boundless=r0 + win > src.height or c0 + win > src.width,
            )
            for c0 in cols
        ]
    )


def _predict_windows(
    m: _Model,
    src: rasterio.io.DatasetReader,
    coarse: rasterio.io.DatasetReader | None,
    r0: int,
    cols: list[int],
    device: torch.device,
) -> tuple[np.ndarray, np.ndarray]:
    """Predicted heights (m) and validity of the windows at row ``r0``, columns ``cols``."""
    codes = _read_windows(src, r0, cols, m.win, embeddings.nodata(src.dtypes[0]))
    valid = embeddings.valid_mask(codes, axis=1)
    x = embeddings.dequantize(codes, nodata_value=0.0)
    base: np.ndarray | np.float32 = np.float32(0.0)
    if m.dem is not None and coarse is not None:
        c = _read_windows(coarse, r0, cols, m.win, np.nan)[:, 0].astype(np.float32)
        if coarse.nodata is not None:
            c[c == coarse.nodata] = np.nan
        valid &= ~np.isnan(c)
        if m.dem.channel:
            x = np.concatenate([x, np.stack([dem_channel(w, m.dem) for w in c])], axis=1)
        if m.dem.residual:
            base = np.nan_to_num(c)
    with torch.no_grad():
        out = m.net(torch.from_numpy(x).to(device))[:, 0].float().cpu().numpy()
    return out * m.std + m.mean + base, valid


def predict_raster(
    embeddings_path: Path,
    checkpoint_path: Path,
    out_path: Path,
    s: PredictSettings,
    threads: int = 1,
    meta: dict[str, str] | None = None,
    coarse_dem_path: Path | None = None,
    window: Window | None = None,
) -> None:
    """Predict heights over the whole embedding raster into a float32 COG (nodata -9999).

    Windows of the training patch size (by default) overlap by ``overlap`` px and are blended
    with :func:`blend_weights`; rows are written as soon as no later window reaches them, so
    memory stays one window row deep at any AOI size. A model trained with the coarse DEM
    (``dem_channel`` or ``target: residual``) reads ``coarse_dem_path`` window by window too.
    With ``window`` (a shard), only its pixels, into a tiled GeoTIFF on its part of the grid:
    the same values as the whole AOI's prediction there (:func:`~aefheight.core.raster.mosaic_cog`
    assembles the shards).
    """
    torch.set_num_threads(max(1, threads))
    device = pick_device(s.device, "prediction.device")
    m = _load_model(checkpoint_path, s, device)
    if m.dem is not None and coarse_dem_path is None:
        raise ConfigError(f"{checkpoint_path} was trained with the coarse DEM: pass --coarse-dem")
    with contextlib.ExitStack() as stack:
        src = stack.enter_context(embeddings.open_embeddings(embeddings_path))
        check_embeddings(m.embeddings, src, checkpoint_path)
        grid = Grid.of(src)
        coarse = None
        if m.dem is not None and coarse_dem_path is not None:
            coarse = stack.enter_context(open_raster(coarse_dem_path, bands=1))
            check_same_grid(grid, Grid.of(coarse), str(embeddings_path), str(coarse_dem_path))
        out = window or Window(0, 0, grid.width, grid.height)
        # the whole AOI: a plain tiled GeoTIFF first (written in strips), then copied into a COG
        tmp = stack.enter_context(
            atomic_path(out_path) if window else scratch_path(out_path, ".tif")
        )
        with rasterio.open(tmp, "w", **grid.part(out).profile(1, "float32", PRED_NODATA)) as dst:
            n = _predict_rows(m, src, coarse, dst, s.batch_size, device, out)
            dst.update_tags(**_tags(m, checkpoint_path), **(meta or {}))
            dst.set_band_description(1, "height_m")
        if window is None:
            to_cog(tmp, out_path)
    log.info("wrote %s (%dx%d px, %d windows)", out_path, out.width, out.height, n)


def _tags(m: _Model, checkpoint_path: Path) -> dict[str, str]:
    """What a prediction says about itself (the seam check reads the window layout)."""
    return {
        "units": "m",
        "quantity": "predicted surface height",
        "checkpoint": str(checkpoint_path),
        "window": str(m.win),
        "overlap": str(m.overlap),
        "train_patch_size": str(m.patch),
    }


def _layout(
    m: _Model, height: int, width: int, out: Window, batch_size: int
) -> tuple[list[int], list[list[int]], set[int]]:
    """(rows, batches, columns) of the windows reaching into ``out`` (the AOI or a shard).

    The batches are the unsharded run's (``batch_size`` consecutive columns of the whole AOI),
    so that a shard feeds the model exactly the same batches and gets the same bits.
    """
    (o0, o1), (oc0, oc1) = out.toranges()
    step = m.win - m.overlap
    rows = [r for r in window_origins(height, m.win, step) if r < o1 and r + m.win > o0]
    cols = window_origins(width, m.win, step)
    hit = {c for c in cols if c < oc1 and c + m.win > oc0}
    batches = [cols[i : i + batch_size] for i in range(0, len(cols), batch_size)]
    return rows, [b for b in batches if hit.intersection(b)], hit


def _predict_rows(
    m: _Model,
    src: rasterio.io.DatasetReader,
    coarse: rasterio.io.DatasetReader | None,
    dst: rasterio.io.DatasetWriter,
    batch_size: int,
    device: torch.device,
    out: Window,
) -> int:
    """Predict every window reaching into ``out`` row by row into ``dst``; the number run."""
    height, width = src.height, src.width
    weights = blend_weights(m.win)
    rows, batches, hit = _layout(m, height, width, out, batch_size)
    buf = _Rows(m.win, (min(hit), min(width, max(hit) + m.win)), out, rows[0])
    n = len(rows) * sum(map(len, batches))
    # closed before an error propagates, so that the error line is the log's last line
    with tqdm(total=n, desc="predict", unit="window", mininterval=10) as bar:
        for r0 in rows:
            buf.flush(dst, r0)
            for batch_cols in batches:
                pred, valid = _predict_windows(m, src, coarse, r0, batch_cols, device)
                h = min(m.win, height - r0)
                for k, c0 in enumerate(batch_cols):
                    if c0 in hit:
                        w = min(m.win, width - c0)
                        buf.add(r0, c0, pred[k, :h, :w], weights[:h, :w] * valid[k, :h, :w])
                bar.update(len(batch_cols))
    buf.flush(dst, out.row_off + out.height)
    return n


@step
def predict(
    *,
    settings: PredictSettings,
    model: str,
    seed: int,
    embeddings: Path,
    checkpoint: Path,
    prediction: Path,
    coarse_dem: Path | None = None,
    shard: str | None = None,
    sharding: ShardingSettings | None = None,
    threads: int = 1,
) -> None:
    """Predict the whole AOI (or one shard: ``shard`` and ``sharding``) with one checkpoint.

    Args:
        settings: The config's ``prediction`` section (JSON; ``'{}'`` for the defaults).
        model: The model's name (written into the prediction's tags).
        seed: The training seed (written into the tags).
        embeddings: The co-registered embeddings GeoTIFF to predict over.
        checkpoint: The trained model (a net's weights or a Ridge fit).
        prediction: Written: the height map in metres, a COG on the embeddings' grid.
        coarse_dem: The coarse DEM, for models that take it as a channel or a base.
        shard: The shard's name (``r<row>c<col>``) to predict only its window.
        sharding: The config's ``sharding`` section (JSON), given with ``shard``.
        threads: Torch threads (the rule's ``threads``).
    """
    window = shard_of(embeddings, shard, sharding)
    predict_raster(
        embeddings,
        checkpoint,
        prediction,
        settings,
        threads,
        meta={"model": model, "seed": str(seed)},
        coarse_dem_path=coarse_dem,
        window=window,
    )

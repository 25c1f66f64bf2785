"""Training: the nets (MSE, AdamW, early stopping, resumable) and the Ridge baseline.

The seed drives everything random: the weight initialisation (``torch.manual_seed`` before
the model is built), the order of the patches and the augmentation (a generator seeded with
``(seed, epoch)`` only, so a run killed mid-epoch and resumed from its last epoch checkpoint
ends with the same weights as an uninterrupted run, on the same machine and thread count).
Loss masks come from the split raster: buffer pixels near the test area never enter a loss.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

import geopandas as gpd
import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from aefheight.core import aef
from aefheight.core.dem import DemUse, dem_relief
from aefheight.core.errors import ConfigError, NoValidData
from aefheight.core.files import atomic_path
from aefheight.core.steps import step
from aefheight.models.factory import (
    BoxRidge,
    ModelSettings,
    build_model,
    pick_device,
    save_checkpoint,
)
from aefheight.split.spatial import loss_masks
from aefheight.tiles.patches import PatchStore
from aefheight.train.dataset import PatchDataset, draw_windows, loader, model_input

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSettings:
    """Settings of net training (config ``training``); the paper's values are the defaults."""

    SECTION: ClassVar[str] = "training"
    max_epochs: int
    patience: int  # early stopping: epochs without val-loss improvement
    min_steps: int  # early stopping only after this many optimizer steps
    windows_per_epoch: int  # random training windows drawn per epoch
    window_min_valid: float  # a window needs this share of valid train pixels
    warmup_steps: int  # linear learning-rate warm-up, then cosine decay over the cap
    batch_size: int
    lr: float
    weight_decay: float
    augment: bool  # random flips and 90-degree rotations
    device: str  # auto | cpu | cuda
    precision: str  # auto = bf16 autocast where the device supports it | bf16 | fp32


def use_bf16(device: torch.device, precision: str) -> bool:
    """bf16 autocast: asked for, or ``auto`` on a CUDA GPU or CPU with native bf16 kernels."""
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


@dataclass
class SplitPatches:
    """The patches of one split: store ids, origins (row, col) and loss masks (N, P, P)."""

    ids: np.ndarray
    origins: np.ndarray
    masks: np.ndarray


def split_patches(
    split_gpkg: Path, split_tif: Path, store: PatchStore | None = None
) -> dict[str, SplitPatches]:
    """The train and val patches, with their loss masks (pixels of the split in ``split.tif``).

    ``store``: the patch store they will be read from, checked against the index.
    """
    df = gpd.read_file(split_gpkg, layer="patches", ignore_geometry=True)
    if store is not None:
        store.check_index(df)
    out = {}
    for name in ("train", "val"):
        sub = df[df["split"] == name]
        out[name] = SplitPatches(
            sub["patch_id"].to_numpy(),
            sub[["row", "col"]].to_numpy(np.int64),
            loss_masks(split_tif, sub, name),
        )
    return out


def with_valid_data(store: PatchStore, part: SplitPatches) -> SplitPatches:
    """``part`` whose masks also require valid embeddings and a valid reference height.

    Reads one band of codes (AEF's nodata is in every band at once) and the DSM per patch, so
    that each epoch's windows are drawn on the pixels that will enter the loss.
    """
    masks = part.masks.copy()
    for i, k in enumerate(part.ids):
        masks[i] &= (np.asarray(store.embeddings[k][0]) != aef.NODATA) & ~np.isnan(
            np.asarray(store.dsm[k])
        )
    return SplitPatches(part.ids, part.origins, masks)


def _masked_values(store: PatchStore, k: int, mask: np.ndarray, dem: DemUse | None) -> np.ndarray:
    """Patch ``k``'s target values where valid and in ``mask`` (float64)."""
    z = np.asarray(store.dsm[k], dtype=np.float64)
    if dem is not None and store.coarse_dem is not None:
        c = np.asarray(store.coarse_dem[k], dtype=np.float64)
        z = z - c if dem.residual else np.where(np.isnan(c), np.nan, z)
    return z[~np.isnan(z) & mask]


def _mean_sd(chunks: Iterable[np.ndarray], what: str) -> tuple[float, float]:
    n, s1, s2 = 0, 0.0, 0.0
    for z in chunks:
        n, s1, s2 = n + z.size, s1 + z.sum(), s2 + (z * z).sum()
    if n == 0:
        raise NoValidData(f"the train patches hold no valid {what}")
    mean = s1 / n
    return mean, max(float(np.sqrt(max(s2 / n - mean * mean, 0.0))), 1e-6)


def target_stats(
    store: PatchStore,
    ids: np.ndarray,
    masks: np.ndarray | None = None,
    dem: DemUse | None = None,
) -> tuple[float, float]:
    """Mean and SD of the valid (unmasked) targets over the patches (float64).

    The target is the height, or reference minus coarse DEM for ``dem.residual``.
    """
    full = np.ones(store.dsm.shape[1:], bool)
    chunks = (
        _masked_values(store, k, full if masks is None else masks[i], dem)
        for i, k in enumerate(ids)
    )
    return _mean_sd(chunks, "height")


def relief_sd(store: PatchStore, ids: np.ndarray, masks: np.ndarray) -> float:
    """SD of the coarse DEM's relief (:func:`~aefheight.core.dem.dem_relief`) over train pixels."""
    assert store.coarse_dem is not None
    chunks = (dem_relief(np.asarray(store.coarse_dem[k]))[masks[i]] for i, k in enumerate(ids))
    return _mean_sd((c.astype(np.float64) for c in chunks), "coarse DEM")[1]


def augment(x: torch.Tensor, *ts: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Apply one random dihedral transform (flip, rot90) per sample to x and the targets."""
    ks = torch.randint(0, 8, (x.shape[0],), generator=g).tolist()
    out = [x.clone(), *(t.clone() for t in ts)]
    for i, k in enumerate(ks):
        for a in out:
            v = torch.rot90(a[i], k % 4, dims=(-2, -1))
            a[i] = torch.flip(v, dims=(-1,)) if k >= 4 else v
    return tuple(out)


def masked_mse(pred: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MSE over valid pixels only."""
    m = mask.to(pred.dtype)
    return ((pred.float() - y) ** 2 * m).sum() / m.sum().clamp_min(1.0)


def _fingerprint(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _evaluate(
    model: nn.Module,
    batches: Iterable[Sequence[torch.Tensor]],
    device: torch.device,
    amp: bool,
) -> float:
    """Masked MSE over cached validation batches (no autograd)."""
    model.eval()
    se, n = 0.0, 0.0
    with torch.inference_mode():
        for codes, extra, y, mask in batches:
            x = model_input(codes, extra, device, channels_last=amp)
            y, mask = y.to(device), mask.to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                p = model(x)
            m = mask.float()
            se += float(((p.float() - y) ** 2 * m).sum())
            n += float(m.sum())
    model.train()
    return se / max(n, 1.0)


def lr_factor(step: int, ts: TrainSettings, total_steps: int) -> float:
    """The learning rate of optimizer step ``step`` (0-based) over ``ts.lr``.

    A linear warm-up over ``warmup_steps``, then a cosine decay to 0 at ``total_steps`` (the
    cap: ``max_epochs`` epochs), which early stopping may end sooner.
    """
    warm = min(1.0, (step + 1) / ts.warmup_steps) if ts.warmup_steps else 1.0
    done = min(1.0, max(0, step - ts.warmup_steps) / max(1, total_steps - ts.warmup_steps))
    return warm * 0.5 * (1.0 + float(np.cos(np.pi * done)))


def steps_per_epoch(ts: TrainSettings) -> int:
    """Optimizer steps of one epoch (its windows in batches)."""
    return -(-ts.windows_per_epoch // ts.batch_size)


def _train_epoch(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    data: _Data,
    ts: TrainSettings,
    seed: int,
    epoch: int,
    first_step: int,
    device: torch.device,
    amp: bool,
    desc: str,
    workers: int = 0,
) -> tuple[float, int]:
    """One epoch of random windows drawn inside the training area; (mean loss, steps).

    The windows (:func:`~aefheight.train.dataset.draw_windows`) come from ``(seed, epoch)`` and the
    augmentation from a torch generator seeded the same way, so a resumed run repeats them.
    """
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    part = data.train_part
    rng = np.random.default_rng([seed, epoch])
    items = draw_windows(part.origins, part.masks, ts.windows_per_epoch, ts.window_min_valid, rng)
    batches = loader(
        data.train.with_windows(items),
        sampler=list(range(len(items))),  # in the order drawn
        batch_size=ts.batch_size,
        num_workers=workers,
        pin_memory=device.type == "cuda",
    )
    total_steps = ts.max_epochs * steps_per_epoch(ts)
    total, count, steps = 0.0, 0, 0
    bar = tqdm(batches, desc=desc, unit="batch", mininterval=10)
    for codes, extra, y, mask in bar:
        if ts.augment:
            codes, extra, y, mask = augment(codes, extra, y, mask, g=g)
        x = model_input(codes, extra, device, channels_last=amp)
        y, mask = y.to(device), mask.to(device)
        for group in opt.param_groups:
            group["lr"] = ts.lr * lr_factor(first_step + steps, ts, total_steps)
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            pred = model(x)
        loss = masked_mse(pred, y, mask)
        loss.backward()
        opt.step()
        total += loss.item() * x.shape[0]
        count += x.shape[0]
        steps += 1
        bar.set_postfix(loss=f"{total / count:.4f}", refresh=False)
    return total / max(count, 1), steps


@dataclass
class _Data:
    """What an epoch needs: the training set, cached validation batches, target scaling."""

    store: PatchStore
    train: PatchDataset
    train_part: SplitPatches  # where training windows are drawn (masks: valid train pixels)
    val_batches: list
    mean: float
    std: float
    fingerprint: str
    dem: DemUse | None


@dataclass
class _Run:
    """Progress of a training: what resume state saves and restores."""

    start: int = 1
    best: float = float("inf")
    best_state: dict | None = None
    bad: int = 0
    history: list = field(default_factory=list)


def _dem_use(
    store: PatchStore, ms: ModelSettings, ids: np.ndarray, masks: np.ndarray
) -> DemUse | None:
    """How the model uses the coarse DEM (None: not at all), with the channel's scale."""
    if not ms.uses_dem:
        return None
    if store.coarse_dem is None:
        raise ConfigError(
            f"{ms.arch} with dem_channel or target residual needs the coarse DEM patches "
            "(--store-coarse-dem)"
        )
    sd = relief_sd(store, ids, masks) if ms.dem_channel else 1.0
    return DemUse(ms.dem_channel, ms.target == "residual", sd)


def _load_data(
    store: PatchStore,
    split_gpkg: Path,
    split_tif: Path,
    ms: ModelSettings,
    ts: TrainSettings,
    seed: int,
    amp: bool,
) -> _Data:
    """Train/val patches with their loss masks, target scaling and the run's fingerprint."""
    parts = split_patches(split_gpkg, split_tif, store)
    train, val = with_valid_data(store, parts["train"]), parts["val"]
    dem = _dem_use(store, ms, train.ids, train.masks)
    mean, std = target_stats(store, train.ids, train.masks, dem)
    log.info(
        "target (%s): mean %.2f m, std %.2f m over %d train patches; %d val patches; bf16 %s%s",
        ms.target,
        mean,
        std,
        len(train.ids),
        len(val.ids),
        amp,
        f"; DEM relief channel SD {dem.relief_sd:.2f} m" if dem and dem.channel else "",
    )
    val_ds = PatchDataset(store, val.ids, mean, std, val.masks, dem)
    fp = _fingerprint(
        asdict(ms),
        asdict(ts),
        seed,
        len(store),
        train.ids.tolist(),
        val.ids.tolist(),
        int(train.masks.sum()),
        int(val.masks.sum()),
    )
    return _Data(
        store,
        PatchDataset(store, train.ids, mean, std, train.masks, dem),
        train,
        list(loader(val_ds, batch_size=ts.batch_size)),  # cached
        mean,
        std,
        fp,
        dem,
    )


def _resume(
    path: Path, fp: str, model: nn.Module, opt: torch.optim.Optimizer, device: torch.device
) -> _Run:
    """The saved progress of an interrupted run with the same inputs, else a fresh start."""
    if not path.exists():
        return _Run()
    state = torch.load(path, map_location=device, weights_only=True)
    if state.get("fingerprint") != fp:
        log.warning("ignoring %s: it belongs to other inputs or settings", path)
        return _Run()
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    log.info("resuming after epoch %d from %s", state["epoch"], path)
    return _Run(
        state["epoch"] + 1, state["best"], state["best_state"], state["bad"], state["history"]
    )


def _save_resume(
    path: Path, fp: str, model: nn.Module, opt: torch.optim.Optimizer, epoch: int, run: _Run
) -> None:
    with atomic_path(path) as tmp:
        torch.save(
            {
                "fingerprint": fp,
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "epoch": epoch,
                "best": run.best,
                "bad": run.bad,
                "best_state": run.best_state,
                "history": run.history,
            },
            tmp,
        )


def _record_epoch(
    run: _Run,
    model: nn.Module,
    epoch: int,
    loss: float,
    steps: int,
    val: float,
    std: float,
    seconds: float,
) -> None:
    """Keep the best weights, count epochs without improvement, append the history row."""
    improved = val < run.best
    if improved:
        run.best, run.bad = val, 0
        run.best_state = copy.deepcopy({k: v.cpu() for k, v in model.state_dict().items()})
    else:
        run.bad += 1
    run.history.append(
        {
            "epoch": epoch,
            "steps": steps + (run.history[-1]["steps"] if run.history else 0),
            "train_loss": loss,
            "val_loss": val,
            "val_rmse_m": float(np.sqrt(val)) * std,
            "best": improved,
            "seconds": round(seconds, 2),
        }
    )
    log.info(
        "epoch %d: train %.4f val %.4f (val RMSE %.2f m)%s",
        epoch,
        loss,
        val,
        run.history[-1]["val_rmse_m"],
        " *" if improved else "",
    )


def stop_early(run: _Run, ts: TrainSettings) -> bool:
    """Whether early stopping ends the training now.

    It does after ``patience`` epochs without a better validation loss, once at least
    ``min_steps`` optimizer steps have run (a schedule's early epochs are no verdict).
    """
    steps = run.history[-1]["steps"] if run.history else 0
    return run.bad >= ts.patience and steps >= ts.min_steps


def fit_net(
    store_embeddings: Path | Sequence[Path],
    store_dsm: Path | Sequence[Path],
    split_gpkg: Path,
    split_tif: Path,
    ms: ModelSettings,
    ts: TrainSettings,
    seed: int,
    model_name: str,
    checkpoint: Path,
    history: Path,
    resume: Path,
    threads: int = 1,
    store_coarse_dem: Path | Sequence[Path] | None = None,
) -> pd.DataFrame:
    """Train one net; write its checkpoint (best val loss) and its history (one row an epoch).

    ``resume`` is updated after every epoch; a rerun with the same inputs and settings
    continues from it. It is removed once the checkpoint and history are written.
    ``store_coarse_dem`` (the coarse DEM's patches) is read by nets that use the coarse DEM.
    """
    torch.set_num_threads(max(1, threads))
    torch.manual_seed(seed)  # weight initialisation (the cached val loader draws first)
    device = pick_device(ts.device, "training.device")
    amp = use_bf16(device, ts.precision)
    store = PatchStore(store_embeddings, store_dsm, store_coarse_dem)
    data = _load_data(store, split_gpkg, split_tif, ms, ts, seed, amp)
    # channels-last speeds up bf16 kernels; plain float32 runs faster without (AVX2 CPUs)
    layout = torch.channels_last if amp else torch.contiguous_format
    model = build_model(ms).to(device).to(memory_format=layout)
    opt = torch.optim.AdamW(model.parameters(), lr=ts.lr, weight_decay=ts.weight_decay)
    run = _resume(resume, data.fingerprint, model, opt, device)
    for epoch in range(run.start, ts.max_epochs + 1):
        if stop_early(run, ts):
            break
        t0 = time.perf_counter()
        loss, steps = _train_epoch(
            model,
            opt,
            data,
            ts,
            seed,
            epoch,
            run.history[-1]["steps"] if run.history else 0,
            device,
            amp,
            f"{ms.arch} seed {seed} epoch {epoch}",
            workers=0 if device.type == "cpu" else max(0, threads - 1),  # GPU: CPUs load data
        )
        val = _evaluate(model, data.val_batches, device, amp)
        _record_epoch(run, model, epoch, loss, steps, val, data.std, time.perf_counter() - t0)
        _save_resume(resume, data.fingerprint, model, opt, epoch, run)
    stopped = "early_stopping" if stop_early(run, ts) else "max_epochs"
    hist = _finish(model, ms, data, run, seed, stopped, checkpoint)
    with atomic_path(history) as tmp:
        hist = hist.assign(model=model_name, seed=seed, stopped=stopped)
        hist.to_csv(tmp, index=False)
    resume.unlink(missing_ok=True)
    log.info("done: %d epochs (%s)", len(hist), stopped)
    return hist


def _finish(
    model: nn.Module,
    ms: ModelSettings,
    data: _Data,
    run: _Run,
    seed: int,
    stopped: str,
    checkpoint: Path,
) -> pd.DataFrame:
    """Restore the best epoch's weights and save them; return the history."""
    hist = pd.DataFrame(run.history)
    assert run.best_state is not None  # at least one epoch ran (max_epochs >= 1)
    model.load_state_dict(run.best_state)
    best_epoch = int(hist.loc[hist["val_loss"].idxmin(), "epoch"])
    save_checkpoint(
        checkpoint,
        model.cpu().to(memory_format=torch.contiguous_format),
        ms,
        data.mean,
        data.std,
        epochs_run=len(hist),
        best_epoch=best_epoch,
        steps=int(hist["steps"].iloc[-1]),
        stopped=stopped,
        seed=seed,
        patch_size=int(data.store.embeddings.shape[-1]),
        dem_relief_sd=data.dem.relief_sd if data.dem else 1.0,
    )
    log.info("best epoch %d", best_epoch)
    return hist


def sample_pixels(
    store: PatchStore,
    ids: np.ndarray,
    masks: np.ndarray,
    max_pixels: int,
    seed: int,
    features: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``max_pixels`` valid, unmasked (features, height) pixels drawn evenly from patches.

    ``features`` maps a de-quantized patch (1, 64, P, P) tensor to its regression inputs
    (1, C, P, P); None keeps the 64 bands.
    """
    rng = np.random.default_rng(seed)
    per_patch = max(1, -(-max_pixels // max(1, len(ids))))
    xs, ys = [], []
    for i, k in enumerate(ids):
        codes = np.asarray(store.embeddings[k])
        z = np.asarray(store.dsm[k])
        valid = np.flatnonzero((aef.valid_mask(codes) & ~np.isnan(z) & masks[i]).ravel())
        pick = rng.choice(valid, min(per_patch, valid.size), replace=False)
        x = aef.dequantize(codes, nodata_value=0.0)
        if features is not None:
            with torch.inference_mode():
                x = features(torch.from_numpy(x)[None])[0].numpy()
        xs.append(x.reshape(x.shape[0], -1)[:, pick].T)
        ys.append(z.ravel()[pick])
    x, y = np.concatenate(xs), np.concatenate(ys)
    return x[:max_pixels], y[:max_pixels]


def fit_ridge(
    store_embeddings: Path | Sequence[Path],
    store_dsm: Path | Sequence[Path],
    split_gpkg: Path,
    split_tif: Path,
    ms: ModelSettings,
    seed: int,
    model_name: str,
    checkpoint: Path,
    history: Path,
) -> dict[str, float]:
    """Fit a Ridge baseline on sampled train pixels (its box-mean features at ``scales_px``).

    Saved as the equivalent fixed network (box means, then a 1x1 convolution).
    """
    from sklearn.linear_model import Ridge

    store = PatchStore(store_embeddings, store_dsm)
    train = split_patches(split_gpkg, split_tif, store)["train"]
    model = build_model(ms)
    assert isinstance(model, BoxRidge)  # arch ridge
    x, y = sample_pixels(store, train.ids, train.masks, ms.max_pixels, seed, model.features)
    reg = Ridge(alpha=ms.alpha).fit(x, y)
    with torch.no_grad():
        model.head.weight.copy_(torch.from_numpy(reg.coef_.astype(np.float32)).view(1, -1, 1, 1))
        model.head.bias.fill_(float(reg.intercept_))  # type: ignore[union-attr]  # has a bias
    info = {"pixels": len(y), "features": x.shape[1], "train_r2_sample": float(reg.score(x, y))}
    save_checkpoint(
        checkpoint,
        model,
        ms,
        0.0,
        1.0,
        seed=seed,
        patch_size=int(store.embeddings.shape[-1]),
        **info,
    )
    with atomic_path(history) as tmp:
        pd.DataFrame([info]).assign(model=model_name, seed=seed).to_csv(tmp, index=False)
    log.info(
        "ridge (scales %s): %d pixels, %d features, in-sample R2 %.3f",
        ms.scales_px,
        info["pixels"],
        info["features"],
        info["train_r2_sample"],
    )
    return info


@step
def train_net(
    *,
    settings: TrainSettings,
    model_settings: ModelSettings,
    model: str,
    seed: int,
    split_gpkg: Path,
    split_tif: Path,
    store_embeddings: list[Path],
    store_dsm: list[Path],
    store_coarse_dem: list[Path],
    checkpoint: Path,
    history: Path,
    resume: Path,
    threads: int = 1,
) -> None:
    """Train one net (U-Net, U-Net++, ...) for one seed; one store per shard, in order."""
    fit_net(
        store_embeddings=store_embeddings,
        store_dsm=store_dsm,
        split_gpkg=split_gpkg,
        split_tif=split_tif,
        ms=model_settings,
        ts=settings,
        seed=seed,
        model_name=model,
        checkpoint=checkpoint,
        history=history,
        resume=resume,
        threads=threads,
        store_coarse_dem=store_coarse_dem,
    )


@step
def train_ridge(
    *,
    model_settings: ModelSettings,
    model: str,
    seed: int,
    split_gpkg: Path,
    split_tif: Path,
    store_embeddings: list[Path],
    store_dsm: list[Path],
    checkpoint: Path,
    history: Path,
) -> None:
    """Fit one Ridge baseline for one seed; one store per shard, in order."""
    fit_ridge(
        store_embeddings=store_embeddings,
        store_dsm=store_dsm,
        split_gpkg=split_gpkg,
        split_tif=split_tif,
        ms=model_settings,
        seed=seed,
        model_name=model,
        checkpoint=checkpoint,
        history=history,
    )

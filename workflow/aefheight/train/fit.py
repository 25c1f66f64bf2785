"""Training of the nets: MSE, AdamW, early stopping, resumable after a kill.

The seed drives everything random: the weight initialisation (``torch.manual_seed`` before
the model is built), the order of the patches and the augmentation (a generator seeded with
``(seed, epoch)`` only, so a run killed mid-epoch and resumed from its last epoch checkpoint
ends with the same weights as an uninterrupted run, on the same machine and thread count).
What a training reads from the split (patches, loss masks, target scale) is in :mod:`.targets`.

One module of ~490 lines: the loop, its early stopping and its resume state are one piece (a
resumed run must replay exactly what an uninterrupted one does), so they are read together.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from aefheight.core import embeddings
from aefheight.core.dem import DemUse
from aefheight.core.errors import ConfigError
from aefheight.core.files import atomic_path
from aefheight.core.steps import step
from aefheight.models.factory import (
    ModelSettings,
    build_model,
    pick_device,
    save_checkpoint,
)
from aefheight.tiles.store import PatchStore
from aefheight.train.dataset import PatchDataset, draw_windows, loader, model_input
from aefheight.train.targets import (
    SplitPatches,
    relief_sd,
    split_patches,
    target_stats,
    with_valid_data,
)

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
    *,
    embeddings_path: Path,
) -> pd.DataFrame:
    """Train one net; write its checkpoint (best val loss) and its history (one row an epoch).

    ``resume`` is updated after every epoch; a rerun with the same inputs and settings
    continues from it. It is removed once the checkpoint and history are written.
    ``store_coarse_dem`` (the coarse DEM's patches) is read by nets that use the coarse DEM;
    ``embeddings_path`` (the raster tiled) names the product the checkpoint records.
    """
    device, amp = _setup(threads, seed, ts)
    store = PatchStore(store_embeddings, store_dsm, store_coarse_dem)
    data = _load_data(store, split_gpkg, split_tif, ms, ts, seed, amp)
    layout = torch.channels_last if amp else torch.contiguous_format  # float32: NCHW faster
    product = embeddings.identify(embeddings_path, store.bands)
    model = build_model(ms, store.bands).to(device).to(memory_format=layout)
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
    hist = _finish(model, ms, data, run, seed, stopped, checkpoint, product)
    hist = hist.assign(model=model_name, seed=seed, stopped=stopped)
    _write_csv(hist, history)
    resume.unlink(missing_ok=True)
    log.info("done: %d epochs (%s)", len(hist), stopped)
    return hist


def _setup(threads: int, seed: int, ts: TrainSettings) -> tuple[torch.device, bool]:
    """Threads and the weights' seed set; the device and whether it trains in bf16."""
    torch.set_num_threads(max(1, threads))
    torch.manual_seed(seed)  # weight initialisation (the cached val loader draws first)
    device = pick_device(ts.device, "training.device")
    return device, use_bf16(device, ts.precision)


def _write_csv(table: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)


def _finish(
    model: nn.Module,
    ms: ModelSettings,
    data: _Data,
    run: _Run,
    seed: int,
    stopped: str,
    checkpoint: Path,
    product: tuple[str, int],
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
        product,
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


@step
def train_net(
    *,
    settings: TrainSettings,
    model_settings: ModelSettings,
    model: str,
    seed: int,
    split_gpkg: Path,
    split_tif: Path,
    embeddings: Path,
    store_embeddings: list[Path],
    store_dsm: list[Path],
    store_coarse_dem: list[Path],
    checkpoint: Path,
    history: Path,
    resume: Path,
    threads: int = 1,
) -> None:
    """Train one net (U-Net, U-Net++, ...) for one seed; one store per shard, in order.

    Args:
        settings: The config's ``training`` section (JSON; ``'{}'`` for the defaults).
        model_settings: The model's entry under ``models`` (JSON).
        model: The model's name in the config (names the run in logs and the history).
        seed: Seeds the weights, the window sampling and the batch order.
        split_gpkg: The spatial split's polygons (train / validation / test strips).
        split_tif: The split raster on the AOI grid (which pixels count for which loss).
        embeddings: The AOI's embeddings raster (its product and band count, recorded).
        store_embeddings: The patch stores of the embeddings, one per shard.
        store_dsm: The patch stores of the reference DSM, in the same order.
        store_coarse_dem: The coarse DEM's stores (read only when the model uses it).
        checkpoint: Written: the weights of the epoch with the lowest validation loss.
        history: Written: one row per epoch (steps, train and validation loss, validation RMSE).
        resume: The last epoch's state; a rerun continues from it.
        threads: Torch threads (the rule's ``threads``).
    """
    fit_net(
        embeddings_path=embeddings,
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

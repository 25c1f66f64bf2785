"""Training: the nets (MSE, AdamW, early stopping, resumable) and the Ridge baseline.

Reproducible by construction: shuffling and augmentation of epoch ``e`` come from a generator
seeded with ``(seed, e)`` only, so a run killed mid-epoch and resumed from its last
epoch checkpoint ends with the same weights as an uninterrupted run (on CPU).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from . import aef
from .errors import ConfigError, NoValidData
from .models import ModelSettings, build_model, save_checkpoint
from .patches import PatchDataset, PatchStore
from .raster import atomic_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSettings:
    """Settings of net training (config ``training``); the paper's values are the defaults."""

    max_epochs: int = 100
    patience: int = 10  # early stopping: epochs without val-loss improvement
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    augment: bool = True  # random flips and 90-degree rotations
    device: str = "auto"  # auto | cpu | cuda

    def check(self, section: str) -> None:
        if self.max_epochs < 1 or self.patience < 1 or self.batch_size < 1:
            raise ConfigError(f"{section}: max_epochs, patience and batch_size must be >= 1")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ConfigError(f"{section}: lr must be > 0 and weight_decay >= 0")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"{section}.device must be auto, cpu or cuda")


def pick_device(name: str) -> torch.device:
    """``auto`` takes CUDA when present, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("training.device is cuda but no CUDA device is visible")
    return torch.device(name)


def split_ids(split_path: Path) -> dict[str, np.ndarray]:
    """Patch ids per split from the split GeoPackage."""
    df = gpd.read_file(split_path, layer="patches", ignore_geometry=True)
    return {k: df.loc[df["split"] == k, "patch_id"].to_numpy() for k in ("train", "val", "test")}


def target_stats(store: PatchStore, ids: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of valid heights over the given patches (float64)."""
    n, s1, s2 = 0, 0.0, 0.0
    for k in ids:
        z = np.asarray(store.dsm[k], dtype=np.float64)
        z = z[~np.isnan(z)]
        n, s1, s2 = n + z.size, s1 + z.sum(), s2 + (z * z).sum()
    if n == 0:
        raise NoValidData("the train patches hold no valid height")
    mean = s1 / n
    return mean, max(float(np.sqrt(max(s2 / n - mean * mean, 0.0))), 1e-6)


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


def _evaluate(model, loader, device, amp) -> float:
    model.eval()
    se, n = 0.0, 0.0
    with torch.no_grad():
        for x, y, mask in loader:
            x, y, mask = x.to(device), y.to(device), mask.to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                p = model(x)
            m = mask.float()
            se += float(((p.float() - y) ** 2 * m).sum())
            n += float(m.sum())
    model.train()
    return se / max(n, 1.0)


def train_net(
    store_dir: Path,
    split_path: Path,
    ms: ModelSettings,
    ts: TrainSettings,
    seed: int,
    out_dir: Path,
    threads: int = 1,
) -> pd.DataFrame:
    """Train one net and write ``checkpoint.pt`` (best val loss) and ``history.csv``.

    A ``resume.pt`` beside them is updated after every epoch; a rerun with the same inputs and
    settings continues from it. It is removed once the final files are written.
    """
    torch.set_num_threads(max(1, threads))
    torch.manual_seed(seed)
    device = pick_device(ts.device)
    amp = device.type == "cuda" and torch.cuda.is_bf16_supported()
    store = PatchStore(store_dir)
    ids = split_ids(split_path)
    mean, std = target_stats(store, ids["train"])
    log.info("target: mean %.2f m, std %.2f m over %d train patches", mean, std, len(ids["train"]))
    train_ds = PatchDataset(store, ids["train"], mean, std)
    val_ds = PatchDataset(store, ids["val"], mean, std)
    workers = 0 if device.type == "cpu" else max(0, threads - 1)
    loader_kw = {
        "batch_size": ts.batch_size,
        "num_workers": workers,
        "pin_memory": device.type == "cuda",
    }
    val_loader = torch.utils.data.DataLoader(val_ds, shuffle=False, **loader_kw)

    model = build_model(ms).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=ts.lr, weight_decay=ts.weight_decay)
    out_dir.mkdir(parents=True, exist_ok=True)
    resume_path = out_dir / "resume.pt"
    fp = _fingerprint(
        asdict(ms), asdict(ts), seed, len(store), ids["train"].tolist(), ids["val"].tolist()
    )
    start, best, best_state, bad, history = 1, float("inf"), None, 0, []
    if resume_path.exists():
        state = torch.load(resume_path, map_location=device, weights_only=True)
        if state.get("fingerprint") == fp:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            start, best, bad = state["epoch"] + 1, state["best"], state["bad"]
            best_state, history = state["best_state"], state["history"]
            log.info("resuming after epoch %d from %s", state["epoch"], resume_path)
        else:
            log.warning("ignoring %s: it belongs to other inputs or settings", resume_path)

    for epoch in range(start, ts.max_epochs + 1):
        if bad >= ts.patience:
            break
        t0 = time.perf_counter()
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(len(train_ds), generator=g).tolist()
        loader = torch.utils.data.DataLoader(train_ds, sampler=order, **loader_kw)
        total, count = 0.0, 0
        bar = tqdm(loader, desc=f"{ms.arch} epoch {epoch}", unit="batch", mininterval=10)
        for x, y, mask in bar:
            if ts.augment:
                x, y, mask = augment(x, y, mask, g=g)
            x, y, mask = x.to(device), y.to(device), mask.to(device)
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                pred = model(x)
            loss = masked_mse(pred, y, mask)
            loss.backward()
            opt.step()
            total += loss.item() * x.shape[0]
            count += x.shape[0]
            bar.set_postfix(loss=f"{total / count:.4f}", refresh=False)
        val = _evaluate(model, val_loader, device, amp)
        improved = val < best
        if improved:
            best, bad = val, 0
            best_state = copy.deepcopy({k: v.cpu() for k, v in model.state_dict().items()})
        else:
            bad += 1
        history.append(
            {
                "epoch": epoch,
                "train_loss": total / max(count, 1),
                "val_loss": val,
                "val_rmse_m": float(np.sqrt(val)) * std,
                "best": improved,
                "seconds": round(time.perf_counter() - t0, 2),
            }
        )
        log.info(
            "epoch %d: train %.4f val %.4f (val RMSE %.2f m)%s",
            epoch,
            history[-1]["train_loss"],
            val,
            history[-1]["val_rmse_m"],
            " *" if improved else "",
        )
        with atomic_path(resume_path) as tmp:
            torch.save(
                {
                    "fingerprint": fp,
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "epoch": epoch,
                    "best": best,
                    "bad": bad,
                    "best_state": best_state,
                    "history": history,
                },
                tmp,
            )

    hist = pd.DataFrame(history)
    model.load_state_dict(best_state)
    best_epoch = int(hist.loc[hist["val_loss"].idxmin(), "epoch"])
    save_checkpoint(
        out_dir / "checkpoint.pt",
        model.cpu(),
        ms,
        mean,
        std,
        epochs_run=len(hist),
        best_epoch=best_epoch,
        seed=seed,
    )
    with atomic_path(out_dir / "history.csv") as tmp:
        hist.to_csv(tmp, index=False)
    resume_path.unlink(missing_ok=True)
    log.info("done: %d epochs, best epoch %d", len(hist), best_epoch)
    return hist


def sample_pixels(
    store: PatchStore, ids: np.ndarray, max_pixels: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``max_pixels`` valid (embedding, height) pixels drawn evenly from the patches."""
    rng = np.random.default_rng(seed)
    per_patch = max(1, -(-max_pixels // max(1, len(ids))))
    xs, ys = [], []
    for k in ids:
        codes = np.asarray(store.embeddings[k])
        z = np.asarray(store.dsm[k])
        valid = np.flatnonzero((aef.valid_mask(codes) & ~np.isnan(z)).ravel())
        pick = rng.choice(valid, min(per_patch, valid.size), replace=False)
        xs.append(aef.dequantize(codes.reshape(aef.BANDS, -1)[:, pick]).T)
        ys.append(z.ravel()[pick])
    x, y = np.concatenate(xs), np.concatenate(ys)
    return x[:max_pixels], y[:max_pixels]


def train_ridge(
    store_dir: Path, split_path: Path, ms: ModelSettings, seed: int, out_dir: Path
) -> dict[str, float]:
    """Fit the paper's pixel-wise Ridge on sampled train pixels; save it as a 1x1 conv."""
    from sklearn.linear_model import Ridge

    store = PatchStore(store_dir)
    ids = split_ids(split_path)
    x, y = sample_pixels(store, ids["train"], ms.max_pixels, seed)
    reg = Ridge(alpha=ms.alpha).fit(x, y)
    model = build_model(ms)
    with torch.no_grad():
        model.weight.copy_(torch.from_numpy(reg.coef_.astype(np.float32)).view(1, -1, 1, 1))
        model.bias.fill_(float(reg.intercept_))
    info = {"pixels": len(y), "train_r2_sample": float(reg.score(x, y))}
    save_checkpoint(out_dir / "checkpoint.pt", model, ms, 0.0, 1.0, seed=seed, **info)
    with atomic_path(out_dir / "history.csv") as tmp:
        pd.DataFrame([info]).to_csv(tmp, index=False)
    log.info("ridge: %d pixels, in-sample R2 %.3f", info["pixels"], info["train_r2_sample"])
    return info

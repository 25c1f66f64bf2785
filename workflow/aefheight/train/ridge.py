"""The Ridge baselines: fitted with scikit-learn on sampled train pixels, saved as a net.

The fitted model is held as the equivalent fixed network (box means of the bands at
``scales_px``, then a 1x1 convolution), so prediction and evaluation treat it as any model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from aefheight.core import embeddings
from aefheight.core.files import atomic_path
from aefheight.core.steps import step
from aefheight.models.factory import (
    BoxRidge,
    ModelSettings,
    build_model,
    save_checkpoint,
)
from aefheight.tiles.store import PatchStore
from aefheight.train.fit import (
    log,
)
from aefheight.train.targets import (
    split_patches,
)


def sample_pixels(
    store: PatchStore,
    ids: np.ndarray,
    masks: np.ndarray,
    max_pixels: int,
    seed: int,
    features: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``max_pixels`` valid, unmasked (features, height) pixels drawn evenly from patches.

    ``features`` maps a de-quantized patch (1, bands, P, P) tensor to its regression inputs
    (1, C, P, P); None keeps the bands.
    """
    rng = np.random.default_rng(seed)
    per_patch = max(1, -(-max_pixels // max(1, len(ids))))
    xs, ys = [], []
    for i, k in enumerate(ids):
        codes = np.asarray(store.embeddings[k])
        z = np.asarray(store.dsm[k])
        valid = np.flatnonzero((embeddings.valid_mask(codes) & ~np.isnan(z) & masks[i]).ravel())
        pick = rng.choice(valid, min(per_patch, valid.size), replace=False)
        x = embeddings.dequantize(codes, nodata_value=0.0)
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
    *,
    embeddings_path: Path,
) -> dict[str, float]:
    """Fit a Ridge baseline on sampled train pixels (its box-mean features at ``scales_px``).

    Saved as the equivalent fixed network (box means, then a 1x1 convolution); its columns are
    the store's bands, whose product ``embeddings_path`` (the raster tiled) names.
    """
    from sklearn.linear_model import Ridge

    store = PatchStore(store_embeddings, store_dsm)
    train = split_patches(split_gpkg, split_tif, store)["train"]
    product = embeddings.identify(embeddings_path, store.bands)
    model = build_model(ms, store.bands)
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
        product,
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
def train_ridge(
    *,
    model_settings: ModelSettings,
    model: str,
    seed: int,
    split_gpkg: Path,
    split_tif: Path,
    embeddings: Path,
    store_embeddings: list[Path],
    store_dsm: list[Path],
    checkpoint: Path,
    history: Path,
) -> None:
    """Fit one Ridge baseline for one seed; one store per shard, in order."""
    fit_ridge(
        embeddings_path=embeddings,
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

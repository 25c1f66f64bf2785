"""The training data as torch tensors: patches of a :class:`~aefheight.patches.PatchStore`.

Kept apart from :mod:`aefheight.patches` so that tiling and every raster step import no torch.
"""

from __future__ import annotations

import numpy as np
import torch

from . import aef
from .dem import DemUse, dem_channel
from .patches import PatchStore


class PatchDataset(torch.utils.data.Dataset):
    """Patches as tensors: de-quantized embeddings, standardized target, validity mask.

    Use it for training and validation; augmentation happens on batches in the training loop
    so that it is reproducible from the seed and epoch alone.

    Returns per item ``(x, y, mask)``: x float32 (64, P, P) with nodata as 0, y float32
    (1, P, P) standardized with ``(h - mean) / std`` (0 where invalid), mask bool (1, P, P).
    ``masks`` (N, P, P), when given, further restricts each patch's mask (e.g. the split's
    buffer pixels are left out of the loss). ``dem`` (the store then holds the coarse DEM)
    adds its relief as a 65th channel and/or makes the target reference minus coarse DEM;
    pixels without a coarse DEM then leave the loss.
    """

    def __init__(
        self,
        store: PatchStore,
        ids: np.ndarray,
        mean: float,
        std: float,
        masks: np.ndarray | None = None,
        dem: DemUse | None = None,
    ) -> None:
        self.store, self.ids, self.mean, self.std = store, np.asarray(ids), mean, std
        self.masks, self.dem = masks, dem
        if dem is not None and store.coarse_dem is None:
            raise ValueError("the model uses the coarse DEM but the patch store has none")

    def __len__(self) -> int:
        return len(self.ids)

    def __getitems__(self, idx: list[int]) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """A batch (the DataLoader's batched fetch): prefetch its patches, then read each."""
        self.store.prefetch(self.ids[np.asarray(idx, dtype=np.int64)])
        return [self[i] for i in idx]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        k = int(self.ids[i])
        codes = np.asarray(self.store.embeddings[k])  # views: de-quantizing makes the copy
        z = np.asarray(self.store.dsm[k])
        mask = aef.valid_mask(codes) & ~np.isnan(z)
        if self.masks is not None:
            mask &= self.masks[i]
        x = aef.dequantize(codes, nodata_value=0.0)
        if self.dem is not None:
            assert self.store.coarse_dem is not None  # checked in __init__
            c = np.asarray(self.store.coarse_dem[k])
            mask &= ~np.isnan(c)
            if self.dem.channel:
                x = np.concatenate([x, dem_channel(c, self.dem)])
            if self.dem.residual:
                z = z - c
        y = np.where(mask, (z - self.mean) / self.std, 0.0).astype(np.float32)
        return torch.from_numpy(x), torch.from_numpy(y[None]), torch.from_numpy(mask[None])

"""The training data as torch tensors: patches of a :class:`~aefheight.patches.PatchStore`.

Kept apart from :mod:`aefheight.patches` so that tiling and every raster step import no torch.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import torch

from . import aef
from .dem import DemUse, dem_channel
from .patches import PatchStore

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # x, y, mask, batch first
SPARE_ARRAYS = 9  # batch arrays a dataset keeps for reuse: x, y, mask of three batches


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
        self._spare: list[np.ndarray] = []

    def __getstate__(self) -> dict:  # spawned workers: no batch arrays travel with the dataset
        return {**self.__dict__, "_spare": []}

    def __len__(self) -> int:
        return len(self.ids)

    def __getitems__(self, idx: list[int]) -> Batch:
        """A collated batch (the DataLoader's batched fetch; use :func:`loader`).

        Prefetches the batch's patches, then de-quantizes each from the store straight into
        one batch array: no per-patch float32 copy and no stacking afterwards.
        """
        self.store.prefetch(self.ids[np.asarray(idx, dtype=np.int64)])
        p = self.store.embeddings.shape[-1]
        channels = aef.BANDS + int(self.dem is not None and self.dem.channel)
        x = self._array((len(idx), channels, p, p), np.float32)
        y = self._array((len(idx), 1, p, p), np.float32)
        mask = self._array((len(idx), 1, p, p), np.bool_)
        for b, i in enumerate(idx):
            y[b, 0], mask[b, 0] = self._fill(i, x[b])
        return torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(mask)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, y, mask = self.__getitems__([i])
        return x[0], y[0], mask[0]

    def _array(self, shape: tuple[int, ...], dtype: type) -> np.ndarray:
        """A batch array: an earlier one that nothing references any more, else a new one.

        Fresh pages cost the kernel's zeroing, as much as the de-quantization itself
        (benchmarks/README.md). A batch still held (a tensor, a view, a cached validation
        batch) keeps its array, so reuse never overwrites data in use.
        """
        for a in self._spare:
            # references: the list, the loop variable and getrefcount's argument
            if a.shape == shape and a.dtype == dtype and sys.getrefcount(a) == 3:
                return a
        a = np.empty(shape, dtype)
        self._spare = [*self._spare[-(SPARE_ARRAYS - 1) :], a]
        return a

    def _fill(self, i: int, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Write item ``i``'s input channels into ``x``; return its target and mask (P, P)."""
        k = int(self.ids[i])
        codes = self.store.embeddings[k]  # a view of the map: de-quantizing reads it once
        z = np.asarray(self.store.dsm[k])
        mask = aef.valid_mask(codes) & ~np.isnan(z)
        if self.masks is not None:
            mask &= self.masks[i]
        aef.dequantize(codes, nodata_value=0.0, out=x[: aef.BANDS])
        if self.dem is not None:
            assert self.store.coarse_dem is not None  # checked in __init__
            c = np.asarray(self.store.coarse_dem[k])
            mask &= ~np.isnan(c)
            if self.dem.channel:
                x[aef.BANDS :] = dem_channel(c, self.dem)
            if self.dem.residual:
                z = z - c
        return np.where(mask, (z - self.mean) / self.std, 0.0), mask


def passthrough(batch: Any) -> Any:
    """The collate function of a :class:`PatchDataset`: its batches come collated.

    Typed ``Any`` because DataLoader types collate functions as taking a list.
    """
    return batch


def loader(ds: PatchDataset, **kwargs: Any) -> torch.utils.data.DataLoader:
    """A DataLoader over ``ds`` (any DataLoader keyword but ``collate_fn``).

    Use it for every loader over patches: it takes the dataset's collated batches as they
    come (the default collate would stack them again).
    """
    return torch.utils.data.DataLoader(ds, collate_fn=passthrough, **kwargs)

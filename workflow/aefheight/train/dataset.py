"""The training data as torch tensors: patches of a :class:`~aefheight.tiles.patches.PatchStore`.

Kept apart from :mod:`aefheight.tiles.patches` so that tiling and every raster step import no torch.
"""

from __future__ import annotations

import copy
import sys
from typing import Any

import numpy as np
import torch

from aefheight.core import aef, embeddings
from aefheight.core.dem import DemUse, dem_channel
from aefheight.tiles.store import PatchStore

# codes (B, bands, P, P) as stored, extra float32 (B, E, P, P), y float32 (B, 1, P, P), mask bool
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
SPARE_ARRAYS = 12  # batch arrays a dataset keeps for reuse: the 4 arrays of three batches


class PatchDataset(torch.utils.data.Dataset):
    """Patches as tensors: int8 embedding codes, extra channels, standardized target, mask.

    Use it for training and validation with :func:`loader`, and turn each batch into the
    network's input with :func:`model_input` on the training device: the embeddings stay as
    stored through the DataLoader and the host-to-device copy (AEF's int8 codes: a quarter of
    float32's bytes) and are de-quantized where the model runs. Augmentation happens on
    batches in the training loop so that it is reproducible from the seed and epoch alone.

    Returns per item ``(codes, extra, y, mask)``: codes (bands, P, P) as stored, extra
    float32 (E, P, P) (E = 1 with the coarse DEM's relief channel, else 0), y float32
    (1, P, P) standardized with ``(h - mean) / std`` (0 where invalid), mask bool (1, P, P).
    ``masks`` (N, P, P), when given, further restricts each patch's mask (e.g. the split's
    buffer pixels are left out of the loss). ``dem`` (the store then holds the coarse DEM)
    adds its relief as an extra channel and/or makes the target reference minus coarse DEM;
    pixels without a coarse DEM then leave the loss.

    Items are the patches themselves, or, after :meth:`with_windows`, windows at any offset
    (:func:`draw_windows`), each assembled from the up to four patches of ``ids`` it overlaps;
    pixels of no patch in ``ids`` are nodata (so no pixel outside them is ever read).
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
        self.items = np.zeros((len(self.ids), len(QUADRANTS) + 2), np.int64)  # each patch alone
        self.items[:, 0] = np.arange(len(self.ids))
        self.items[:, 1 : len(QUADRANTS)] = -1

    def with_windows(self, items: np.ndarray) -> PatchDataset:
        """The same patches, whose items are the windows ``items`` (:func:`draw_windows`)."""
        out = copy.copy(self)
        out.items, out._spare = np.asarray(items, np.int64), []
        return out

    def __getstate__(self) -> dict:  # spawned workers: no batch arrays travel with the dataset
        return {**self.__dict__, "_spare": []}

    def __len__(self) -> int:
        return len(self.items)

    def __getitems__(self, idx: list[int]) -> Batch:
        """A collated batch (the DataLoader's batched fetch; use :func:`loader`).

        Prefetches the batch's patches, then copies each from the store straight into one
        batch array: no per-patch copy and no stacking afterwards.
        """
        parts = self.items[np.asarray(idx, dtype=np.int64), : len(QUADRANTS)].ravel()
        self.store.prefetch(self.ids[parts[parts >= 0]])
        n, p = len(idx), self.store.embeddings.shape[-1]
        extra_channels = int(self.dem is not None and self.dem.channel)
        codes = self._array((n, self.store.bands, p, p), self.store.embeddings.dtype)
        extra = self._array((n, extra_channels, p, p), np.float32)
        y = self._array((n, 1, p, p), np.float32)
        mask = self._array((n, 1, p, p), np.bool_)
        for b, i in enumerate(idx):
            y[b, 0], mask[b, 0] = self._fill(i, codes[b], extra[b])
        t = torch.from_numpy
        return t(codes), t(extra), t(y), t(mask)

    def __getitem__(self, i: int) -> Batch:
        codes, extra, y, mask = self.__getitems__([i])
        return codes[0], extra[0], y[0], mask[0]

    def _array(self, shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
        """A batch array: an earlier one that nothing references any more, else a new one.

        Fresh pages cost the kernel's zeroing, as much as copying the patch into them
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

    def _fill(self, i: int, codes: np.ndarray, extra: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Write item ``i``'s codes and extra channels; return its target and mask (P, P)."""
        item, p = self.items[i], codes.shape[-1]
        z = np.full((p, p), np.nan, np.float32)
        mask = np.zeros((p, p), bool)
        c = np.full((p, p), np.nan, np.float32) if self.dem is not None else None
        if item[1:4].max() >= 0 or item[4] or item[5]:
            codes.fill(embeddings.nodata(codes.dtype))  # a window: parts may lie on no patch
        for q, src, dst in window_pieces(int(item[4]), int(item[5]), p):
            j = int(item[q])
            if j < 0:
                continue
            k = int(self.ids[j])
            np.copyto(codes[(slice(None), *dst)], self.store.embeddings[k][(slice(None), *src)])
            z[dst] = self.store.dsm[k][src]
            mask[dst] = True if self.masks is None else self.masks[j][src]
            if c is not None:
                assert self.store.coarse_dem is not None  # checked in __init__
                c[dst] = self.store.coarse_dem[k][src]
        mask &= embeddings.valid_mask(codes) & ~np.isnan(z)
        if self.dem is not None and c is not None:
            mask &= ~np.isnan(c)
            if self.dem.channel:
                extra[0] = dem_channel(c, self.dem)
            if self.dem.residual:
                z = z - c
        return np.where(mask, (z - self.mean) / self.std, 0.0), mask


# A window's up to four patches: its top-left one, then the patches one patch size to the
# right, below, and below-right of it (the items' first four columns; -1 = no such patch).
QUADRANTS = ((0, 0), (0, 1), (1, 0), (1, 1))
Slices = tuple[slice, slice]


def window_pieces(dy: int, dx: int, p: int) -> list[tuple[int, Slices, Slices]]:
    """(quadrant, slices in that patch, slices in the window) of a window at (dy, dx) px.

    The window starts ``dy`` rows and ``dx`` columns into its top-left patch (0 <= dy, dx < p);
    pieces of zero size are left out.
    """
    out = []
    for q, (down, right) in enumerate(QUADRANTS):
        src_r, dst_r = (
            (slice(0, dy), slice(p - dy, p)) if down else (slice(dy, p), slice(0, p - dy))
        )
        src_c, dst_c = (
            (slice(0, dx), slice(p - dx, p)) if right else (slice(dx, p), slice(0, p - dx))
        )
        if src_r.stop > src_r.start and src_c.stop > src_c.start:
            out.append((q, (src_r, src_c), (dst_r, dst_c)))
    return out


def draw_windows(
    origins: np.ndarray,
    masks: np.ndarray,
    n: int,
    min_fraction: float,
    rng: np.random.Generator,
    attempts: int = 50,
) -> np.ndarray:
    """``n`` random training windows as dataset items (:meth:`PatchDataset.with_windows`).

    Use it to draw each epoch's training windows: a patch of ``origins`` (N, 2: row, col of the
    patches, all of one size P) uniformly, then an offset in [0, P) along each axis; the
    window is kept if at least ``min_fraction`` of its pixels are set in ``masks`` (N, P, P:
    the pixels that enter the loss), else drawn again (after ``attempts`` draws, the patch
    itself). Items: (top-left, right, below, below-right patch index or -1, dy, dx).
    """
    p = masks.shape[-1]
    where = {(int(r), int(c)): i for i, (r, c) in enumerate(origins)}
    items = np.empty((n, len(QUADRANTS) + 2), np.int64)
    for w in range(n):
        for _ in range(attempts):
            i, dy, dx = int(rng.integers(len(origins))), *map(int, rng.integers(0, p, 2))
            r, c = origins[i]
            quads = [where.get((r + p * down, c + p * right), -1) for down, right in QUADRANTS]
            kept = sum(
                int(masks[quads[q]][src].sum())
                for q, src, _ in window_pieces(dy, dx, p)
                if quads[q] >= 0
            )
            if kept >= min_fraction * p * p:
                break
        else:  # a fragmented training area: the last patch drawn, as tiled
            quads, dy, dx = [i, -1, -1, -1], 0, 0
        items[w] = [*quads, dy, dx]
    return items


_DEVICE_LUTS: dict[torch.device, torch.Tensor] = {}


def model_input(
    codes: torch.Tensor, extra: torch.Tensor, device: torch.device, channels_last: bool = True
) -> torch.Tensor:
    """The network's input from a batch: float32 (B, bands + E, P, P) on ``device``.

    Use it on every batch of a :class:`PatchDataset` right before the model: the embeddings
    cross to ``device`` as stored and are de-quantized there (nodata as 0), AEF codes with the
    same float32 table as :func:`aefheight.core.aef.dequantize`, so values are identical on every
    device. On the CPU int8 codes are put channels-last as int8 (a quarter of the bytes to
    move) and OpenCV's threaded lookup writes the float32 input in place; elsewhere a gather on
    the device. ``channels_last=False`` gives the plain (NCHW) layout, faster for float32
    convolutions on CPUs without native bf16 (benchmarks/README.md).
    """
    codes = codes.to(device, non_blocking=True)
    b, bands, p, q = codes.shape
    shape = (b, bands + extra.shape[1], p, q)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    if device.type != "cpu" or codes.dtype != torch.int8:
        x = torch.empty(shape, dtype=torch.float32, device=device)
        x[:, :bands] = dequantize_on_device(codes)
        x[:, bands:] = extra.to(device, non_blocking=True)
        return x.contiguous(memory_format=layout)
    if not channels_last:
        if extra.shape[1] == 0:
            return torch.from_numpy(aef.dequantize(codes.numpy(), nodata_value=0.0))
        x = torch.empty(shape, dtype=torch.float32)
        x[:, :bands] = torch.from_numpy(aef.dequantize(codes.numpy(), nodata_value=0.0))
        x[:, bands:] = extra
        return x
    x = torch.empty(shape, dtype=torch.float32, memory_format=torch.channels_last)
    nhwc = x.permute(0, 2, 3, 1).numpy()  # x's own memory, (B, P, P, C) C-contiguous
    codes_nhwc = _channels_last_codes(codes.numpy())
    if extra.shape[1] == 0:
        aef.dequantize(codes_nhwc, nodata_value=0.0, out=nhwc)
    else:
        nhwc[..., :bands] = aef.dequantize(codes_nhwc, nodata_value=0.0)
        nhwc[..., bands:] = extra.permute(0, 2, 3, 1).numpy()
    return x


def _channels_last_codes(codes: np.ndarray) -> np.ndarray:
    """int8 (B, C, P, P) -> (B, P, P, C): OpenCV's blocked transpose, ~5x torch's permute here."""
    import cv2

    b, c, p, q = codes.shape
    out = np.empty((b, p, q, c), np.int8)
    for i in range(b):
        src = np.ascontiguousarray(codes[i]).view(np.uint8).reshape(c, p * q)
        cv2.transpose(src, dst=out[i].view(np.uint8).reshape(p * q, c))
    return out


def dequantize_on_device(codes: torch.Tensor) -> torch.Tensor:
    """:func:`aefheight.core.embeddings.dequantize` (nodata as 0) on ``codes``' device.

    AEF codes: a gather in the float32 table; float32 values: NaN becomes 0.
    """
    if codes.dtype != torch.int8:
        return torch.nan_to_num(codes.float(), nan=0.0)
    if codes.device not in _DEVICE_LUTS:
        lut = aef.dequantization_table(nodata_value=0.0)
        _DEVICE_LUTS[codes.device] = torch.from_numpy(lut).to(codes.device)
    return _DEVICE_LUTS[codes.device][codes.view(torch.uint8).int()]


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

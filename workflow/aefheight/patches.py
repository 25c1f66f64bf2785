"""Tiling: cut co-registered patches into an int8 patch store with a GeoParquet index.

The store is two ``.npy`` files that training memory-maps: ``embeddings.npy`` (N, 64, P, P)
int8 codes, exactly as AEF stores them, and ``dsm.npy`` (N, P, P) float32 heights with NaN for
nodata. Each patch is one contiguous run of bytes, so reading a patch is one sequential read.
``index.parquet`` has one row per patch: pixel offsets, footprint, valid fraction and height
statistics. De-quantization happens at load time (:class:`PatchDataset`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import torch
from shapely.geometry import box
from tqdm import tqdm

from . import aef
from .errors import ConfigError, NoValidData, RasterError, TooFewPatches
from .raster import Grid, atomic_path, check_same_grid, open_raster, read_checked

log = logging.getLogger(__name__)

STRIDE_MULTIPLE = 32  # U-Net++ (and U-Net, depth 5) need sides divisible by 32


@dataclass(frozen=True)
class TilingSettings:
    """Settings of the tiling step (config ``tiling``)."""

    patch_size: int = 256
    stride: int | None = None  # None: patch_size (no overlap)
    min_valid_fraction: float = 0.5

    def check(self, section: str) -> None:
        if self.patch_size <= 0 or self.patch_size % STRIDE_MULTIPLE:
            raise ConfigError(
                f"{section}.patch_size = {self.patch_size} must be a positive multiple of "
                f"{STRIDE_MULTIPLE} (the encoder's output stride; U-Net++ needs it)"
            )
        if self.stride is not None and self.stride <= 0:
            raise ConfigError(f"{section}.stride must be > 0")
        if not 0.0 < self.min_valid_fraction <= 1.0:
            raise ConfigError(f"{section}.min_valid_fraction must be in (0, 1]")


def read_dsm_block(ds: rasterio.io.DatasetReader, window=None) -> np.ndarray:
    """Read DSM band 1 as float32 with NaN for nodata (declared nodata only)."""
    z = read_checked(ds, window, indexes=1).astype(np.float32, copy=False)
    nd = ds.nodata
    if nd is not None and not np.isnan(nd):
        z[z == nd] = np.nan
    return z


def check_inputs(emb: rasterio.io.DatasetReader, dsm: rasterio.io.DatasetReader) -> Grid:
    """Check the embedding and DSM rasters are usable together; return their grid."""
    if emb.count != aef.BANDS:
        raise RasterError(f"{emb.name} has {emb.count} bands; AEF embeddings have {aef.BANDS}")
    if emb.dtypes[0] != "int8":
        raise RasterError(
            f"{emb.name} is {emb.dtypes[0]}; embeddings must stay AEF int8 codes "
            "(nodata -128): do not de-quantize before tiling"
        )
    if dsm.count != 1:
        raise RasterError(f"{dsm.name} has {dsm.count} bands; a DSM has 1")
    grid = Grid.of(emb)
    check_same_grid(grid, Grid.of(dsm), emb.name, dsm.name)
    return grid


def _check_nan_declared(dsm: rasterio.io.DatasetReader, z: np.ndarray) -> None:
    if np.isnan(z).any() and (dsm.nodata is None) and np.issubdtype(z.dtype, np.floating):
        raise RasterError(
            f"{dsm.name} holds NaN but declares no nodata value; declare it "
            "(e.g. gdal_edit.py -a_nodata nan) so NaN is not taken for a height"
        )


def _shrink_npy(path: Path, n: int) -> None:
    """Rewrite a .npy header to keep only the first ``n`` rows and truncate the file."""
    with open(path, "r+b") as fh:
        version = np.lib.format.read_magic(fh)
        read_header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, fortran, dtype = read_header(fh)
        offset = fh.tell()
        new_shape = (n, *shape[1:])
        header = {
            "descr": np.lib.format.dtype_to_descr(dtype),
            "fortran_order": fortran,
            "shape": new_shape,
        }
        text = repr(header)
        start = 8 + (2 if version == (1, 0) else 4)  # magic + version + header length field
        room = offset - start
        text = text + " " * (room - len(text) - 1) + "\n"
        fh.seek(start)
        fh.write(text.encode("latin1"))
        fh.truncate(offset + n * int(np.prod(shape[1:])) * dtype.itemsize)
    if np.load(path, mmap_mode="r").shape != new_shape:  # numpy must read the new header
        raise RuntimeError(f"could not shrink {path} to {new_shape}")


def patch_origins(size: int, patch: int, stride: int) -> list[int]:
    """Offsets of patches fully inside ``size`` pixels."""
    if size < patch:
        return []
    return list(range(0, size - patch + 1, stride))


def tile(
    embeddings_path: Path, dsm_path: Path, out_dir: Path, s: TilingSettings
) -> gpd.GeoDataFrame:
    """Cut the AOI into patches and write the patch store and index into ``out_dir``.

    Patches lie fully inside the AOI on a regular grid (``stride`` apart); a patch is kept when
    at least ``min_valid_fraction`` of its pixels have both valid embeddings and a valid DSM.

    Returns:
        The index (also written to ``out_dir/index.parquet``).
    """
    p = s.patch_size
    stride = s.stride or p
    out_dir.mkdir(parents=True, exist_ok=True)
    with open_raster(embeddings_path) as emb, open_raster(dsm_path) as dsm:
        grid = check_inputs(emb, dsm)
        rows, cols = patch_origins(grid.height, p, stride), patch_origins(grid.width, p, stride)
        if not rows or not cols:
            raise TooFewPatches(
                f"the AOI ({grid.width}x{grid.height} px) is smaller than one "
                f"{p}x{p} px patch; use a larger AOI or a smaller tiling.patch_size"
            )
        n_max = len(rows) * len(cols)
        records = []
        emb_final, dsm_final = out_dir / "embeddings.npy", out_dir / "dsm.npy"
        with atomic_path(emb_final) as emb_tmp, atomic_path(dsm_final) as dsm_tmp:
            e_store = np.lib.format.open_memmap(emb_tmp, "w+", np.int8, (n_max, aef.BANDS, p, p))
            z_store = np.lib.format.open_memmap(dsm_tmp, "w+", np.float32, (n_max, p, p))
            n = 0
            any_valid = False
            for r0 in tqdm(rows, desc="tiling", unit="patch row", mininterval=5):
                win = ((r0, r0 + p), (0, grid.width))
                z = read_dsm_block(dsm, win)
                _check_nan_declared(dsm, z)
                codes = read_checked(emb, win)
                valid = aef.valid_mask(codes) & ~np.isnan(z)
                any_valid |= bool(valid.any())
                for c0 in cols:
                    v = valid[:, c0 : c0 + p]
                    frac = float(v.mean())
                    if frac < s.min_valid_fraction:
                        continue
                    zp = np.where(v, z[:, c0 : c0 + p], np.nan)
                    e_store[n] = codes[:, :, c0 : c0 + p]
                    z_store[n] = zp
                    x0, y0 = grid.transform @ (c0, r0)
                    x1, y1 = grid.transform @ (c0 + p, r0 + p)
                    records.append(
                        {
                            "patch_id": n,
                            "row": r0,
                            "col": c0,
                            "size": p,
                            "valid_fraction": frac,
                            "h_mean": float(np.nanmean(zp)),
                            "h_min": float(np.nanmin(zp)),
                            "h_max": float(np.nanmax(zp)),
                            "h_std": float(np.nanstd(zp)),
                            "geometry": box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)),
                        }
                    )
                    n += 1
            e_store.flush()
            z_store.flush()
            del e_store, z_store
            if not any_valid:
                raise NoValidData(
                    f"no pixel has both valid embeddings ({embeddings_path}) and a valid DSM "
                    f"({dsm_path}): check nodata values and that both cover the AOI"
                )
            if n == 0:
                raise TooFewPatches(
                    f"none of the {n_max} patches has >= {s.min_valid_fraction:.0%} valid "
                    "pixels; lower tiling.min_valid_fraction or check the inputs' nodata"
                )
            _shrink_npy(emb_tmp, n)
            _shrink_npy(dsm_tmp, n)
            index = gpd.GeoDataFrame(pd.DataFrame.from_records(records), crs=grid.crs)
            with atomic_path(out_dir / "index.parquet") as tmp:
                index.to_parquet(tmp)
    log.info("kept %d of %d patches of %d px", n, n_max, p)
    return index


class PatchStore:
    """Read access to a patch store written by :func:`tile` (memory-mapped, int8 kept).

    ``embeddings`` and ``dsm`` are memory maps; a patch is one contiguous run of bytes in each.
    The training reader reads a batch with :meth:`prefetch` first, so that the disk fetches the
    batch's patches at once instead of one page fault after another (benchmarks/README.md).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.embeddings = np.load(self.directory / "embeddings.npy", mmap_mode="r")
        self.dsm = np.load(self.directory / "dsm.npy", mmap_mode="r")
        self._fds: tuple[int, ...] | None = None

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    def __getstate__(self) -> dict:  # pickled (spawned workers): reopen, never copy the data
        return {"directory": self.directory}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["directory"])

    def __del__(self) -> None:
        for fd in getattr(self, "_fds", None) or ():
            os.close(fd)

    def prefetch(self, ks) -> None:
        """Ask the kernel to start reading these patches now (``POSIX_FADV_WILLNEED``).

        Called with a batch's patches before they are read one by one, it lets the disk work
        on all of them at once: cold random reads ~2-4x faster here (benchmarks/README.md).
        Only a hint: for cached patches it costs a cheap system call, and it changes nothing
        that is read. The descriptors carry no file position, so forked workers may share them.
        """
        if self._fds is None:
            self._fds = tuple(
                os.open(self.directory / n, os.O_RDONLY) for n in ("embeddings.npy", "dsm.npy")
            )
        for fd, arr in zip(self._fds, (self.embeddings, self.dsm), strict=True):
            size = int(np.prod(arr.shape[1:])) * arr.dtype.itemsize
            for k in ks:
                os.posix_fadvise(fd, arr.offset + int(k) * size, size, os.POSIX_FADV_WILLNEED)

    def read(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Patch ``k`` copied into RAM: int8 codes (64, P, P) and float32 heights (P, P)."""
        return np.array(self.embeddings[int(k)]), np.array(self.dsm[int(k)])


class PatchDataset(torch.utils.data.Dataset):
    """Patches as tensors: de-quantized embeddings, standardized target, validity mask.

    Use it for training and validation; augmentation happens on batches in the training loop
    so that it is reproducible from the seed and epoch alone.

    Returns per item ``(x, y, mask)``: x float32 (64, P, P) with nodata as 0, y float32
    (1, P, P) standardized with ``(h - mean) / std`` (0 where invalid), mask bool (1, P, P).
    ``masks`` (N, P, P), when given, further restricts each patch's mask (e.g. the split's
    buffer pixels are left out of the loss).
    """

    def __init__(
        self,
        store: PatchStore,
        ids: np.ndarray,
        mean: float,
        std: float,
        masks: np.ndarray | None = None,
    ) -> None:
        self.store, self.ids, self.mean, self.std = store, np.asarray(ids), mean, std
        self.masks = masks

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
        y = np.where(mask, (z - self.mean) / self.std, 0.0).astype(np.float32)
        return torch.from_numpy(x), torch.from_numpy(y[None]), torch.from_numpy(mask[None])

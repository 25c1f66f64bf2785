"""The patch store as training reads it: memory-mapped ``.npy`` rows, one or several shards.

The store (written by :mod:`.patches`) is two or three ``.npy`` files: ``embeddings.npy``
(N, bands, P, P) as the embeddings raster stores them (int8 AEF codes or float32 values),
``dsm.npy`` (N, P, P) float32 heights with NaN for nodata, and the coarse DEM's. Each patch is
one contiguous run of bytes, so reading a patch is one sequential read. No torch here.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from aefheight.core.errors import RasterError


class Rows:
    """The rows of several ``.npy`` memory maps of one shape, read as one array's rows.

    A sharded patch store (one store per shard, :func:`.patches.merge_shard_indexes`) reads
    through it.
    """

    def __init__(self, arrays: Sequence[np.ndarray]) -> None:
        self.arrays = list(arrays)
        self.starts = np.cumsum([0, *(len(a) for a in self.arrays)])
        self.shape = (int(self.starts[-1]), *self.arrays[0].shape[1:])
        self.dtype = self.arrays[0].dtype

    def __len__(self) -> int:
        return self.shape[0]

    def locate(self, ks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(array, row in it) of every row ``ks``."""
        i = np.searchsorted(self.starts, ks, side="right") - 1
        return i, ks - self.starts[i]

    def __getitem__(self, k: int) -> np.ndarray:
        (i,), (j,) = self.locate(np.array([int(k)]))
        return self.arrays[i][j]


def _paths(p: Path | Sequence[Path] | None) -> list[Path]:
    return [] if p is None else [Path(p)] if isinstance(p, str | Path) else [Path(q) for q in p]


class PatchStore:
    """Read access to a patch store written by :func:`tile` (memory-mapped, codes kept).

    ``embeddings``, ``dsm`` (and ``coarse_dem`` when given) are memory maps; a patch is one
    contiguous run of bytes in each. The training reader reads a batch with :meth:`prefetch`
    first, so that the disk fetches the batch's patches at once instead of one page fault after
    another (benchmarks/README.md). A sharded AOI has one store per shard: give each file's
    list in the shards' order (patch ``k`` is then row ``k`` of the stores taken in turn).
    """

    def __init__(
        self,
        embeddings: Path | Sequence[Path],
        dsm: Path | Sequence[Path],
        coarse_dem: Path | Sequence[Path] | None = None,
    ) -> None:
        self.files = (_paths(embeddings), _paths(dsm), _paths(coarse_dem))
        parts = [[np.load(q, mmap_mode="r") for q in f] for f in self.files]
        for f, arrays in zip(self.files[1:], parts[1:], strict=True):
            if arrays and [a.shape[0] for a in arrays] != [a.shape[0] for a in parts[0]]:
                raise RasterError(
                    f"{', '.join(map(str, f))} hold other patch counts than "
                    f"{', '.join(map(str, self.files[0]))}: all come from one tile run; rerun tile"
                )
        self.parts = [tuple(a) for a in zip(*(p for p in parts if p), strict=True)]
        one = len(self.parts) == 1
        self.embeddings, self.dsm = (a[0] if one else Rows(a) for a in parts[:2])
        self.coarse_dem = (parts[2][0] if one else Rows(parts[2])) if parts[2] else None
        self.shards = Rows([a[0] for a in self.parts])  # where each patch lies
        self._fds: list[tuple[int, ...]] | None = None

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def bands(self) -> int:
        """The embeddings' band count (the data's, not a constant)."""
        return int(self.embeddings.shape[1])

    def __getstate__(self) -> dict:  # pickled (spawned workers): reopen, never copy the data
        return {"files": self.files}

    def __setstate__(self, state: dict) -> None:
        PatchStore.__init__(self, *state["files"])

    def __del__(self) -> None:
        for fds in getattr(self, "_fds", None) or ():
            for fd in fds:
                os.close(fd)

    def check_index(self, table: pd.DataFrame) -> None:
        """Stop unless ``table``'s patches lie where its ``shard`` and ``shard_row`` say.

        A sharded index read with its stores in another order would train on wrong patches.
        """
        sharded = "shard" in table.columns
        if not sharded and len(self.parts) == 1:
            return
        i, j = self.shards.locate(table["patch_id"].to_numpy(np.int64))
        if not sharded or not (
            (i == table["shard"].to_numpy()).all() and (j == table["shard_row"].to_numpy()).all()
        ):
            raise RasterError(
                f"the patch index does not match the {len(self.parts)} stores "
                f"{', '.join(map(str, self.files[0]))}: give the shards' stores in the order "
                "of the index's merge (rule merge_patches), one store per shard"
            )

    def prefetch(self, ks: Iterable[int] | np.ndarray) -> None:
        """Ask the kernel to start reading these patches now (``POSIX_FADV_WILLNEED``).

        Called with a batch's patches before they are read one by one, it lets the disk work
        on all of them at once: cold random reads ~2-4x faster here (benchmarks/README.md).
        Only a hint: for cached patches it costs a cheap system call, and it changes nothing
        that is read. The descriptors carry no file position, so forked workers may share them.
        """
        if self._fds is None:
            files = [f for f in self.files if f]
            self._fds = [
                tuple(os.open(f[i], os.O_RDONLY) for f in files) for i in range(len(files[0]))
            ]
        shard, row = self.shards.locate(np.fromiter(ks, np.int64))
        for i, j in zip(shard.tolist(), row.tolist(), strict=True):
            for fd, arr in zip(self._fds[i], self.parts[i], strict=True):
                size = int(np.prod(arr.shape[1:])) * arr.dtype.itemsize
                os.posix_fadvise(fd, arr.offset + j * size, size, os.POSIX_FADV_WILLNEED)

    def read(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Patch ``k`` copied into RAM: its embeddings (bands, P, P) and heights (P, P)."""
        return np.array(self.embeddings[int(k)]), np.array(self.dsm[int(k)])

"""TorchGeo side of bench_sampling.py; runs in its own Python >= 3.12 venv (TorchGeo 0.10).

Reads co-registered (embeddings, DSM) patches the way TorchGeo's documentation does it: two
``RasterDataset`` (image + float regression target) joined with ``&`` (an
``IntersectionDataset``) and indexed with the queries of a ``RandomGeoSampler`` or a
``GridGeoSampler``. Prints one JSON line per pass (cold: as the parent left the page cache,
i.e. evicted; warm: as many new queries, the files read into the page cache first).

Standalone on purpose: it imports nothing from the project, whose dependencies live in the
other venv.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torchgeo.datasets import RasterDataset, stack_samples  # noqa: F401  (stack_samples: docs)
from torchgeo.samplers import GridGeoSampler, RandomGeoSampler


class Embeddings(RasterDataset):
    """AEF-like int8 x 64 embeddings; TorchGeo casts images to float32."""

    is_image = True


class Dsm(RasterDataset):
    """Reference heights as a float32 regression target (TorchGeo's documented override)."""

    is_image = False

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--embeddings", type=Path, required=True)
    ap.add_argument("--dsm", type=Path, required=True)
    ap.add_argument("--patch", type=int, default=256)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--budget", type=float, default=60.0, help="seconds per pass at most")
    ap.add_argument("--sampler", choices=["random", "grid"], default="random")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(1)

    def dataset():
        return Embeddings(paths=[a.embeddings]) & Dsm(paths=[a.dsm])

    t0 = time.perf_counter()
    ds = dataset()
    if a.sampler == "random":
        g = torch.Generator().manual_seed(a.seed)
        sampler = RandomGeoSampler(ds, size=a.patch, length=2 * a.n, generator=g)
    else:
        sampler = GridGeoSampler(ds, size=a.patch, stride=a.patch)
    queries = list(sampler)[: 2 * a.n]
    setup = time.perf_counter() - t0
    half = len(queries) // 2

    # cold: the first half, files evicted by the parent; warm: the second half, files read
    # into the page cache first and a new dataset (no file handles or GDAL blocks carried over)
    for name, part in (("cold", queries[:half]), ("warm", queries[half:])):
        if name == "warm":
            del ds
            buf = bytearray(8 << 20)
            for f in (a.embeddings, a.dsm):
                with open(f, "rb", buffering=0) as fh:
                    while fh.readinto(buf):
                        pass
            ds = dataset()
        nbytes, k = 0, 0
        t0 = time.perf_counter()
        for q in part:
            s = ds[q]
            nbytes += s["image"].numel() + s["mask"].numel() * 4  # source bytes: int8 + f32
            k += 1
            if time.perf_counter() - t0 > a.budget:
                break
        dt = time.perf_counter() - t0
        shape = tuple(s["image"].shape), str(s["image"].dtype), tuple(s["mask"].shape)
        rec = {"pass": name, "patches": k, "seconds": dt, "source_bytes": nbytes}
        rec |= {"setup_s": setup, "sample": repr(shape)}
        print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()

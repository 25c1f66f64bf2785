"""Checks Snakemake runs once before any job: size, local inputs and config files.

Use :func:`check_run` from the workflow (``common.smk``, main process): each AOI's outputs are
estimated from its grid (:class:`Plan`) and an AOI larger than ``limits.max_aoi_km2`` is
refused; a local DSM must cover the AOI and may not hide holes behind a fill value.
:func:`check_disk` then refuses a run whose outputs exceed the free disk where results go
(Snakemake's ``onstart``: not in a dry run). A refusal is one line and nothing is written.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from aefheight.core import aef
from aefheight.core.errors import ConfigError, TooLarge
from aefheight.models.kinds import COARSE_DEM

if TYPE_CHECKING:  # PROJ and shapely only where a real AOI is planned
    from aefheight.inputs.sources.aoi import AOI

log = logging.getLogger(__name__)

FLOAT_COG_BPP = 4 * 4 / 3  # a float32 COG with its overviews (predictions, the AOA's DI)
# Bytes per AOI pixel of the files every AOI writes once (uncompressed: an upper bound).
INPUT_BPP = {
    "inputs/embeddings.tif": aef.BANDS,  # int8 codes; other products: embedding_bpp
    "inputs/dsm.tif": 4,
    "inputs/coarse_dem.tif": 4,
}
STORE_BPP = {  # the patch store: every patch kept, at the tiling stride (scaled below)
    "patches/embeddings.npy": aef.BANDS,
    "patches/dsm.npy": 4,
    "patches/coarse_dem.npy": 4,
}


@dataclass(frozen=True)
class LimitsSettings:
    """Caps checked before any job (config ``limits``)."""

    SECTION: ClassVar[str] = "limits"
    max_aoi_km2: float | None  # None: no cap
    check_free_disk: bool  # refuse a run whose estimated outputs exceed the free disk


@dataclass(frozen=True)
class Plan:
    """An AOI's size, known before any job: ground area, grid and estimated outputs.

    ``sizes`` maps each kind of AOI-sized output to (bytes of one file, how many files).
    """

    name: str
    km2: float
    height: int
    width: int
    sizes: dict[str, tuple[int, int]]

    @property
    def pixels(self) -> int:
        """The grid's pixel count."""
        return self.height * self.width

    @property
    def total(self) -> int:
        """Estimated bytes of all outputs."""
        return sum(one * n for one, n in self.sizes.values())

    def describe(self) -> str:
        """One line for the log: area, grid, the largest output and all outputs."""
        largest = max(one for one, _ in self.sizes.values())
        return (
            f"AOI {self.name!r}: {self.km2:,.0f} km², {self.width} x {self.height} = "
            f"{self.pixels:,} px; largest output {gb(largest)}, all outputs up to {gb(self.total)}"
        )


def plan(config: dict[str, Any], name: str, real: AOI | None = None) -> Plan:
    """The plan of AOI ``name`` of the filled config.

    A real AOI's grid (``real``, else built here: needs PROJ) gives its area and shape.
    """
    aoi = config["aois"][name]
    if aoi["source"] == "synthetic":
        s = aoi["synthetic"]
        shape = (s["height"], s["width"])
        km2 = shape[0] * shape[1] * s["pixel_size"] ** 2 / 1e6
    else:
        a = real or real_aoi(name, aoi)
        km2, shape = a.area_km2, (a.grid.height, a.grid.width)
    return Plan(name, km2, *shape, output_sizes(config, name, shape[0] * shape[1]))


def real_aoi(name: str, aoi: dict[str, Any]) -> AOI:
    """The target grid of the real AOI of filled section ``aois.<name>``."""
    from aefheight.core.schema import from_mapping
    from aefheight.inputs.sources.aoi import target_grid
    from aefheight.inputs.sources.spec import RealAOISettings

    spec = from_mapping(RealAOISettings, aoi, f"aois.{name}").aoi_spec(f"aois.{name}")
    return target_grid(name, spec, f"aois.{name}.aoi")


def embedding_bpp(aoi: dict[str, Any]) -> int:
    """Bytes per pixel of an AOI's embeddings: AEF int8 codes, or 4 per band of float32.

    A local product other than AEF counts as 128 float32 bands until its files are read.
    """
    from aefheight.core.embeddings import PRODUCTS  # rasterio: not at import (bare Snakemake)

    if aoi["source"] == "synthetic":
        s = aoi["synthetic"]
        bands = s["bands"] or PRODUCTS[s["product"]] or aef.BANDS
        return bands * (1 if s["product"] == "aef" else 4)
    if aoi["source"] == "local" and aoi["embeddings"]["product"] != "aef":
        return (PRODUCTS[aoi["embeddings"]["product"]] or 128) * 4
    return aef.BANDS  # int8 codes (a float AEF export: 4x, found when it is read)


def output_sizes(config: dict[str, Any], name: str, pixels: int) -> dict[str, tuple[int, int]]:
    """Each kind of AOI-sized output of AOI ``name``: (bytes of one file, how many files).

    Bytes are uncompressed (an upper bound); the count covers seeds, corrected predictions,
    k-fold splits and shard parts. A downloaded AOI adds its embedding block cache (under
    resources/, usually the same disk), and every AOI one prediction's scratch copy (a COG is
    written from a plain GeoTIFF beside it).
    """
    from aefheight.config import corrections

    t = config["tiling"]
    overlap = (t["patch_size"] / (t["stride"] or t["patch_size"])) ** 2
    folds = config["split"]["folds"] if config["split"]["folds"] >= 2 else 0
    splits = 1 + folds
    n_pred = (len(config["models"]) + len(corrections(config))) * len(config["seeds"]) * splits
    if len(config["seeds"]) >= 2:  # the seed ensembles of the nets and Ridges (single split)
        n_pred += sum(m["arch"] != COARSE_DEM for m in config["models"].values())
    parts = 2 if config["sharding"]["shard_px"] else 1  # a sharded step's parts, then the merge
    emb = embedding_bpp(config["aois"][name])
    sizes = {f: (pixels * (emb if "embeddings" in f else bpp), 1) for f, bpp in INPUT_BPP.items()}
    sizes |= {
        f: (int(pixels * (emb if "embeddings" in f else bpp) * overlap), parts)
        for f, bpp in STORE_BPP.items()
    }
    if config["aois"][name]["source"] == "synthetic":
        sizes["inputs/landcover.tif"] = (pixels, 1)
    else:
        sizes["resources/aef/blocks (cache)"] = (pixels * aef.BANDS, 1)
    sizes["split/split.tif"] = (pixels, splits)
    if folds:
        sizes["aoa/aoa.tif"] = (int(pixels * FLOAT_COG_BPP), splits)
    sizes["predictions/*.tif"] = (int(pixels * FLOAT_COG_BPP), n_pred * parts)
    methods = len(config["intervals"]["methods"])  # the single split's, two bands each
    sizes["intervals/*.tif"] = (int(pixels * 2 * FLOAT_COG_BPP), n_pred // splits * methods)
    sizes["scratch (a COG's plain copy)"] = (pixels * 4, 1)
    return sizes


def used_bytes(folder: str | os.PathLike) -> int:
    """Bytes the files under ``folder`` take (none if it does not exist)."""
    total = 0
    for f in Path(folder).rglob("*"):
        with contextlib.suppress(FileNotFoundError):  # a scratch file renamed meanwhile
            total += f.stat().st_size if f.is_file() else 0
    return total


def free_bytes(folder: str | os.PathLike) -> int:
    """Free bytes on the filesystem of ``folder`` (or of its nearest existing parent)."""
    p = Path(folder).absolute()
    while not p.exists():
        p = p.parent
    return shutil.disk_usage(p).free


def gb(n: float) -> str:
    """``n`` bytes for a message (GB from 1 GB, else MB)."""
    return f"{n / 1e9:,.1f} GB" if n >= 1e9 else f"{n / 1e6:,.0f} MB"


def check_size(p: Plan, limits: LimitsSettings, results: str | os.PathLike) -> None:
    """Refuse an AOI larger than ``limits.max_aoi_km2`` (naming the free disk too)."""
    cap = limits.max_aoi_km2
    if cap is not None and p.km2 > cap:
        raise TooLarge(
            f"{p.describe()}; {gb(free_bytes(results))} free at {Path(results).absolute()}: "
            f"larger than limits.max_aoi_km2 ({cap:,.0f} km²); shrink aois.{p.name}.aoi or "
            "raise limits.max_aoi_km2 (and check the disk)"
        )


def check_disk(plans: list[Plan], results: str | os.PathLike, limits: LimitsSettings) -> str:
    """Refuse a run whose outputs exceed the free disk where results go; return the log line.

    What ``results/<aoi>`` already holds counts as free (a rerun replaces it). Run it where
    outputs will be written (Snakemake's ``onstart``, not in a dry run).
    """
    results = Path(results)
    total = sum(p.total for p in plans)
    free = free_bytes(results) + sum(used_bytes(results / p.name) for p in plans)
    line = f"outputs up to {gb(total)}; {gb(free)} free at {results.absolute()}"
    if limits.check_free_disk and total > free:
        raise TooLarge(
            f"{'; '.join(p.describe() for p in plans)}; {gb(free)} free at "
            f"{results.absolute()}: not enough disk (an uncompressed estimate); free space, "
            "shrink the AOI, use fewer seeds, or set limits.check_free_disk: false"
        )
    return line


def check_run(config: dict[str, Any], results: str | os.PathLike = "results") -> list[Plan]:
    """The checks before any job that need no disk, on the filled config; the AOIs' plans.

    Raises:
        TooLarge: an AOI beyond ``limits.max_aoi_km2``.
        AOIOutsideCoverage, SuspiciousValues, ConfigError, RasterError: a local DSM that
            covers too little of its AOI, hides holes behind a fill value, or cannot be read;
            local embeddings of another band count, dtype or coverage than their product's.
        ImportError: PROJ or shapely are missing where Snakemake runs (the caller warns;
            fetch_dsm still checks a local DSM).
    """
    limits = limits_of(config)
    plans = []
    for name, aoi in config["aois"].items():
        real = None if aoi["source"] == "synthetic" else real_aoi(name, aoi)
        plans.append(plan(config, name, real))
        check_size(plans[-1], limits, results)
        check_calibration_band(config, plans[-1])
        if real is not None and aoi["dsm"]["source"] == "local":
            check_local_dsm(name, aoi, real)
        if real is not None and aoi["source"] == "local":
            check_local_embeddings(name, aoi, real)
    return plans


def check_calibration_band(config: dict[str, Any], p: Plan) -> None:
    """Refuse intervals whose validation band cannot fill their bins, even at its full share.

    An upper estimate (the grid times ``split.fractions.val``; nodata and the buffer take
    more), so a pass here is checked again on the real band by ``predict_interval``.
    """
    iv = config["intervals"]
    if not iv["methods"]:
        return
    bins = iv["height_bins"] if "by_height" in iv["methods"] else 1
    need, band = (
        iv["min_calibration_px"] * bins,
        int(p.pixels * config["split"]["fractions"]["val"]),
    )
    if band < need:
        raise ConfigError(
            f"aois.{p.name}: its validation band holds at most {band:,} px, fewer than the "
            f"{need:,} the intervals need ({bins} bins of intervals.min_calibration_px "
            f"{iv['min_calibration_px']}); lower intervals.height_bins or min_calibration_px, "
            "or widen split.fractions.val"
        )


def limits_of(config: dict[str, Any]) -> LimitsSettings:
    """The filled config's ``limits`` section."""
    from aefheight.core.schema import from_mapping

    return from_mapping(LimitsSettings, config["limits"], "limits")


def check_local_dsm(name: str, aoi: dict[str, Any], real: AOI | None = None) -> None:
    """Run ``fetch_dsm``'s checks of a local DSM before any job.

    Readable, one band, a CRS, covering the AOI (its grid ``real``, else built here), no
    holes hidden behind a fill value.
    """
    from aefheight.core.schema import from_mapping
    from aefheight.inputs.sources.local_dsm import local_dsm
    from aefheight.inputs.sources.spec import RealAOISettings

    section = f"aois.{name}"
    s = from_mapping(RealAOISettings, aoi, section)
    local_dsm(real or real_aoi(name, aoi), s.dsm_settings(section), f"{section}.dsm")


def check_local_embeddings(name: str, aoi: dict[str, Any], real: AOI) -> None:
    """Run ``fetch_embeddings``' checks of local embeddings (``source: local``) before any job."""
    from aefheight.core.schema import from_mapping
    from aefheight.inputs.sources.local_embeddings import check_local_embeddings as check
    from aefheight.inputs.sources.spec import RealAOISettings

    section = f"aois.{name}"
    s = from_mapping(RealAOISettings, aoi, section)
    check(real, s.embedding_settings(section), f"{section}.embeddings")

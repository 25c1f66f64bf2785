"""Checks Snakemake runs once before any job: size, local inputs and config files.

Use :func:`check_run` from the Snakefile (main process): each AOI's outputs are estimated from
its grid and refused when they exceed ``limits.max_aoi_km2`` or the free disk where results go;
a local DSM must cover the AOI and may not hide holes behind a fill value. A refusal is one
line and nothing is written. :func:`load_yaml` reads a config file naming the file, line and
column of a syntax error (``make study`` checks its config files with it before Snakemake).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import yaml

from .errors import ConfigError, TooLarge

log = logging.getLogger(__name__)

PREDICTION_BPP = 4 * 4 / 3  # float32 and the COG's overviews
# Bytes per AOI pixel of the files every AOI writes once (uncompressed: an upper bound).
INPUT_BPP = {
    "inputs/embeddings.tif": 64,  # AEF int8 codes (aef.BANDS bands)
    "inputs/dsm.tif": 4,
    "inputs/coarse_dem.tif": 4,
    "patches/embeddings.npy": 64,  # every patch kept, at the tiling stride (scaled below)
    "patches/dsm.npy": 4,
    "patches/coarse_dem.npy": 4,
}


@dataclass(frozen=True)
class LimitsSettings:
    """Caps checked before any job (config ``limits``)."""

    SECTION: ClassVar[str] = "limits"
    max_aoi_km2: float | None  # None: no cap (the free disk is still checked)


@dataclass(frozen=True)
class Extent:
    """An AOI's ground area and its grid's size, known before any download."""

    km2: float
    height: int
    width: int

    @property
    def pixels(self) -> int:
        return self.height * self.width


def extent(name: str, aoi: dict[str, Any]) -> Extent:
    """The extent of the filled section ``aois.<name>`` (a real AOI's needs PROJ)."""
    if aoi["source"] == "synthetic":
        s = aoi["synthetic"]
        km2 = s["width"] * s["height"] * s["pixel_size"] ** 2 / 1e6
        return Extent(km2, s["height"], s["width"])
    from .settings import from_mapping
    from .sources.aoi import target_grid
    from .sources.spec import RealAOISettings

    spec = from_mapping(RealAOISettings, aoi, f"aois.{name}").aoi_spec(f"aois.{name}")
    a = target_grid(name, spec, f"aois.{name}.aoi")
    return Extent(a.area_km2, a.grid.height, a.grid.width)


def output_sizes(config: dict[str, Any], name: str, pixels: int) -> dict[str, tuple[int, int]]:
    """Each kind of AOI-sized output of AOI ``name``: (bytes of one file, how many files).

    Bytes are uncompressed (an upper bound); the count covers seeds, corrected predictions,
    k-fold splits and shard parts.
    """
    from .config import corrections

    t = config["tiling"]
    overlap = (t["patch_size"] / (t["stride"] or t["patch_size"])) ** 2
    splits = 1 + (config["split"]["folds"] if config["split"]["folds"] >= 2 else 0)
    n_pred = (len(config["models"]) + len(corrections(config))) * len(config["seeds"]) * splits
    shard_copies = 2 if config["sharding"]["shard_px"] else 1  # the parts, then the merged file
    sizes = {
        f: (int(pixels * bpp * (overlap if f.startswith("patches/") else 1)), shard_copies)
        for f, bpp in INPUT_BPP.items()
    }
    if config["aois"][name]["source"] == "synthetic":
        sizes["inputs/landcover.tif"] = (pixels, 1)
    sizes["split/split.tif"] = (pixels, splits)
    sizes["predictions/*.tif"] = (int(pixels * PREDICTION_BPP), n_pred * shard_copies)
    return sizes


def free_bytes(folder: str | os.PathLike) -> int:
    """Free bytes on the filesystem of ``folder`` (or of its nearest existing parent)."""
    p = Path(folder).absolute()
    while not p.exists():
        p = p.parent
    return shutil.disk_usage(p).free


def used_bytes(folder: str | os.PathLike) -> int:
    """Bytes the files under ``folder`` take (the outputs a rerun replaces or keeps)."""
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())


def gb(n: float) -> str:
    """``n`` bytes for a message (GB, or MB below 0.1 GB)."""
    return f"{n / 1e9:,.1f} GB" if n >= 1e8 else f"{n / 1e6:,.1f} MB"


def check_size(
    name: str,
    ext: Extent,
    sizes: dict[str, tuple[int, int]],
    results: Path,
    limits: LimitsSettings,
    dry_run: bool = False,
) -> str:
    """Refuse an AOI over ``limits.max_aoi_km2`` or the free disk; return the log line.

    The disk is the one results go to; what ``results/<name>`` already holds counts as free
    (a rerun replaces it). A dry run, which writes nothing, is only warned about the disk.
    """
    total = sum(one * n for one, n in sizes.values())
    largest = max(one for one, _ in sizes.values())
    free = free_bytes(results) + (used_bytes(results / name) if (results / name).is_dir() else 0)
    what = (
        f"AOI {name!r}: {ext.km2:,.0f} km², {ext.width} x {ext.height} = {ext.pixels:,} px; "
        f"largest output {gb(largest)}, all outputs up to {gb(total)}; {gb(free)} free at "
        f"{results.absolute()}"
    )
    cap = limits.max_aoi_km2
    if cap is not None and ext.km2 > cap:
        raise TooLarge(
            f"{what}: larger than limits.max_aoi_km2 ({cap:,.0f} km²); shrink aois.{name}.aoi "
            "or raise limits.max_aoi_km2 (and check the disk)"
        )
    if total > free:
        problem = f"{what}: not enough disk; free space, shrink the AOI or use fewer seeds"
        if not dry_run:
            raise TooLarge(problem)
        return f"{problem} (a dry run: planned anyway)"
    return what


def check_run(
    config: dict[str, Any], results: str | os.PathLike = "results", dry_run: bool = False
) -> list[str]:
    """Every check before any job, on the filled config; one line per AOI for the log.

    Raises:
        TooLarge: an AOI beyond ``limits.max_aoi_km2`` or the free disk.
        AOIOutsideCoverage, SuspiciousValues, ConfigError, RasterError: a local DSM that
            covers too little of its AOI, hides holes behind a fill value, or cannot be read.
        ImportError: PROJ or shapely are missing where Snakemake runs (the jobs check).
    """
    from .settings import from_mapping

    limits = from_mapping(LimitsSettings, config["limits"], "limits")
    lines = []
    for name, aoi in config["aois"].items():
        ext = extent(name, aoi)
        sizes = output_sizes(config, name, ext.pixels)
        lines.append(check_size(name, ext, sizes, Path(results), limits, dry_run))
        if aoi["source"] != "synthetic" and aoi["dsm"]["source"] == "local":
            check_local_dsm(name, aoi)
    return lines


def check_local_dsm(name: str, aoi: dict[str, Any]) -> None:
    """Run ``fetch_dsm``'s checks of a local DSM before any job.

    Readable, one band, a CRS, covering the AOI, no holes hidden behind a fill value.
    """
    from .settings import from_mapping
    from .sources.aoi import target_grid
    from .sources.dsm import local_dsm
    from .sources.spec import RealAOISettings

    section = f"aois.{name}"
    s = from_mapping(RealAOISettings, aoi, section)
    grid = target_grid(name, s.aoi_spec(section), f"{section}.aoi")
    local_dsm(grid, s.dsm_settings(section), f"{section}.dsm")


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """A YAML config file as a mapping; a syntax error names the file, line and column."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(
            f"{where}: not valid YAML ({exc.problem or exc.context}); fix the file there"
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc}); fix the file") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file is a mapping of keys (aois:, models:, ...)")
    return data


def main(argv: list[str]) -> int:
    """``python -m aefheight.guards FILE...``: check config files parse (``make study``)."""
    try:
        for path in argv:
            load_yaml(path)
    except ConfigError as exc:
        print(f"aefheight: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

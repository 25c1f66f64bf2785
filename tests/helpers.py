"""Helpers every test module shares (on pytest's ``pythonpath``): running the real snakemake on
a tiny config, tiny GeoTIFFs written by code, and the patch store's file names."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import rasterio
import yaml

REPO = Path(__file__).resolve().parents[1]
AEF = ("aef", 64)  # the (product, bands) of the tiny AOI's embeddings, as checkpoints record

# The demo config shrunk so the whole DAG runs in about a minute on 2 cores.
TINY_OVERRIDES = {
    "aois": {
        "tiny": {
            "source": "synthetic",
            # a clear regional shift: the calibrated demo's comes mostly from its larger terrain
            "synthetic": {"width": 384, "height": 256, "seed": 5, "holes": 2, "shift_m": 120.0},
        }
    },
    "tiling": {"patch_size": 64},
    "models": {
        "unet": {"arch": "unet", "encoder": "resnet18", "decoder_channels": [32, 16, 8, 8, 4]},
        "unetplusplus": {
            "arch": "unetplusplus",
            "encoder": "resnet18",
            "decoder_channels": [32, 16, 8, 8, 4],
        },
        "ridge": {"arch": "ridge", "max_pixels": 5000},
        "ridge_ctx": {"arch": "ridge", "max_pixels": 5000, "scales_px": [1, 5, 15]},
        "coarse_dem": {"arch": "coarse_dem"},
        "unet_dem": {
            "arch": "unet",
            "encoder": "resnet18",
            "decoder_channels": [32, 16, 8, 8, 4],
            "dem_channel": True,
            "target": "residual",
        },
    },
    "correction": {"methods": ["linear", "quantile_map"], "models": ["unet"]},
    "split": {"buffer_px": 8},
    "training": {
        "max_epochs": 2,
        "patience": 2,
        "batch_size": 4,
        "windows_per_epoch": 16,
        "warmup_steps": 2,
        "min_steps": 0,
    },
    "prediction": {"window": None, "overlap": None, "batch_size": 4},
    "seeds": [0, 1],
}


# Credentials a user may have in the environment: none may end up in any output.
FAKE_TOKEN = "aefheight-fake-secret-8c1d"
FAKE_CREDENTIALS = {
    "GOOGLE_OAUTH_ACCESS_TOKEN": FAKE_TOKEN,
    "EE_TOKEN": FAKE_TOKEN,
    "AWS_SECRET_ACCESS_KEY": FAKE_TOKEN,
}


def tiny_config() -> dict:
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for key, value in copy.deepcopy(TINY_OVERRIDES).items():  # callers may edit their copy
        cfg[key] = {**cfg[key], **value} if key not in ("aois", "models", "seeds") else value
    return cfg


def snakemake_cmd(workdir: Path, *args: str) -> list[str]:
    """The command running this environment's snakemake on the repo's Snakefile in ``workdir``
    with ``workdir/config.yaml``."""
    exe = shutil.which("snakemake", path=os.path.dirname(sys.executable)) or "snakemake"
    return [
        exe,
        "--snakefile",
        str(REPO / "workflow" / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(workdir / "config.yaml"),
        *args,
    ]


def snakemake(
    workdir: Path,
    *args: str,
    check: bool = True,
    env: dict[str, str] | None = None,
    timeout: float = 1800,
) -> subprocess.CompletedProcess:
    """Run the real snakemake of this environment on the repo's Snakefile in ``workdir``."""
    env = {
        **os.environ,
        **(env or {}),
        "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}",
    }
    proc = subprocess.run(
        snakemake_cmd(workdir, *args),
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return proc


def write_tif(
    path: Path, data: np.ndarray, crs: str | None = "EPSG:32630", res: float = 10.0, **profile
) -> Path:
    """A tiny GeoTIFF of ``data`` (bands, rows, cols) on a 10 m UTM grid; ``profile`` adds or
    overrides creation options (nodata, dtype...); ``crs=None`` writes none."""
    prof = {
        "driver": "GTiff",
        "width": data.shape[-1],
        "height": data.shape[-2],
        "count": data.shape[0],
        "dtype": data.dtype.name,
        "transform": rasterio.transform.from_origin(500000, 5000000, res, res),
        **profile,
    }
    if crs:
        prof["crs"] = crs
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(data)
    return path


def store_paths(folder: Path) -> dict[str, Path]:
    """The tile step's outputs in ``folder``, named as the rule names them."""
    return {
        "index": folder / "index.parquet",
        "store_embeddings": folder / "embeddings.npy",
        "store_dsm": folder / "dsm.npy",
    }


def tile_flags(folder: Path, coarse_dem: Path | str) -> list[str]:
    """The tile subcommand's store flags into ``folder``, with the coarse DEM it reads."""
    outs = {**store_paths(folder), "store_coarse_dem": folder / "coarse_dem.npy"}
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in outs.items()]
    return [f"--coarse-dem={coarse_dem}", *flags]


def store_files(folder: Path) -> tuple[Path, Path]:
    """The patch store's two files in ``folder`` (for PatchStore)."""
    p = store_paths(folder)
    return p["store_embeddings"], p["store_dsm"]

"""Helpers for tests that run the real `snakemake` on a tiny config in a temporary folder."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]

# The demo config shrunk so the whole DAG runs in about a minute on 2 cores.
TINY_OVERRIDES = {
    "aois": {
        "tiny": {
            "source": "synthetic",
            "synthetic": {"width": 384, "height": 256, "seed": 5, "holes": 2},
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
    },
    "split": {"buffer_px": 8},
    "training": {"max_epochs": 2, "patience": 2, "batch_size": 4},
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


def snakemake(
    workdir: Path, *args: str, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run the real snakemake of this environment on the repo's Snakefile in ``workdir``."""
    exe = shutil.which("snakemake", path=os.path.dirname(sys.executable)) or "snakemake"
    env = {
        **os.environ,
        **(env or {}),
        "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}",
    }
    proc = subprocess.run(
        [
            exe,
            "--snakefile",
            str(REPO / "Snakefile"),
            "--directory",
            str(workdir),
            "--configfile",
            str(workdir / "config.yaml"),
            *args,
        ],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return proc

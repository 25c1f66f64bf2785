"""Faults through the real entry points: kills, a full disk, unsafe names, leaked secrets."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import rasterio
import yaml
from aefheight.core.schema import make
from aefheight.models.factory import ModelSettings, build_model, save_checkpoint
from helpers import AEF, snakemake, tiny_config


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "aefheight", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


@pytest.mark.slow
def test_prediction_killed_mid_write_leaves_no_partial_file_and_rerun_completes(tiny_aoi, tmp_path):
    s = make(ModelSettings, arch="unet", decoder_channels=(32, 16, 8, 8, 4))
    save_checkpoint(tmp_path / "m.pt", build_model(s, 64), s, 50.0, 10.0, AEF, patch_size=64)
    out = tmp_path / "out" / "pred.tif"
    cmd = _cli(
        "predict",
        "--settings",
        '{"window": 64, "overlap": 48, "batch_size": 1}',
        "--embeddings",
        str(tiny_aoi["embeddings"]),
        "--checkpoint",
        str(tmp_path / "m.pt"),
        "--prediction",
        str(out),
        "--model",
        "unet",
        "--seed",
        "0",
    )
    proc = subprocess.Popen(cmd, env=_env(), stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120

    def scratch() -> list[Path]:
        return list(out.parent.glob(".pred.tif.*")) if out.parent.exists() else []

    while not scratch():
        assert proc.poll() is None, "prediction ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()  # never a partial file under the final name
    assert scratch()  # the killed run's scratch file
    subprocess.run(cmd, env=_env(), check=True, capture_output=True, timeout=300)
    with rasterio.open(out) as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
    assert [p.name for p in out.parent.iterdir()] == ["pred.tif"]  # stale scratch removed


def test_full_disk_is_one_clear_error_and_keeps_complete_files(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("NOT RUN: needs root to mount a small tmpfs")
    disk = tmp_path / "disk"
    disk.mkdir()
    if (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", str(disk)], capture_output=True
        ).returncode
        != 0
    ):
        pytest.skip("NOT RUN: mounting a tmpfs is not allowed here")
    try:
        proc = subprocess.run(
            _cli(
                "synthesize",
                "--settings",
                '{"width": 256, "height": 192}',
                "--embeddings",
                str(disk / "e.tif"),
                "--dsm",
                str(disk / "d.tif"),
                "--landcover",
                str(disk / "l.tif"),
                "--coarse-dem",
                str(disk / "c.tif"),
            ),
            env=_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        names = sorted(p.name for p in disk.iterdir())
    finally:
        subprocess.run(["umount", str(disk)], check=False)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("aefheight synthesize: error:") and "disk nearly full" in last
    assert "Traceback" not in proc.stderr
    assert names == [
        "c.tif",
        "d.tif",
        "l.tif",
    ]  # the complete DSM, land cover and coarse DEM stay; no partial embeddings


@pytest.mark.parametrize(
    ("section", "name"), [("aois", "../escape"), ("aois", "a/b"), ("models", "x;rm -rf")]
)
def test_names_that_would_escape_results_are_rejected(tmp_path, section, name):
    cfg = tiny_config()
    first = next(iter(cfg[section]))
    cfg[section] = {name: cfg[section][first]}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    out = snakemake(tmp_path, "-n", "--cores", "1", check=False)
    assert out.returncode != 0
    assert "does not match" in out.stdout + out.stderr
    assert not (tmp_path / "results").exists()


def test_split_fractions_that_do_not_add_up_stop_before_any_job(tmp_path):
    cfg = tiny_config()
    cfg["split"]["fractions"] = {"train": 0.6, "val": 0.2, "test": 0.3}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    out = snakemake(tmp_path, "--cores", "1", check=False)
    assert out.returncode != 0
    assert "split.fractions must be positive and add up to 1" in out.stdout + out.stderr
    assert not (tmp_path / "results").exists()

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch
from aefheight.models import ModelSettings, load_checkpoint
from aefheight.patches import PatchStore, TilingSettings, tile
from aefheight.split import SplitSettings, write_split
from aefheight.train import TrainSettings, augment, masked_mse, train_net, train_ridge

SMALL = {"arch": "unet", "decoder_channels": [32, 16, 8, 8, 4]}


@pytest.fixture(scope="module")
def store(tiny_aoi, tmp_path_factory):
    d = tmp_path_factory.mktemp("store")
    tile(tiny_aoi["embeddings"], tiny_aoi["dsm"], d, TilingSettings(32))
    write_split(
        d / "index.parquet",
        tiny_aoi["embeddings"],
        d / "split.gpkg",
        d / "split.tif",
        SplitSettings(),
    )
    return d


def test_augment_keeps_pairs_aligned():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4).repeat(1, 3, 1, 1)
    y = x[:, :1].clone()
    ax, ay = augment(x, y, g=g)
    torch.testing.assert_close(ax[:, :1], ay)
    assert sorted(ax[0, 0].flatten().tolist()) == sorted(x[0, 0].flatten().tolist())


def test_masked_mse_ignores_invalid():
    p, y = torch.zeros(1, 1, 2, 2), torch.tensor([[[[1.0, 1.0], [100.0, 100.0]]]])
    m = torch.tensor([[[[True, True], [False, False]]]])
    assert float(masked_mse(p, y, m)) == 1.0


def test_training_reduces_loss_and_writes_outputs(store, tmp_path):
    ms = ModelSettings(arch="unet", decoder_channels=(32, 16, 8, 8, 4))
    hist = train_net(
        store,
        store / "split.gpkg",
        ms,
        TrainSettings(max_epochs=4, patience=10, batch_size=4),
        0,
        tmp_path,
    )
    assert hist["train_loss"].iloc[-1] < hist["train_loss"].iloc[0]
    assert (tmp_path / "checkpoint.pt").exists() and not (tmp_path / "resume.pt").exists()
    _, ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ckpt["best_epoch"] == int(hist.loc[hist["val_loss"].idxmin(), "epoch"])
    assert pd.read_csv(tmp_path / "history.csv").shape[0] == 4


def test_early_stopping_stops(store, tmp_path):
    ms = ModelSettings(arch="unet", decoder_channels=(32, 16, 8, 8, 4))
    hist = train_net(
        store,
        store / "split.gpkg",
        ms,
        TrainSettings(max_epochs=30, patience=1, batch_size=4, lr=0.5),
        0,
        tmp_path,
    )
    assert len(hist) < 30
    assert not hist["best"].iloc[-1]


def test_ridge_conv_holds_sklearns_fit_on_the_same_pixels(store, tmp_path):
    from aefheight.train import sample_pixels, split_ids
    from sklearn.linear_model import Ridge

    info = train_ridge(store, store / "split.gpkg", ModelSettings(arch="ridge"), 0, tmp_path)
    model, _ = load_checkpoint(tmp_path / "checkpoint.pt")
    x, y = sample_pixels(PatchStore(store), split_ids(store / "split.gpkg")["train"], 200_000, 0)
    ref = Ridge(alpha=1.0).fit(x, y)
    np.testing.assert_allclose(
        model.weight.detach().numpy().ravel(), ref.coef_, rtol=1e-4, atol=1e-3
    )
    assert info["pixels"] == len(y)


@pytest.mark.slow
def test_killed_training_resumes_to_identical_result(store, tmp_path):
    """SIGKILL mid-run, rerun: same history and weights as an uninterrupted run (CPU)."""
    import json

    def cmd(out):
        return [
            sys.executable,
            "-m",
            "aefheight",
            "train",
            "--model",
            "unet",
            "--model-settings",
            json.dumps(SMALL),
            "--settings",
            json.dumps({"max_epochs": 4, "patience": 10, "batch_size": 4}),
            "--store",
            str(store),
            "--split",
            str(store / "split.gpkg"),
            "--seed",
            "7",
            "--out-dir",
            str(out),
            "--threads",
            "1",
        ]

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run(cmd(tmp_path / "full"), check=True, env=env, capture_output=True)

    proc = subprocess.Popen(cmd(tmp_path / "cut"), env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (tmp_path / "cut" / "resume.pt").exists() and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "cut" / "checkpoint.pt").exists()
    done = subprocess.run(cmd(tmp_path / "cut"), env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "resuming after epoch" in done.stderr

    full = pd.read_csv(tmp_path / "full" / "history.csv").drop(columns="seconds")
    cut = pd.read_csv(tmp_path / "cut" / "history.csv").drop(columns="seconds")
    pd.testing.assert_frame_equal(full, cut)
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)

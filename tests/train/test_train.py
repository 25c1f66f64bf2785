import os
import signal
import subprocess
import sys
import time

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import torch
from aefheight.core.schema import make
from aefheight.models.factory import ModelSettings, load_checkpoint
from aefheight.split.spatial import SplitSettings, write_split
from aefheight.tiles.patches import TilingSettings, cut_patches
from aefheight.tiles.store import PatchStore
from aefheight.train.fit import TrainSettings, augment, fit_net, masked_mse
from aefheight.train.ridge import fit_ridge
from helpers import store_files, store_paths

SMALL = {"arch": "unet", "decoder_channels": [32, 16, 8, 8, 4]}
# a few random windows an epoch (4 steps of 4), a short warm-up, early stopping from the start
FAST = {"windows_per_epoch": 16, "warmup_steps": 2, "min_steps": 0}


def _train(store, ms, ts, seed, out, dsm=None):
    """train_net on the module's patch store, its outputs named as the rule names them."""
    emb, z = store_files(store)
    return fit_net(
        emb, dsm or z, store / "split.gpkg", store / "split.tif", ms, ts, seed, "unet",
        out / "checkpoint.pt", out / "history.csv", out / "resume.pt",
        store_coarse_dem=store / "coarse_dem.npy", embeddings_path=store / "embeddings.tif",
    )  # fmt: skip


@pytest.fixture(scope="module")
def store(tiny_aoi, tmp_path_factory):
    d = tmp_path_factory.mktemp("store")
    cut_patches(
        tiny_aoi["embeddings"],
        tiny_aoi["dsm"],
        make(TilingSettings, patch_size=32),
        **store_paths(d),
        coarse_dem_path=tiny_aoi["coarse_dem"],
        store_coarse_dem=d / "coarse_dem.npy",
    )
    write_split(
        d / "index.parquet",
        tiny_aoi["embeddings"],
        d / "split.gpkg",
        d / "split.tif",
        d / "areas.csv",
        make(SplitSettings, method="blocks", block_patches=2, buffer_px=4),
    )
    (d / "embeddings.tif").symlink_to(tiny_aoi["embeddings"])  # the raster tiled
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
    ms = make(ModelSettings, arch="unet", decoder_channels=(32, 16, 8, 8, 4))
    ts = make(TrainSettings, max_epochs=4, patience=10, batch_size=4, **FAST)
    hist = _train(store, ms, ts, 0, tmp_path)
    # each epoch's windows differ, so its train loss is noisy; the validation patches are fixed
    assert hist["val_loss"].iloc[-1] < hist["val_loss"].iloc[0]
    assert (tmp_path / "checkpoint.pt").exists() and not (tmp_path / "resume.pt").exists()
    _, ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ckpt["best_epoch"] == int(hist.loc[hist["val_loss"].idxmin(), "epoch"])
    assert ckpt["patch_size"] == 32 and ckpt["stopped"] == "max_epochs"
    assert ckpt["steps"] == hist["steps"].iloc[-1] > 0
    back = pd.read_csv(tmp_path / "history.csv")
    assert back.shape[0] == 4 and set(back["stopped"]) == {"max_epochs"}


def test_early_stopping_stops(store, tmp_path):
    ms = make(ModelSettings, arch="unet", decoder_channels=(32, 16, 8, 8, 4))
    hist = _train(
        store,
        ms,
        make(TrainSettings, max_epochs=30, patience=1, batch_size=4, lr=0.5, **FAST),
        0,
        tmp_path,
    )
    assert len(hist) < 30
    assert not hist["best"].iloc[-1]
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["stopped"] == "early_stopping"


def test_buffer_pixels_never_enter_the_loss_or_the_target_scaling(store):
    from aefheight.split.spatial import CODES
    from aefheight.train.targets import split_patches, target_stats

    parts = split_patches(store / "split.gpkg", store / "split.tif")
    ids, masks = parts["train"].ids, parts["train"].masks
    with rasterio.open(store / "split.tif") as ds:
        lab = ds.read(1)
    assert (lab == CODES["buffer"]).any()
    gpkg = gpd.read_file(store / "split.gpkg", layer="patches").set_index("patch_id")
    cut = 0
    for k, m in zip(ids, masks, strict=True):
        r, c, p = gpkg.loc[k, ["row", "col", "size"]]
        assert not m[lab[r : r + p, c : c + p] == CODES["buffer"]].any()
        cut += int((~m).sum())
    assert cut > 0  # some train patch lost its buffer strip, not the whole patch
    st = PatchStore(*store_files(store))
    assert target_stats(st, ids, masks) != target_stats(st, ids)


def test_seed_drives_initialisation_order_and_augmentation(store, tiny_aoi, tmp_path):
    ms = make(ModelSettings, arch="unet", decoder_channels=(32, 16, 8, 8, 4))
    ts = make(TrainSettings, max_epochs=1, patience=5, batch_size=4, **FAST)
    runs = {k: tmp_path / k for k in ("a", "a2", "b")}
    hists = {k: _train(store, ms, ts, 0 if k != "b" else 1, d) for k, d in runs.items()}
    w = {k: torch.load(d / "checkpoint.pt", weights_only=True)["model"] for k, d in runs.items()}
    key = next(k for k in w["a"] if k.endswith("weight"))
    torch.testing.assert_close(w["a"][key], w["a2"][key], rtol=0, atol=0)  # same seed
    assert not torch.equal(w["a"][key], w["b"][key])
    pd.testing.assert_frame_equal(
        hists["a"].drop(columns="seconds"), hists["a2"].drop(columns="seconds")
    )
    # same seed, same threads: identical metrics of the whole-AOI prediction
    from aefheight.evaluate.metrics import evaluate_prediction
    from aefheight.predict.infer import PredictSettings, predict_raster

    emb = tiny_aoi["embeddings"]
    metrics = {}
    for k in ("a", "a2"):
        predict_raster(emb, runs[k] / "checkpoint.pt", runs[k] / "p.tif", make(PredictSettings))
        metrics[k] = evaluate_prediction(runs[k] / "p.tif", tiny_aoi["dsm"], store / "split.tif")
    pd.testing.assert_frame_equal(metrics["a"].metrics, metrics["a2"].metrics)
    # the initial weights differ by seed, and so do the epoch's order and augmentation draws
    torch.manual_seed(0)
    from aefheight.models.factory import build_model

    w0 = build_model(ms, 64).state_dict()[key]
    torch.manual_seed(1)
    assert not torch.equal(w0, build_model(ms, 64).state_dict()[key])
    g0, g1 = (torch.Generator().manual_seed(s * 1_000_003 + 1) for s in (0, 1))
    assert torch.randperm(40, generator=g0).tolist() != torch.randperm(40, generator=g1).tolist()


@pytest.mark.parametrize("scales", [(1,), (1, 5, 15)])
def test_ridge_net_holds_sklearns_fit_on_the_same_pixels(store, tmp_path, scales):
    from aefheight.train.ridge import sample_pixels
    from aefheight.train.targets import split_patches
    from sklearn.linear_model import Ridge

    ms = make(ModelSettings, arch="ridge", scales_px=scales)
    info = fit_ridge(
        *store_files(store), store / "split.gpkg", store / "split.tif", ms, 0, "ridge",
        tmp_path / "checkpoint.pt", tmp_path / "history.csv",
        embeddings_path=store / "embeddings.tif",
    )  # fmt: skip
    model, _ = load_checkpoint(tmp_path / "checkpoint.pt")
    train = split_patches(store / "split.gpkg", store / "split.tif")["train"]
    ids, masks = train.ids, train.masks
    x, y = sample_pixels(PatchStore(*store_files(store)), ids, masks, 200_000, 0, model.features)
    assert x.shape[1] == 64 * len(scales) == info["features"]
    ref = Ridge(alpha=1.0).fit(x, y)
    np.testing.assert_allclose(
        model.head.weight.detach().numpy().ravel(), ref.coef_, rtol=1e-4, atol=1e-3
    )
    assert info["pixels"] == len(y)


def test_box_means_leave_nodata_out():
    from aefheight.models.factory import BoxRidge

    x = torch.ones(1, 2, 9, 9)
    x[:, :, :, :4] = 0.0  # nodata on the left
    f = BoxRidge(2, (1, 5)).features(x)
    torch.testing.assert_close(f[:, 2:, :, 4:], torch.ones(1, 2, 9, 5))  # means of valid only


@pytest.mark.slow
def test_killed_training_resumes_to_identical_result(store, tmp_path):
    """SIGKILL mid-run, rerun: same history and weights as an uninterrupted run (CPU)."""
    import json

    def cmd(out):
        return [
            sys.executable,
            "-m",
            "aefheight",
            "train-net",
            "--model",
            "unet",
            "--seed",
            "7",
            "--model-settings",
            json.dumps(SMALL),
            "--settings",
            json.dumps({"max_epochs": 4, "patience": 10, "batch_size": 4, **FAST}),
            "--store-embeddings",
            str(store / "embeddings.npy"),
            "--store-dsm",
            str(store / "dsm.npy"),
            "--store-coarse-dem",
            str(store / "coarse_dem.npy"),
            "--split-gpkg",
            str(store / "split.gpkg"),
            "--split-tif",
            str(store / "split.tif"),
            "--embeddings",
            str(store / "embeddings.tif"),
            "--checkpoint",
            str(out / "checkpoint.pt"),
            "--history",
            str(out / "history.csv"),
            "--resume",
            str(out / "resume.pt"),
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


DEM_NET = {**SMALL, "dem_channel": True, "target": "residual"}


def test_dem_net_regresses_the_residual_with_the_relief_channel(store, tmp_path):
    from aefheight.train.dataset import PatchDataset, model_input
    from aefheight.train.fit import _dem_use
    from aefheight.train.targets import split_patches, target_stats, with_valid_data

    ms = make(ModelSettings, **DEM_NET)
    st = PatchStore(*store_files(store), store / "coarse_dem.npy")
    train = with_valid_data(st, split_patches(store / "split.gpkg", store / "split.tif")["train"])
    ids, masks = train.ids, train.masks  # the pixels that enter the loss, as train_net uses
    dem = _dem_use(st, ms, ids, masks)
    assert dem is not None and dem.channel and dem.residual and dem.relief_sd > 0
    mean, std = target_stats(st, ids, masks, dem)
    height_mean, _ = target_stats(st, ids, masks)
    assert abs(mean) < 0.2 * height_mean  # reference - coarse DEM is small next to the height
    codes, extra, y, m = PatchDataset(st, ids, mean, std, masks, dem)[0]
    x = model_input(codes[None], extra[None], torch.device("cpu"))[0]
    assert x.shape[0] == 65 and abs(float(x[64][m[0]].mean())) < 1.0  # relief: no height
    k = int(ids[0])
    want = (st.dsm[k] - st.coarse_dem[k] - mean) / std
    np.testing.assert_allclose(y[0][m[0]].numpy(), want[m[0].numpy()], rtol=1e-5, atol=1e-5)
    hist = _train(
        store, ms, make(TrainSettings, max_epochs=2, patience=5, batch_size=4, **FAST), 0, tmp_path
    )
    _, ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ckpt["dem_relief_sd"] == pytest.approx(dem.relief_sd) and len(hist) == 2
    with pytest.raises(Exception, match="coarse DEM"):
        fit_net(
            *store_files(store), store / "split.gpkg", store / "split.tif", ms,
            make(TrainSettings, max_epochs=1, **FAST), 0, "unet_dem", tmp_path / "c.pt",
            tmp_path / "h.csv", tmp_path / "r.pt", embeddings_path=store / "embeddings.tif",
        )  # fmt: skip


def test_no_test_pixel_enters_any_training(store, tmp_path):
    """Test patches' reference heights changed by +1000 m: the same weights, nets and Ridge."""
    gpkg = gpd.read_file(store / "split.gpkg", layer="patches")
    test_ids = gpkg.loc[gpkg["split"] == "test", "patch_id"].to_numpy()
    assert len(test_ids)
    changed = tmp_path / "dsm_changed.npy"
    z = np.load(store_files(store)[1])
    z[test_ids] += 1000.0
    np.save(changed, z)
    ts = make(TrainSettings, max_epochs=1, patience=5, batch_size=4, **FAST)
    weights = {}
    for name, dsm in (("base", None), ("changed", changed)):
        out = tmp_path / name
        _train(store, make(ModelSettings, **DEM_NET), ts, 0, out, dsm=dsm)
        net = torch.load(out / "checkpoint.pt", weights_only=True)
        ms = make(ModelSettings, arch="ridge")
        emb = store_files(store)[0]
        fit_ridge(
            emb, dsm or store_files(store)[1], store / "split.gpkg", store / "split.tif", ms, 0,
            "ridge", out / "ridge.pt", out / "ridge.csv", embeddings_path=store / "embeddings.tif",
        )  # fmt: skip
        weights[name] = {**net["model"], **{f"ridge.{k}": v for k, v in torch.load(
            out / "ridge.pt", weights_only=True)["model"].items()}}  # fmt: skip
    for key, w in weights["base"].items():
        torch.testing.assert_close(w, weights["changed"][key], rtol=0, atol=0)


def test_learning_rate_warms_up_then_decays_to_zero_at_the_cap():
    from aefheight.train.fit import lr_factor

    ts = make(TrainSettings, warmup_steps=10, max_epochs=4, windows_per_epoch=80, batch_size=8)
    total = 40
    f = [lr_factor(i, ts, total) for i in range(total + 1)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert np.all(np.diff(f[:10]) > 0)  # the warm-up rises
    assert np.all(np.diff(f[9:]) <= 0)  # then it only falls
    assert f[25] == pytest.approx(0.5, abs=0.05) and f[total] == pytest.approx(0.0, abs=1e-9)


def test_early_stopping_waits_for_the_minimum_steps():
    from aefheight.train.fit import _Run, stop_early

    ts = make(TrainSettings, patience=2, min_steps=100)
    run = _Run(bad=5, history=[{"steps": 60}])
    assert not stop_early(run, ts)
    run.history.append({"steps": 120})
    assert stop_early(run, ts)
    assert not stop_early(_Run(bad=1, history=[{"steps": 500}]), ts)

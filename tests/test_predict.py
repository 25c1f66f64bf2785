import itertools

import numpy as np
import pytest
import rasterio
import torch
from aefheight import aef
from aefheight.models import ModelSettings, build_model, save_checkpoint
from aefheight.predict import PRED_NODATA, PredictSettings, blend_weights, predict_raster
from aefheight.raster import window_origins, window_phase
from aefheight.settings import make


def test_blend_weights_positive_and_symmetric():
    w = blend_weights(64)
    assert w.min() > 0 and w.max() <= 1
    np.testing.assert_allclose(w, w[::-1, ::-1])


@pytest.mark.parametrize(
    ("length", "window", "stride"), [(192, 64, 48), (256, 64, 64), (50, 64, 48), (1000, 256, 192)]
)
def test_window_origins_cover_everything(length, window, stride):
    o = window_origins(length, window, stride)
    covered = np.zeros(length, bool)
    for s in o:
        covered[s : s + window] = True
    assert covered.all() and o == sorted(o)
    assert all(b - a <= stride for a, b in itertools.pairwise(o))


def _linear_checkpoint(path, seed=0):
    """A pixel-wise linear model: its blended sliding-window output must equal the direct map."""
    s = make(ModelSettings, arch="ridge")
    m = build_model(s)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        m.head.weight.copy_(torch.randn(m.head.weight.shape, generator=g) * 10)
        m.head.bias.fill_(50.0)
    save_checkpoint(path, m, s, 0.0, 1.0, patch_size=64)
    return m.head.weight.detach().numpy().reshape(-1), float(m.head.bias.detach())


@pytest.mark.parametrize(("window", "overlap"), [(64, 16), (128, 64), (256, 32)])
def test_streamed_prediction_equals_direct_map(tiny_aoi, tmp_path, window, overlap):
    w, b = _linear_checkpoint(tmp_path / "lin.pt")
    out = tmp_path / "pred.tif"
    predict_raster(
        tiny_aoi["embeddings"],
        tmp_path / "lin.pt",
        out,
        make(PredictSettings, window=window, overlap=overlap, batch_size=3),
    )
    with rasterio.open(tiny_aoi["embeddings"]) as e, rasterio.open(out) as p:
        assert (p.crs, p.transform, p.shape) == (e.crs, e.transform, e.shape)
        assert p.nodata == PRED_NODATA and p.dtypes[0] == "float32"
        assert p.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert (p.tags()["window"], p.tags()["overlap"]) == (str(window), str(overlap))
        assert p.tags()["train_patch_size"] == "64"
        codes, pred = e.read(), p.read(1)
    valid = aef.valid_mask(codes)
    direct = np.tensordot(w, aef.dequantize(codes, nodata_value=0.0), axes=1) + b
    np.testing.assert_allclose(pred[valid], direct[valid], rtol=1e-4, atol=1e-3)
    assert (pred[~valid] == PRED_NODATA).all()
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_settings_reject_bad_window():
    from aefheight.errors import ConfigError
    from aefheight.settings import from_mapping

    with pytest.raises(ConfigError, match="multiple of 32"):
        from_mapping(PredictSettings, {"window": 100}, "prediction")
    with pytest.raises(ConfigError, match="overlap"):
        from_mapping(PredictSettings, {"window": 64, "overlap": 64}, "prediction")


def test_window_defaults_to_the_training_patch():
    assert make(PredictSettings).resolve(128) == (128, 32)
    assert make(PredictSettings, window=256, overlap=64).resolve(128) == (256, 64)


def test_window_phase_marks_seams_between_window_centres():
    seam, centre = window_phase(256, 64, 16, 4)  # centres at 32, 80, 128, ...; seams at 56, ...
    assert centre[30] and centre[79] and not centre[56]
    assert seam[55] and seam[104] and not seam[32]
    assert not (seam & centre).any()

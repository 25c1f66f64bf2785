import itertools

import numpy as np
import pytest
import rasterio
import torch
from aefheight.core import aef
from aefheight.core.raster import window_origins
from aefheight.core.schema import make
from aefheight.models.factory import ModelSettings, build_model, save_checkpoint
from aefheight.predict import PRED_NODATA
from aefheight.predict.infer import PredictSettings, blend_weights, predict_raster
from helpers import AEF


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
    m = build_model(s, 64)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        m.head.weight.copy_(torch.randn(m.head.weight.shape, generator=g) * 10)
        m.head.bias.fill_(50.0)
    save_checkpoint(path, m, s, 0.0, 1.0, AEF, patch_size=64)
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
    from aefheight.core.errors import ConfigError
    from aefheight.core.schema import from_mapping

    with pytest.raises(ConfigError, match="multiple of 32"):
        from_mapping(PredictSettings, {"window": 100}, "prediction")
    with pytest.raises(ConfigError, match="overlap"):
        from_mapping(PredictSettings, {"window": 64, "overlap": 64}, "prediction")


def test_window_defaults_to_the_training_patch():
    assert make(PredictSettings).resolve(128) == (128, 80)  # 5/8 of the window
    assert make(PredictSettings, window=256, overlap=64).resolve(128) == (256, 64)


def _dem_checkpoint(path, target, channel, zero=False):
    """A small DEM net (random or zero weights) saved as training would."""
    s = make(
        ModelSettings, arch="unet", decoder_channels=(16, 8, 8, 8, 4), dem_channel=channel,
        target=target,
    )  # fmt: skip
    torch.manual_seed(0)
    m = build_model(s, 64)
    if zero:
        with torch.no_grad():
            for p in m.parameters():
                p.zero_()
    save_checkpoint(path, m, s, 2.5, 3.0, AEF, patch_size=64, dem_relief_sd=4.0)


def _predict(tiny_aoi, ckpt, out, dem):
    predict_raster(tiny_aoi["embeddings"], ckpt, out, make(PredictSettings), coarse_dem_path=dem)
    with rasterio.open(out) as p:
        return p.read(1)


def test_residual_prediction_adds_the_coarse_dem_back(tiny_aoi, tmp_path):
    _dem_checkpoint(tmp_path / "z.pt", "residual", True, zero=True)  # net output 0
    pred = _predict(tiny_aoi, tmp_path / "z.pt", tmp_path / "p.tif", tiny_aoi["coarse_dem"])
    with rasterio.open(tiny_aoi["coarse_dem"]) as c, rasterio.open(tiny_aoi["embeddings"]) as e:
        dem, valid = c.read(1), aef.valid_mask(e.read())
    np.testing.assert_allclose(pred[valid], dem[valid] + 2.5, rtol=0, atol=1e-3)
    assert (pred[~valid] == PRED_NODATA).all()


def test_the_dem_channel_carries_relief_not_height(tiny_aoi, tmp_path):
    """The DEM raised by 100 m: a height model predicts the same, a residual one +100 m."""
    with rasterio.open(tiny_aoi["coarse_dem"]) as c:
        prof, dem = c.profile, c.read(1)
    with rasterio.open(tmp_path / "up.tif", "w", **prof) as dst:
        dst.write(dem + 100.0, 1)
    for target, shift in (("height", 0.0), ("residual", 100.0)):
        ck = tmp_path / f"{target}.pt"
        _dem_checkpoint(ck, target, True)
        a = _predict(tiny_aoi, ck, tmp_path / "a.tif", tiny_aoi["coarse_dem"])
        b = _predict(tiny_aoi, ck, tmp_path / "b.tif", tmp_path / "up.tif")
        ok = a != PRED_NODATA
        np.testing.assert_allclose(b[ok] - a[ok], shift, atol=2e-3)
        assert a[ok].std() > 0.01  # the net's output is not constant (the check can fail)


def test_dem_model_without_the_dem_is_one_line(tiny_aoi, tmp_path):
    from aefheight.core.errors import ConfigError

    _dem_checkpoint(tmp_path / "z.pt", "residual", False)
    with pytest.raises(ConfigError, match="pass --coarse-dem"):
        _predict(tiny_aoi, tmp_path / "z.pt", tmp_path / "p.tif", None)
    assert not (tmp_path / "p.tif").exists()


def _float_export(codes_tif, out, product="aef", bands=None):
    """The int8 codes of ``codes_tif`` de-quantized to float32 (NaN nodata), as EE exports AEF."""
    from aefheight.core.embeddings import PRODUCT_TAG, dequantize

    with rasterio.open(codes_tif) as src:
        values, prof = dequantize(src.read()), src.profile
    if bands:
        values = np.concatenate([values] * (bands // len(values)))
    prof.update(dtype="float32", nodata=float("nan"), count=len(values))
    with rasterio.open(out, "w", **prof) as dst:
        dst.write(values)
        dst.update_tags(**{PRODUCT_TAG: product})
    return out


def test_float_export_predicts_as_the_codes_and_another_product_is_refused(tiny_aoi, tmp_path):
    from aefheight.core.errors import RasterError

    _linear_checkpoint(tmp_path / "lin.pt")
    s = make(PredictSettings, window=64, overlap=16)
    predict_raster(tiny_aoi["embeddings"], tmp_path / "lin.pt", tmp_path / "codes.tif", s)
    floats = _float_export(tiny_aoi["embeddings"], tmp_path / "f.tif")
    predict_raster(floats, tmp_path / "lin.pt", tmp_path / "floats.tif", s)
    with rasterio.open(tmp_path / "codes.tif") as a, rasterio.open(tmp_path / "floats.tif") as b:
        np.testing.assert_array_equal(a.read(), b.read())
    generic = _float_export(tiny_aoi["embeddings"], tmp_path / "g.tif", "generic")
    with pytest.raises(RasterError, match=r"trained on 64-band aef .* holds 64-band generic"):
        predict_raster(generic, tmp_path / "lin.pt", tmp_path / "x.tif", s)
    wide = _float_export(tiny_aoi["embeddings"], tmp_path / "t.tif", "tessera", bands=128)
    with pytest.raises(RasterError, match="holds 128-band tessera: predict with a model"):
        predict_raster(wide, tmp_path / "lin.pt", tmp_path / "x.tif", s)

import numpy as np
import pytest
import torch
from aefheight.core import aef, embeddings
from aefheight.core.errors import RasterError
from aefheight.train.dataset import model_input


def _codes(seed=0, shape=(2, 64, 8, 8)):
    rng = np.random.default_rng(seed)
    codes = rng.integers(-128, 128, shape).astype(np.int8)
    codes[:, :, 0, 0] = aef.NODATA  # a nodata pixel in every band
    return codes


def test_floats_pass_through_and_codes_follow_aefs_formula():
    codes = _codes()
    values = embeddings.dequantize(codes)  # NaN where nodata
    np.testing.assert_array_equal(embeddings.dequantize(values), values)  # floats: unchanged
    np.testing.assert_array_equal(
        embeddings.dequantize(values, nodata_value=0.0), aef.dequantize(codes, 0.0)
    )
    np.testing.assert_array_equal(
        embeddings.valid_mask(values, axis=1), embeddings.valid_mask(codes, axis=1)
    )
    assert not embeddings.valid_mask(values, axis=1)[:, 0, 0].any()
    with pytest.raises(RasterError, match="int16; embeddings are int8 AEF codes or float32"):
        embeddings.dequantize(codes.astype(np.int16))


@pytest.mark.parametrize("channels_last", [True, False])
def test_model_input_is_the_same_from_codes_and_from_floats(channels_last):
    codes = _codes(1)
    floats = embeddings.dequantize(codes)
    extra = torch.ones((2, 1, 8, 8))
    cpu = torch.device("cpu")
    a = model_input(torch.from_numpy(codes), extra, cpu, channels_last)
    b = model_input(torch.from_numpy(floats), extra, cpu, channels_last)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert a.shape == (2, 65, 8, 8) and float(a[0, 0, 0, 0]) == 0.0  # nodata as 0


def test_product_tags_and_band_counts_are_checked():
    i8, f32 = np.dtype("int8"), np.dtype("float32")
    assert embeddings.product_of({}, 64, i8, "e.tif") == "aef"  # untagged codes: AEF
    assert embeddings.product_of({}, 5, f32, "e.tif") == "generic"
    tag = embeddings.PRODUCT_TAG
    assert embeddings.product_of({tag: "tessera"}, 128, f32, "e.tif") == "tessera"
    with pytest.raises(RasterError, match=r"e\.tif has 64 bands; tessera embeddings have 128"):
        embeddings.product_of({tag: "tessera"}, 64, f32, "e.tif")
    with pytest.raises(RasterError, match=r"e\.tif has 3 bands; aef embeddings have 64"):
        embeddings.product_of({}, 3, i8, "e.tif")
    with pytest.raises(RasterError, match="unknown embedding product 'satlas'"):
        embeddings.product_of({tag: "satlas"}, 3, f32, "e.tif")

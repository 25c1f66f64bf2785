import numpy as np
import pytest
from aefheight import aef


def test_dequantize_matches_official_formula_for_every_code():
    codes = np.arange(-127, 128, dtype=np.int8)
    expected = ((codes.astype(np.float64) / 127.5) ** 2) * np.sign(codes)
    np.testing.assert_allclose(aef.dequantize(codes), expected.astype(np.float32), rtol=1e-6)


def test_nodata_becomes_nan_or_given_value():
    codes = np.array([-128, 0, 127], dtype=np.int8)
    assert np.isnan(aef.dequantize(codes)[0])
    assert aef.dequantize(codes, nodata_value=0.0)[0] == 0.0
    assert aef.dequantize(codes, nodata_value=0.0)[2] == pytest.approx((127 / 127.5) ** 2)


def test_dequantize_rejects_non_int8():
    with pytest.raises(TypeError):
        aef.dequantize(np.zeros(3, np.int16))


def test_quantize_roundtrip_error_is_within_one_code():
    rng = np.random.default_rng(0)
    v = rng.uniform(-1, 1, 10_000).astype(np.float32)
    back = aef.dequantize(aef.quantize(v))
    # one code step in sqrt space: |sqrt|x| - sqrt|y|| <= 0.5/127.5
    assert np.max(np.abs(np.sqrt(np.abs(back)) - np.sqrt(np.abs(v)))) <= 0.5 / 127.5 + 1e-6


def test_quantize_never_emits_nodata_for_valid_values_and_marks_invalid():
    v = np.array([-1.0, -0.999, 0.0, 1.0, np.nan], dtype=np.float32)
    codes = aef.quantize(v, valid=np.array([True, True, True, False, True]))
    assert codes.tolist()[:3] == [-127, -127, 0]
    assert codes[3] == aef.NODATA and codes[4] == aef.NODATA


def test_valid_mask_requires_all_bands():
    codes = np.zeros((64, 2, 2), np.int8)
    codes[5, 0, 0] = aef.NODATA
    assert aef.valid_mask(codes).tolist() == [[False, True], [True, True]]

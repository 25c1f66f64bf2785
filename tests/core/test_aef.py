import numpy as np
import pytest
from aefheight.core import aef


def test_dequantize_matches_official_formula_for_every_code():
    codes = np.arange(-127, 128, dtype=np.int8)
    expected = ((codes.astype(np.float64) / 127.5) ** 2) * np.sign(codes)
    np.testing.assert_allclose(aef.dequantize(codes), expected.astype(np.float32), rtol=1e-6)


def test_nodata_becomes_nan_or_given_value():
    codes = np.array([-128, 0, 127], dtype=np.int8)
    assert np.isnan(aef.dequantize(codes)[0])
    assert aef.dequantize(codes, nodata_value=0.0)[0] == 0.0
    assert aef.dequantize(codes, nodata_value=0.0)[2] == pytest.approx((127 / 127.5) ** 2)


@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 64, 9, 9), (4, 64, 16, 16)])
def test_dequantize_is_the_lookup_bit_for_bit_in_any_shape_and_into_out(shape):
    rng = np.random.default_rng(1)
    codes = rng.integers(-128, 128, size=shape).astype(np.int8)
    lut = np.float32([((v / 127.5) ** 2) * np.sign(v) for v in range(-128, 128)])
    lut[0] = 0.0  # nodata for models
    expected = lut[codes.astype(np.int16) + 128]
    got = aef.dequantize(codes, nodata_value=0.0)
    np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))
    batch = np.full((2, *shape), np.nan, np.float32)  # a slot of a preallocated batch
    aef.dequantize(codes, nodata_value=0.0, out=batch[1])
    np.testing.assert_array_equal(batch[1].view(np.uint32), expected.view(np.uint32))
    assert np.isnan(batch[0]).all()  # the other slot untouched
    flipped = codes[..., ::-1]  # a non-contiguous view reads the same
    np.testing.assert_array_equal(aef.dequantize(flipped, 0.0), expected[..., ::-1])


def test_dequantize_refuses_an_out_it_cannot_fill():
    codes = np.zeros((2, 3), np.int8)
    for bad in (
        np.empty((3, 2), np.float32),
        np.empty((2, 3)),
        np.empty((2, 6), np.float32)[:, ::2],
    ):
        with pytest.raises(ValueError, match="out must be"):
            aef.dequantize(codes, out=bad)


def test_valid_mask_equals_no_band_at_nodata():
    rng = np.random.default_rng(2)
    codes = rng.integers(-128, 128, size=(64, 20, 20)).astype(np.int8)
    codes[:, 3:6] = np.where(codes[:, 3:6] == -128, 0, codes[:, 3:6])  # some all-valid pixels
    np.testing.assert_array_equal(aef.valid_mask(codes), np.all(codes != aef.NODATA, axis=0))
    stacked = np.stack([codes, codes[:, ::-1]])
    np.testing.assert_array_equal(
        aef.valid_mask(stacked, axis=1), np.all(stacked != aef.NODATA, axis=1)
    )


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

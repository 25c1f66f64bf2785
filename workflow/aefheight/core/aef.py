"""AlphaEarth Foundations (AEF) embedding conventions.

AEF stores each of its 64 bands as int8 with nodata -128; the float value is recovered with
the official de-quantization ``((v / 127.5) ** 2) * sign(v)``. Keep embeddings int8 on disk
and in the patch store; de-quantize only when a model consumes them.
"""

from __future__ import annotations

import numpy as np

NODATA: int = -128
BANDS: int = 64
BAND_NAMES: tuple[str, ...] = tuple(f"A{i:02d}" for i in range(BANDS))

# All 256 int8 codes -> float32; nodata maps to NaN. A lookup gives the formula's values bit
# for bit. The LUT is ordered by the codes' bytes (uint8 view: 0..127 are codes 0..127,
# 128..255 are codes -128..-1), so the int8 array's bytes index it directly; OpenCV's LUT does
# the lookup in one threaded pass, ~6x numpy's fancy indexing (benchmarks/README.md).
_LUT = np.array([((v / 127.5) ** 2) * np.sign(v) for v in range(-128, 128)], dtype=np.float32)
_LUT[0] = np.nan
_LUT_BYTES = np.roll(_LUT, -128)  # _LUT_BYTES[code.view(uint8)] == _LUT[code + 128]


def dequantize(
    codes: np.ndarray, nodata_value: float = np.nan, out: np.ndarray | None = None
) -> np.ndarray:
    """De-quantize int8 AEF codes to float32 with AEF's official formula.

    Args:
        codes: int8 array of any shape.
        nodata_value: value given to nodata (-128) codes; NaN by default, 0 for models.
        out: float32 C-contiguous array of ``codes``' shape to write into (e.g. a slot of a
            preallocated batch); a new array when None.

    Returns:
        ``out``, or a new float32 array of ``codes``' shape.
    """
    import cv2

    if codes.dtype != np.int8:
        raise TypeError(f"AEF codes must be int8, got {codes.dtype}")
    if out is None:
        out = np.empty(codes.shape, np.float32)
    elif out.shape != codes.shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"out must be C-contiguous float32 of shape {codes.shape}")
    if codes.size == 0:
        return out
    lut = dequantization_table(nodata_value)
    # OpenCV takes 2-D single-channel arrays: rows of the last axis
    src = (
        np.ascontiguousarray(codes).view(np.uint8).reshape(-1, codes.shape[-1] if codes.ndim else 1)
    )
    cv2.LUT(src, lut[None], dst=out.reshape(src.shape))
    return out


def dequantization_table(nodata_value: float = np.nan) -> np.ndarray:
    """The 256 float32 values of the codes, indexed by the codes' bytes (``uint8`` view).

    Use it to de-quantize elsewhere (e.g. on a GPU) with the same values bit for bit.
    """
    lut = _LUT_BYTES.copy()
    lut[NODATA & 0xFF] = nodata_value
    return lut


def quantize(values: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Quantize float embeddings in [-1, 1] to int8 codes, the inverse of :func:`dequantize`.

    Used by the synthetic AOI so that its embeddings go through the same lossy scheme as
    Google's. Pixels where ``valid`` is False (or values are NaN) become nodata.
    """
    v = np.clip(np.nan_to_num(values, nan=0.0), -1.0, 1.0)
    codes = np.rint(np.sign(v) * np.sqrt(np.abs(v)) * 127.5)
    codes = np.clip(codes, -127, 127).astype(np.int8)
    bad = np.isnan(values)
    if valid is not None:
        bad |= ~valid
    codes[bad] = NODATA
    return codes


def valid_mask(codes: np.ndarray, axis: int = 0) -> np.ndarray:
    """True where a pixel has no nodata band (AEF marks nodata in all bands at once).

    Nodata (-128) is the smallest int8, so a pixel is valid where its minimum over the bands is
    above it: one reduction, no boolean array of the codes' size.
    """
    return np.min(codes, axis=axis) > NODATA

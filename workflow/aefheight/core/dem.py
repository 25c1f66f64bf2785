"""How a net uses the coarse DEM: the relief channel and the residual target (numpy only).

Shared by training (:mod:`aefheight.train.dataset`) and prediction, so both see the same channel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DemUse:
    """How a net uses the coarse DEM: as an input channel, as its target's base, or both.

    ``relief_sd`` scales the channel: the SD of :func:`dem_relief` over the train patches.
    """

    channel: bool
    residual: bool
    relief_sd: float = 1.0


def dem_relief(dem: np.ndarray) -> np.ndarray:
    """The DEM minus its mean over the window's valid pixels, 0 where nodata (NaN), float32.

    The channel a net sees: relief within its window, never the absolute height, whose
    distribution shifts between the train and the test area.
    """
    ok = ~np.isnan(dem)
    if not ok.any():
        return np.zeros(dem.shape, np.float32)
    return np.where(ok, dem - dem[ok].mean(dtype=np.float64), 0.0).astype(np.float32)


def dem_channel(dem: np.ndarray, use: DemUse) -> np.ndarray:
    """The input channel of a window's coarse DEM (1, P, P): relief over ``relief_sd``."""
    return (dem_relief(dem) / np.float32(use.relief_sd))[None]

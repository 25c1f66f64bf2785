"""Names every step shares, defined once: the splits, their codes in split.tif, model labels.

No third-party import, so any step's env can use them.
"""

from __future__ import annotations

SPLITS = ("train", "val", "test")
# values of split.tif; 0 = no patch; unused = in a kept patch but in no split (e.g. the part of a
# test patch outside the test area)
CODES = {"train": 1, "val": 2, "test": 3, "buffer": 4, "unused": 5}
SINGLE_SPLIT = "single split"  # the configured split, beside the k-fold splits "fold <i>"

MODEL_LABELS = {
    "unet": "U-Net",
    "unetplusplus": "U-Net++",
    "ridge": "Ridge",
    "ridge_ctx": "Ridge (multi-scale box means)",
    "coarse_dem": "coarse DEM (no learning)",
    "glo30": "GLO-30 (no learning)",
    "unet_dem": "U-Net + DEM (residual)",
    "unetplusplus_dem": "U-Net++ + DEM (residual)",
}
ENSEMBLE = (
    "ensemble"  # "<model>_ensemble": the mean of a model's seeds (aefheight.predict.ensemble)
)
# suffixes of derived predictions "<model>_<suffix>" -> their label: the bias corrections
# (config correction.methods) and the seed ensemble
METHOD_LABELS = {
    "linear": "linear recalibration",
    "quantile_map": "quantile-mapped",
    ENSEMBLE: "mean of the seeds",
}


def split_names(folds: int) -> list[str]:
    """Display names of the single split and its ``folds`` k-fold splits, in that order."""
    return [SINGLE_SPLIT, *(f"fold {i}" for i in range(folds))]


def model_label(name: str) -> str:
    """The display name of a model or corrected prediction (the config name where none is set)."""
    for method, label in METHOD_LABELS.items():
        base = name.removesuffix(f"_{method}")
        if base != name:
            return f"{model_label(base)}, {label}"
    return MODEL_LABELS.get(name, name)

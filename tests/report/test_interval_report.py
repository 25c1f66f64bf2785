"""The intervals' table, verdicts, finding and figures, from coverage rows with known values."""

import numpy as np
import pandas as pd
import rasterio
from aefheight.report.intervals import (
    coverage_by_height,
    finding,
    method_verdicts,
    summary,
    width_maps,
)
from helpers import write_tif


def _coverage() -> pd.DataFrame:
    """unet: by_height covers the test area 3-5 points more than conformal in every seed."""
    rows = []
    for model in ("unet", "ridge"):
        for seed in (0, 1, 2):
            for method, extra in (("conformal", 0.0), ("by_height", 3.0 + seed)):
                for split, base in (("val", 90.0), ("test", 70.0)):
                    cov = base + extra if model == "unet" else base
                    head = {
                        "model": model,
                        "method": method,
                        "seed": seed,
                        "level": 0.9,
                        "calibration_px": 5000,
                    }
                    head |= {"split": split, "area": "all"}
                    rows.append(
                        head
                        | {"height_lo_m": np.nan, "height_hi_m": np.nan, "n": 1000}
                        | {"covered_pct": cov, "mean_width_m": 10.0 + seed}
                    )
                    for lo in (0.0, 10.0):
                        rows.append(
                            head
                            | {"height_lo_m": lo, "height_hi_m": lo + 10, "n": 500}
                            | {"covered_pct": cov + lo, "mean_width_m": 10.0}
                        )
    return pd.DataFrame(rows)


def test_summary_has_mean_sd_and_per_seed_values():
    s = summary(_coverage()).set_index(["model", "method"])
    row = s.loc[("U-Net", "width by predicted height")]
    assert row["nominal (%)"] == "90"
    assert row["test coverage (%)"] == "74.0 ± 1.0" and row["val coverage (%)"] == "94.0 ± 1.0"
    assert row["per-seed test coverage (%)"] == "73.0, 74.0, 75.0"
    assert row["test mean width (m)"] == "11.0 ± 1.0"
    assert row["calibration px (val band)"] == "5000"
    assert "test coverage outside AOA (%)" not in s.columns  # no AOA rows given


def test_verdicts_are_paired_by_seed():
    v = method_verdicts(_coverage())
    unet = next(x for x in v if x.startswith("U-Net"))
    assert "covers more of the test area than one width" in unet
    assert "Δ = +4.0" in unet and "3 seeds" in unet
    ridge = next(x for x in v if x.startswith("Ridge"))
    assert "not resolved" in ridge


def test_finding_says_whether_the_intervals_hold():
    text = finding(_coverage())
    assert "nominal 90 %" in text and "70.0 to 74.0 %" in text and "do not hold" in text
    assert "do not fix it for any of Ridge, U-Net" in text


def test_figures_are_written(tmp_path):
    coverage_by_height(_coverage(), tmp_path / "c.png", tmp_path / "c.pdf")
    z = np.linspace(0, 10, 48 * 64, dtype=np.float32).reshape(1, 48, 64)
    iv = write_tif(tmp_path / "iv.tif", np.concatenate([z, z + 3]), nodata=-9999.0)
    with rasterio.open(iv, "r+") as ds:
        ds.update_tags(model="unet", seed="0", method="by_height")
    split = write_tif(tmp_path / "s.tif", np.full((1, 48, 64), 3, np.uint8), nodata=0)
    width_maps([iv], split, tmp_path / "w.png", tmp_path / "w.pdf")
    for name in ("c.png", "c.pdf", "w.png", "w.pdf"):
        assert (tmp_path / name).stat().st_size > 1000

"""The paper's claims checked against a run: intervals, verdicts, seeds needed."""

import numpy as np
import pandas as pd
import pytest
from aefheight.report import claims
from scipy import stats


def test_interval_is_the_t_interval_over_seeds():
    v = np.array([0.80, 0.84, 0.86])
    iv = claims.Interval.of(v)
    half = stats.t.ppf(0.975, 2) * v.std(ddof=1) / np.sqrt(3)
    assert iv.mean == pytest.approx(v.mean()) and iv.high - iv.mean == pytest.approx(half)
    assert claims.Interval.of([0.5]).n == 1 and "1 seed" in claims.Interval.of([0.5]).text(2)


@pytest.mark.parametrize(("mean", "sd"), [(0.02, 0.05), (0.1, 0.02), (0.001, 0.2)])
def test_seeds_needed_is_the_first_n_whose_interval_excludes_zero(mean, sd):
    rng = np.random.default_rng(0)
    d = rng.normal(0, 1, 5)
    d = (d - d.mean()) / d.std(ddof=1) * sd + mean  # exactly this mean and SD
    n = claims.seeds_needed(d)
    if n <= 1000:
        assert stats.t.ppf(0.975, n - 1) * sd / np.sqrt(n) < abs(mean)
        assert n == 2 or stats.t.ppf(0.975, n - 2) * sd / np.sqrt(n - 1) >= abs(mean)
    else:
        assert abs(mean) / sd < 0.07


def test_value_verdicts_say_reproduced_only_for_a_tight_interval_around_the_paper():
    tight = claims.Interval.of([0.77, 0.78, 0.79])
    assert claims.value_verdict(tight, 0.78, 0.05) == "reproduced"
    assert claims.value_verdict(tight, 0.97, 0.05) == "not reproduced (lower)"
    wide = claims.Interval.of([0.60, 0.75, 0.90])  # holds 0.78, but so does much else
    assert claims.value_verdict(wide, 0.78, 0.05).startswith("not resolved at 3 seeds")
    assert claims.value_verdict(claims.Interval.of([0.7]), 0.78, 0.05) == "not resolved at 1 seed"


def _metrics(unetpp_gain):
    rows = []
    for seed in range(3):
        for model, base in (("unet", 0.75), ("unetplusplus", 0.75), ("ridge", 0.35)):
            gain = unetpp_gain[seed] if model == "unetplusplus" else 0.0
            for split, r2 in (("train", 0.95), ("test", base + gain)):
                rows.append({"model": model, "seed": seed, "split": split,
                             "r2": r2 - (0.3 if model == "ridge" and split == "train" else 0),
                             "rmse_m": 20.0, "median_diff_m": -5.0})  # fmt: skip
    return pd.DataFrame(rows)


def _table(metrics, synthetic=True):
    shift = pd.DataFrame([{"mean_shift_m": 36.0, "ks_statistic": 0.4}])
    quant = pd.DataFrame({"split": ["train", "test"], "mean_m": [98.0, 134.0]})
    cross = pd.DataFrame(
        {
            "model": ["unet"] * 3 + ["unetplusplus"] * 3,
            "split": "test",
            "seed": [0, 1, 2] * 2,
            "crossover_height_m": [110.0, 120, 115] * 2,
        }
    )
    roles = {"unet": "unet", "unetplusplus": "unetplusplus", "ridge": "ridge"}
    return claims.claims_table(metrics, roles, shift, quant, cross, synthetic).set_index("claim")


def test_the_papers_comparison_is_reproduced_not_reproduced_or_unresolved():
    key = "U-Net++ beats U-Net on the test area (R²)"
    assert _table(_metrics([0.05, 0.06, 0.07])).loc[key, "verdict"] == "reproduced"
    assert _table(_metrics([-0.05, -0.06, -0.07])).loc[key, "verdict"].startswith("not reproduced")
    unresolved = _table(_metrics([0.05, -0.04, 0.02])).loc[key, "verdict"]
    assert (
        unresolved.startswith("not resolved at 3 seeds (about") and "would resolve it" in unresolved
    )


def test_calibration_targets_are_not_called_findings_on_the_synthetic_aoi():
    t = _table(_metrics([0.0, 0.0, 0.0]))
    assert t.loc["Ridge test R²", "verdict"] == "calibration target"
    assert (
        t.loc["The test area lies higher than the training area", "verdict"] == "calibration target"
    )
    real = _table(_metrics([0.0, 0.0, 0.0]), synthetic=False)
    assert real.loc["Ridge test R²", "verdict"].startswith("not reproduced")  # 0.35 vs 0.38
    assert real.loc["The test area lies higher than the training area", "verdict"] == "reproduced"
    assert t.loc["U-Net train R²", "paper"] == "0.97"
    assert t.loc[
        "The nets over-estimate below a height and under-estimate above it", "verdict"
    ] == ("reproduced (pattern)")

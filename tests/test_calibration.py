"""The guard on the synthetic AOI's calibration: the pixel-wise Ridge stays in the paper's regime.

It builds the default config's AOI (the whole of it: the split and the Ridge are the study's)
and fits the pixel-wise Ridge, the only model the calibration uses; a generator change that
leaves the paper's regime (as the streamed generator once did, unnoticed) fails here. It checks
the control only, never a net.
"""

import yaml
from aefheight import calibration
from helpers import REPO


def test_the_default_aoi_keeps_the_ridge_control_in_its_target_band():
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    s, c = calibration.from_config(cfg, "demo")
    result = calibration.control(s, c)
    lo, hi = calibration.TARGETS["ridge_train_r2"][1]
    assert lo <= result["ridge_train_r2"] <= hi, calibration.report(result)
    assert result["ridge_test_r2"] > 0, calibration.report(result)
    assert all(calibration.in_band(result).values()), calibration.report(result)


def test_the_frozen_values_are_the_schema_defaults():
    """The config states the calibrated values; the schema holds them as defaults (once)."""
    from aefheight.core.schema import validate_section

    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    frozen = cfg["aois"]["demo"]["synthetic"]
    defaults = validate_section({}, "aois.<name>.synthetic")
    for knob in calibration.KNOBS:
        assert frozen[knob] == defaults[knob], knob

import pytest
from aefheight.core.errors import ConfigError
from aefheight.core.schema import from_mapping, parse_json
from aefheight.split.spatial import SplitSettings
from aefheight.tiles.patches import TilingSettings


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"unknown config key tiling\.patchsize"):
        from_mapping(TilingSettings, {"patchsize": 64}, "tiling")


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match=r"tiling\.patch_size has the wrong type"):
        from_mapping(TilingSettings, {"patch_size": "64"}, "tiling")


def test_patch_size_must_suit_unetplusplus():
    with pytest.raises(ConfigError, match="multiple of 32"):
        from_mapping(TilingSettings, {"patch_size": 100}, "tiling")


def test_split_fractions_must_add_up():
    with pytest.raises(ConfigError, match="add up to 1"):
        from_mapping(SplitSettings, {"fractions": {"train": 0.5, "val": 0.1, "test": 0.3}}, "split")


def test_defaults_fill_missing_keys():
    s = from_mapping(TilingSettings, {"patch_size": 64}, "tiling")
    assert s.patch_size == 64 and s.min_valid_fraction == 0.5


def test_parse_json_errors():
    with pytest.raises(ConfigError, match="not valid JSON"):
        parse_json("{bad")
    with pytest.raises(ConfigError, match="JSON object"):
        parse_json("[1]")

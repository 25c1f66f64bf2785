"""The schema as the single source of the config: descriptions, defaults, docs and checks."""

import copy
import dataclasses
from pathlib import Path

import pytest
import yaml
from aefheight import config
from aefheight.core import schema
from aefheight.core.errors import ConfigError
from aefheight.evaluate.aoa import AOASettings
from aefheight.guards import LimitsSettings
from aefheight.inputs.sources.spec import AOISpec, DownloadSettings, DSMSettings, RealAOISettings
from aefheight.inputs.synthetic import SyntheticSettings
from aefheight.models.factory import ModelSettings
from aefheight.predict.correction import CorrectionSettings
from aefheight.predict.infer import PredictSettings
from aefheight.predict.intervals import IntervalSettings
from aefheight.split.spatial import SplitSettings
from aefheight.tiles.patches import TilingSettings
from aefheight.train.fit import TrainSettings

REPO = Path(__file__).resolve().parents[1]
CLASSES = [
    TilingSettings,
    SplitSettings,
    TrainSettings,
    PredictSettings,
    ModelSettings,
    SyntheticSettings,
    RealAOISettings,
    AOISpec,
    DSMSettings,
    DownloadSettings,
    CorrectionSettings,
    IntervalSettings,
    AOASettings,
    LimitsSettings,
]
# keys a user must give: they have no default
REQUIRED = {"aois", "models", "aois.<name>.source", "aois.<name>.year", "aois.<name>.aoi"}
REQUIRED |= {"aois.<name>.dsm", "aois.<name>.dsm.source", "models.<name>.arch"}
REQUIRED |= {"aois.<name>.synthetic"}  # defaulted by the schema's if/then (synthetic AOIs only)


def _keys(node, key=""):
    for name, sub in node.get("properties", {}).items():
        path = f"{key}.{name}" if key else name
        yield path, sub
        yield from _keys(sub, path)
    if isinstance(node.get("additionalProperties"), dict):
        yield from _keys(node["additionalProperties"], f"{key}.<name>")


def _load(name):
    return yaml.safe_load((REPO / "config" / name).read_text())


def test_every_key_has_a_description_and_a_default():
    for key, sub in _keys(schema.schema()):
        if key.startswith("split.fractions."):
            continue  # train/val/test: described and defaulted together as split.fractions
        assert sub.get("description"), f"schema key {key} has no description"
        assert "default" in sub or key in REQUIRED, f"schema key {key} has no default"


def test_config_readme_is_generated_from_the_schema():
    text = (REPO / "config" / "README.md").read_text()
    marker = "<!-- generated from workflow/schemas/config.schema.yaml: do not edit below -->\n"
    assert marker in text
    assert text.split(marker, 1)[1] == config.key_tables(), (
        "config/README.md is out of date: run `make docs`"
    )


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_settings_classes_mirror_the_schema_and_hold_no_defaults(cls):
    fields = dataclasses.fields(cls)
    assert all(f.default is dataclasses.MISSING for f in fields), "a default outside the schema"
    assert all(f.default_factory is dataclasses.MISSING for f in fields)
    props = set(schema.subschema(cls.SECTION).get("properties", {}))
    names = {f.name for f in fields}
    # a real AOI's settings leave out the synthetic AOI's section
    assert names == props - ({"synthetic"} if cls is RealAOISettings else set())


def _overlay(name):
    """The default config with an overlay file merged on top, as ``snakemake --configfile
    config/config.yaml config/<name>`` merges them (Snakemake's own update_config)."""
    from snakemake.utils import update_config

    cfg = _load("config.yaml")
    update_config(cfg, _load(name))
    return cfg


OVERLAYS = ("kfold.yaml", "beyond_paper.yaml")  # one switch from the default each


def test_the_shipped_configs_pass_and_the_default_states_the_defaults():
    for cfg in (_load("config.yaml"), _load("paper.yaml"), *map(_overlay, OVERLAYS)):
        config.check_config(cfg)
        assert set(cfg) >= {"tiling", "split", "training", "prediction", "seeds", "downloads"}
    raw = _load("config.yaml")
    sections = ("tiling", "split", "aoa", "training", "prediction", "correction", "intervals")
    for section in (*sections, "limits"):
        defaults = schema.validate_section({}, section)
        assert raw[section] == defaults, f"config.yaml's {section} differs from the schema"
    synthetic = schema.validate_section({}, "aois.<name>.synthetic")
    assert raw["aois"]["demo"]["synthetic"] == synthetic


def test_the_overlays_add_to_the_default_without_repeating_it():
    """kfold.yaml and beyond_paper.yaml hold only what they change (each fact once)."""
    kfold = _overlay("kfold.yaml")
    assert kfold["split"]["folds"] == 3 and kfold["models"] == _load("config.yaml")["models"]
    beyond = _overlay("beyond_paper.yaml")
    assert {"unet_dem", "unetplusplus_dem"} <= set(beyond["models"]) > {"unet", "ridge"}
    assert beyond["correction"]["methods"] == ["linear", "quantile_map"]
    for name in OVERLAYS:
        assert "aois" not in _load(name) and "tiling" not in _load(name)


BAD = {
    "synthetic AOI": (["aois", "demo", "synthetic", "width"], 10, "aois.demo.synthetic.width"),
    "synthetic CRS": (["aois", "demo", "synthetic", "crs"], "EPSG:0", "aois.demo.synthetic.crs"),
    "tiling": (["tiling", "patch_size"], 100, "tiling.patch_size"),
    "split sum": (["split", "fractions", "val"], 0.3, "split.fractions"),
    "training": (["training", "lr"], 0, "training.lr"),
    "prediction": (["prediction", "overlap"], 64, "prediction.overlap"),
    "model": (["models", "unet", "encoder"], "resnet0", "models.unet.encoder"),
    "ridge scales": (["models", "ridge", "scales_px"], [1, 4], "models.ridge.scales_px[1]"),
    "downloads": (["downloads", "timeout_s"], -1, "downloads.timeout_s"),
    "seeds": (["seeds"], [0, 0], "seeds"),
    "unknown key": (["training", "epochs"], 3, "training.epochs"),
    "correction model": (["correction", "models"], ["nope"], "correction.models"),
    "correction method": (["correction", "methods"], ["isotonic"], "correction.methods[0]"),
    "corrected name clash": (["models", "unet_linear"], {"arch": "unet"}, "models.unet_linear"),
    "dem for a ridge": (["models", "ridge", "dem_channel"], True, "models.ridge"),
    "coarse dem correction": (["correction", "models"], ["coarse_dem"], "correction.models"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_the_whole_config_check_names_the_bad_key_of_every_section(case):
    path, value, named = BAD[case]
    cfg = _overlay("beyond_paper.yaml")  # with corrections and the DEM nets
    config.fill_defaults(cfg)  # so every section is there to break
    if case == "prediction":
        cfg["prediction"]["window"] = 64
    node = cfg
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ConfigError) as err:
        config.check_config(cfg)
    line = str(err.value)
    assert named in line and "\n" not in line and len(line) < 400, line


def test_real_aoi_sections_are_checked_too():
    cfg = _load("paper.yaml")
    real = copy.deepcopy(cfg["aois"]["nouvelle_aquitaine"])
    for change, named in (
        ({"dsm": {"source": "rge_alti"}}, "dsm.archives"),
        ({"aoi": {"bbox": [1, 1, 0, 0], "crs": "EPSG:2154"}}, "xmin < xmax"),
        ({"year": 2010}, "aois.nouvelle_aquitaine.year"),
        ({"dsm": {"source": "local"}}, "dsm.path"),
    ):
        cfg["aois"]["nouvelle_aquitaine"] = {**real, **change}
        with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
            config.check_config(copy.deepcopy(cfg))


def test_the_readmes_real_data_config_is_a_whole_config():
    text = (REPO / "README.md").read_text().split("## Real data", 1)[1]
    snippet = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    cfg = yaml.safe_load(snippet)
    config.check_config(cfg)
    assert cfg["aois"]["myaoi"]["dsm"]["missing_tiles"] == "error"  # defaults filled in


def test_the_products_overlay_pairs_two_products_of_the_demo_area():
    cfg = _overlay("products.yaml")
    config.check_config(cfg)
    assert config.product_pairs(cfg) == [("demo", "demo_tessera")]
    assert cfg["aois"]["demo_tessera"]["synthetic"]["product"] == "tessera"


@pytest.mark.parametrize(
    ("pair", "change", "match"),
    [
        (["demo", "nope"], None, r"compare_products\[0\]: 'nope' is not an AOI"),
        (["demo", "demo"], None, "compare two AOIs, not 'demo' with itself"),
        (["demo", "demo_tessera"], ("seed", 7), "cover different areas"),
    ],
)
def test_product_pairs_must_name_two_aois_of_one_area(pair, change, match):
    cfg = _overlay("products.yaml")
    cfg["compare_products"] = [pair]
    if change:
        cfg["aois"]["demo_tessera"]["synthetic"][change[0]] = change[1]
    with pytest.raises(ConfigError, match=match):
        config.check_config(cfg)

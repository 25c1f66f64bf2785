# Config validation, wildcard constraints and the helpers every rule uses.
import json
import os

from snakemake.utils import validate

validate(config, schema="../schemas/config.schema.yaml")

AOIS = list(config["aois"])
MODELS = list(config["models"])
NETS = [m for m, s in config["models"].items() if s["arch"] != "ridge"]
RIDGES = [m for m in MODELS if m not in NETS]
SEEDS = [str(s) for s in config["seeds"]]
NEVER = "(?!x)x"  # a regex matching nothing, for empty name lists

# Rules run `python -m aefheight` from this checkout, so any env with the dependencies runs
# it (the venv locally, a rule's conda env with --sdm conda); jobs inherit the variable.
# (set here, not required from the user, so there is nothing for `envvars:` to assert)
os.environ.update(PYTHONPATH=os.path.join(workflow.basedir, "workflow"))


def one_of(names):
    """Regex alternation of exact names (so a wildcard cannot escape into a path)."""
    return "|".join(names) if names else NEVER


def section_json(*keys):
    """A config section as compact JSON, passed to the CLI's --settings."""
    value = config
    for key in keys:
        value = value.get(key, {}) if isinstance(value, dict) else {}
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def final_outputs():
    """Targets of the default rule: rasters, metrics and the report's figures."""
    out = []
    for aoi in AOIS:
        out += [
            f"results/{aoi}/metrics/metrics.csv",
            f"results/{aoi}/figures/split_map.png",
        ]
        for seed in SEEDS:
            out.append(f"results/{aoi}/figures/loss_curves_seed{seed}.png")
            for model in MODELS:
                out += [
                    f"results/{aoi}/predictions/{model}_seed{seed}.tif",
                    f"results/{aoi}/figures/pred_vs_ref_{model}_seed{seed}.png",
                ]
    return out

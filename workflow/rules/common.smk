# Config validation, wildcard constraints and the helpers every rule uses.
import functools
import json
import os
import shlex
import shutil
import sys

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger

# The package beside these rule files (also when this workflow is used as a module).
PACKAGE_ROOT = os.path.normpath(os.path.join(str(workflow.current_basedir), ".."))
sys.path.insert(0, PACKAGE_ROOT)
from aefheight.config import check_sections, corrections, fill_defaults, product_pairs
from aefheight.core.errors import AefHeightError, ConfigError
from aefheight.guards import check_disk, check_run, limits_of
from aefheight.models.kinds import COARSE_DEM, RIDGE
from aefheight.inputs.shards import aoi_shape, shard_names

# The schema (workflow/schemas/config.schema.yaml) checks every key and fills in its default,
# in every Snakemake process (jobs read the filled sections). The cross-field rules of every
# section need the steps' libraries (smp, PROJ): the main process runs them before any job; a
# bare Snakemake env without them (e.g. a login node with --sdm conda) leaves them to the jobs.
try:
    fill_defaults(config)
    CORRECTED = corrections(config)  # {"<model>_<method>": (model, method)}
    # two embedding products of one area, compared by seed (report.smk, compare_products)
    PRODUCT_PAIRS = [f"{a}_vs_{b}" for a, b in product_pairs(config)]
    if workflow.is_main_process:
        try:
            check_sections(config)
        except ImportError:
            pass
except ConfigError as exc:
    raise WorkflowError(f"invalid config: {exc}") from None

# Before any job: each AOI's size against limits.max_aoi_km2 and a local DSM's coverage and
# fill values (aefheight.guards); the free disk in onstart, which a dry run skips. Snakemake
# runs onstart only for the main Snakefile, so a module is warned about the disk here.
PLANS = []
if workflow.is_main_process:
    try:
        PLANS = check_run(config)
    except AefHeightError as exc:
        raise WorkflowError(str(exc)) from None
    except ImportError as exc:
        logger.warning(
            f"AOI size, free disk and local DSM not checked: {exc.name or exc} is missing where"
            " Snakemake runs (install the project there: pip install -e .)"
        )
    for aoi_plan in PLANS:
        logger.info(aoi_plan.describe())


def disk_check(refuse):
    """The free-disk check of PLANS: refuse the run (jobs about to start) or warn (a module)."""
    try:
        logger.info(check_disk(PLANS, "results", limits_of(config)))
    except AefHeightError as exc:
        if refuse:
            raise WorkflowError(str(exc)) from None
        logger.warning(str(exc))


if PLANS and not workflow.modifier.is_main_snakefile():
    disk_check(refuse=False)


onstart:
    if PLANS:
        disk_check(refuse=True)


# Folders the results go into must not be files (Snakemake would end in a traceback).
for folder in ["results", "resources", *(f"results/{aoi}" for aoi in config["aois"])]:
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise WorkflowError(
            f"{os.path.abspath(folder)} is a file; results go into a folder of that name: move it away"
        )

AOIS = list(config["aois"])
MODELS = list(config["models"])
RIDGES = [m for m, s in config["models"].items() if s["arch"] == RIDGE]
DEMS = [m for m, s in config["models"].items() if s["arch"] == COARSE_DEM]  # no learning
NETS = [m for m in MODELS if m not in RIDGES + DEMS]
# nets that read the coarse DEM (an input channel, or the base of a residual target)
DEM_NETS = [
    m
    for m in NETS
    if config["models"][m]["dem_channel"] or config["models"][m]["target"] == "residual"
]
# every prediction scored: each model, followed by its corrected versions (side by side)
PREDICTIONS = [p for m in MODELS for p in [m, *(c for c, (b, _) in CORRECTED.items() if b == m)]]
SEEDS = [str(s) for s in config["seeds"]]
# the seed ensemble <model>_ensemble of every net and Ridge, scored on the AOI's single split
ENSEMBLED = [m for m in NETS + RIDGES] if len(SEEDS) >= 2 else []
INTERVAL_METHODS = list(config["intervals"]["methods"])  # [] = no intervals
# the width map shows one interval per model: the locally adaptive one when it is configured
MAPPED_METHOD = (
    "by_height" if "by_height" in INTERVAL_METHODS else next(iter(INTERVAL_METHODS), None)
)
# synthesize makes the synthetic AOIs; the download rules (inputs.smk) fetch the others
SYNTHETIC_AOIS = [a for a, s in config["aois"].items() if s["source"] == "synthetic"]
DOWNLOADED_AOIS = [a for a in AOIS if a not in SYNTHETIC_AOIS]
NEVER = "(?!x)x"  # a regex matching nothing, for empty name lists
# Spatial k-fold cross-validation (split.folds >= 3): fold i of AOI a is the split "a/kfold/fold<i>",
# a value of the {aoi} wildcard with its own split, models, predictions and metrics under
# results/a/kfold/fold<i>/; it reads a's inputs and patch store (aoi_input). The single split
# stays where it was, so the rules of the chain serve both without a copy.
FOLDS = config["split"]["folds"]
FOLD_RANGE = range(FOLDS if FOLDS >= 2 else 0)
FOLD_AOIS = {f"{a}/kfold/fold{i}": a for a in AOIS for i in FOLD_RANGE}  # fold split -> AOI
FOLD_INDEX = {f"{a}/kfold/fold{i}": i for a in AOIS for i in FOLD_RANGE}  # fold split -> i
BASE_AOI = {a: a for a in AOIS} | FOLD_AOIS  # every split -> its AOI

# Sharding (sharding.shard_px): tiling, prediction and evaluation of an AOI run one job per
# shard {shard} (r<i>c<j>) under results/<aoi>/shards/; merge_patches, assemble_prediction and
# merge_evaluation join them into the files the unsharded rules write, so every later rule is
# the same. SHARDS: AOI -> its shards in order (the stores' order in the merged patch index).
SHARD_PX = config["sharding"]["shard_px"]
try:
    SHARDS = (
        {a: shard_names(*aoi_shape(a, config["aois"][a]), SHARD_PX) for a in AOIS}
        if SHARD_PX
        else {}
    )
except AefHeightError as exc:
    raise WorkflowError(f"invalid config: {exc}") from None
except ImportError as exc:  # a real AOI's grid needs PROJ and shapely in Snakemake's own env
    raise WorkflowError(
        f"sharding.shard_px: sizing a real AOI's shards needs {exc.name} where Snakemake runs;"
        " install the project there (pip install -e .) or set shard_px: null"
    ) from None
SHARDED = [s for s, a in BASE_AOI.items() if a in SHARDS]  # splits of sharded AOIs
UNSHARDED = [s for s in BASE_AOI if s not in SHARDED]

# Rules run `python -m aefheight` from this checkout, so any env with the dependencies runs
# it (the venv locally, a rule's conda env with --sdm conda); jobs inherit the variable.
# (set here, not required from the user, so there is nothing for `envvars:` to assert)
os.environ.update(PYTHONPATH=PACKAGE_ROOT)


# The report's first page: every AOI's findings, then the methods (workflow/report/workflow.rst).
FRONT_PAGE = "results/report_front.rst"


@functools.cache
def local_cuda():
    """Whether this machine sees a CUDA GPU (torch when importable, else nvidia-smi)."""
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return shutil.which("nvidia-smi") is not None


def cluster_run():
    """Whether jobs run on other machines (e.g. --profile slurm). Snakemake forces
    use_threads for a remote executor, also in a dry run, whose executor is the local one."""
    return not workflow.local_exec or workflow.execution_settings.use_threads


def training_gpus():
    """GPUs a training asks for: 1, but 0 for training.device cpu or a local run without CUDA
    (so CPU trainings run side by side instead of queueing for the `gpu` slot)."""
    device = config["training"].get("device", "auto")
    if device == "cpu" or (device == "auto" and not cluster_run() and not local_cuda()):
        return 0
    return 1


def training_threads():
    """Threads of a training: 4 on a cluster or with CUDA; on a local CPU-only run half the
    cores (1 to 4), so that two trainings share the CPUs: on 2 cores two 1-thread trainings
    make 1.4x the steps of one 2-thread training (benchmarks/README.md, item 5)."""
    if cluster_run() or local_cuda():
        return 4
    cores = workflow._cores or 2
    return max(1, min(4, int(cores) // 2))


def aoi_input(template):
    """An input function: ``template`` (a path with ``{aoi}``) under the split's AOI, so that a
    k-fold split reads its AOI's inputs and patch store."""

    def path(wildcards):
        return template.format(aoi=BASE_AOI[wildcards.aoi])

    return path


def store_input(kind):
    """An input function: the patch store file ``kind`` (embeddings, dsm, coarse_dem) of the
    split's AOI; for a sharded AOI one file per shard, in the order merge_patches merged them."""

    def files(wildcards):
        aoi = BASE_AOI[wildcards.aoi]
        if aoi in SHARDS:
            return [f"results/{aoi}/shards/{s}/patches/{kind}.npy" for s in SHARDS[aoi]]
        return f"results/{aoi}/patches/{kind}.npy"

    return files


def per_shard(template):
    """An input function: ``template`` for every shard of the split's AOI, in order, the
    job's other wildcards filled in."""

    def files(wildcards):
        return expand(template, shard=SHARDS[BASE_AOI[wildcards.aoi]], **dict(wildcards.items()))

    return files


def fold_outputs(aoi, template):
    """``template`` (a path with ``{aoi}``) for every k-fold split of ``aoi``, in fold order."""
    return [template.format(aoi=f) for f, a in FOLD_AOIS.items() if a == aoi]


def one_of(names):
    """Regex alternation of exact names (so a wildcard cannot escape into a path)."""
    return "|".join(names) if names else NEVER


def optional_flags(inputs):
    """A params function: the flags of the inputs that the input function ``inputs`` adds
    (unpacked; only some AOIs, models or methods have them), e.g. `--landcover
    results/demo/inputs/landcover.tif`; empty where there are none."""

    def flags(wildcards):
        pairs = inputs(wildcards).items()
        return " ".join(f"--{k.replace('_', '-')} {shlex.quote(str(v))}" for k, v in pairs)

    return flags


def section_json(*keys):
    """A config section as compact JSON, passed to the CLI's --settings."""
    value = config
    for key in keys:
        value = value.get(key, {}) if isinstance(value, dict) else {}
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def final_outputs():
    """Targets of the default rule: rasters, metrics, tables and the report's figures."""
    out = []
    for aoi in AOIS:
        out += [
            f"results/{aoi}/metrics/metrics.csv",
            f"results/{aoi}/tables/claims.csv",
            f"results/{aoi}/figures/split_map.png",
            *(f"results/{aoi}/figures/{kind}.png" for kind in FIGURES),
        ]
        if FOLD_AOIS:
            out += [
                f"results/{aoi}/tables/kfold.md",
                f"results/{aoi}/figures/kfold.png",
                f"results/{aoi}/figures/aoa_map.png",
            ]
        if INTERVAL_METHODS:
            out += [f"results/{aoi}/tables/intervals.md", f"results/{aoi}/figures/intervals.png"]
        out += expand(f"results/{aoi}/predictions/{{m}}_seed{{s}}.tif", m=PREDICTIONS, s=SEEDS)
    out += [f"results/products/{pair}/products.md" for pair in PRODUCT_PAIRS]
    return [*out, FRONT_PAGE]


# the report's figures (report.smk), one job per kind for every model and seed
FIGURES = ("seeds", "error_by_height", "height_shift", "residual_maps", "pred_vs_ref", "dh")
FIGURES += ("loss_curves",) if NETS else ()


def paper_roles():
    """The paper's models in this config: unet, unetplusplus (the first nets of those archs
    that use no coarse DEM) and ridge (the first pixel-wise Ridge) -> model names."""
    roles = {}
    for name, m in config["models"].items():
        plain = not (m.get("dem_channel") or m.get("target") == "residual")
        if m["arch"] in ("unet", "unetplusplus") and plain:
            roles.setdefault(m["arch"], name)
        if m["arch"] == RIDGE and list(m["scales_px"]) == [1]:
            roles.setdefault("ridge", name)
    return roles


def paper_pairs():
    """The comparisons the seed figure shows: U-Net++ vs U-Net, each net vs the Ridge."""
    r = paper_roles()
    pairs = [("unetplusplus", "unet")] + [(n, "ridge") for n in ("unet", "unetplusplus")]
    return [(r[a], r[b]) for a, b in pairs if a in r and b in r]


def coarse_dem_input(wildcards):
    """The coarse DEM, for the nets that read it (optional_flags makes it --coarse-dem)."""
    if wildcards.model in DEM_NETS:
        return {"coarse_dem": f"results/{BASE_AOI[wildcards.aoi]}/inputs/coarse_dem.tif"}
    return {}


def correction_inputs(wildcards):
    """What a correction reads: the reference DSM (linear: its validation-area pixels) or the
    coarse DEM (quantile_map: label-free); never both, so the label-free one cannot see labels."""
    aoi = BASE_AOI[wildcards.aoi]
    if wildcards.method == "linear":
        return {"dsm": f"results/{aoi}/inputs/dsm.tif"}
    return {"coarse_dem": f"results/{aoi}/inputs/coarse_dem.tif"}


def aoa_input(wildcards):
    """The split's area-of-applicability map, where one is made (split.folds >= 2)."""
    return {"aoa": f"results/{wildcards.aoi}/aoa/aoa.tif"} if FOLD_AOIS else {}


def ensemble_metrics(wildcards):
    """The seed ensembles' metrics: on an AOI's single split, not on its k-fold splits."""
    if wildcards.aoi not in AOIS:
        return []
    return [f"results/{wildcards.aoi}/metrics/per_model/{m}_ensemble.csv" for m in ENSEMBLED]


def interval_files(template):
    """An input function: ``template`` under the split's intervals/ for every model (nets and
    baselines; not the corrected predictions) and seed."""

    def files(wildcards):
        return expand(f"results/{wildcards.aoi}/intervals/{template}", model=MODELS, seed=SEEDS)

    return files


def landcover_input(wildcards):
    """Land-cover classes where the AOI has them (the synthetic AOI does), else nothing."""
    aoi = BASE_AOI[wildcards.aoi]
    if aoi in SYNTHETIC_AOIS:
        return {"landcover": f"results/{aoi}/inputs/landcover.tif"}
    return {}


# Inputs of the download rules (inputs.smk) for a real AOI.
def aoi_file_input(aoi):
    """The AOI polygon file, when the config names one (so editing it re-runs the downloads)."""
    path = config["aois"][aoi].get("aoi", {}).get("path")
    return {"aoi_file": path} if path else {}


def aoi_file_inputs(wildcards):
    """The AOI polygon file of the wildcards' AOI, when the config names one."""
    return aoi_file_input(wildcards.aoi)


def embeddings_inputs(wildcards):
    """The cached AEF index of the AOI's source (none for earthengine), or the user's
    embeddings (source local), and its AOI file."""
    section = config["aois"][wildcards.aoi]
    inputs = aoi_file_input(wildcards.aoi)
    if section["source"] in ("source_coop", "gcs"):
        inputs["index"] = f"resources/aef/index/{section['source']}/aef_index.parquet"
    if section["source"] == "local" and section["embeddings"].get("path"):
        inputs["local_embeddings"] = section["embeddings"]["path"]
    return inputs


def dsm_inputs(wildcards):
    """The AOI file and, for dsm.source local, the user's DSM raster."""
    inputs = aoi_file_input(wildcards.aoi)
    dsm = config["aois"][wildcards.aoi].get("dsm", {})
    if dsm.get("source") == "local" and dsm.get("path"):
        inputs["local_dsm"] = dsm["path"]
    return inputs

# AlphaEarth embeddings -> surface height: U-Net, U-Net++ and a Ridge baseline.
# Run: snakemake --cores all   (then: snakemake --report results/report.html)
from snakemake.utils import min_version

min_version("9.0")


# The default config, unless the command line names one: `--configfile config/paper.yaml`
# then replaces it whole (a merge would keep the demo AOI in the DAG).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"


# The report opens with the findings once the study has made them (rule report_front).
report: os.path.abspath(FRONT_PAGE) if os.path.exists(FRONT_PAGE) else "workflow/report/workflow.rst"


wildcard_constraints:
    aoi=one_of(AOIS),
    model=one_of(MODELS),
    seed=r"\d+",


include: "workflow/rules/data.smk"
include: "workflow/rules/download.smk"
include: "workflow/rules/patches.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/evaluation.smk"


rule all:
    default_target: True
    input:
        final_outputs(),

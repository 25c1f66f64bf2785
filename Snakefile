# The study from the repository root: `snakemake --cores all` (README, "Two commands").
# The workflow itself lives in workflow/Snakefile, as the Snakemake workflow catalog lays it
# out; a module deployment (snakedeploy) loads that file. Its default profile is found here
# through profiles/default (a link to workflow/profiles/default).


include: "workflow/Snakefile"


# An included file's default_target does not carry over to the including Snakefile: the
# study's outputs (rule all) are named the default here once more.
rule study:
    default_target: True
    input:
        rules.all.input,

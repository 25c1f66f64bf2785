"""The workflow from the repository root, and as a Snakemake module deployed elsewhere.

From the root, `snakemake` finds the top-level Snakefile (the design card's entry point) and
its default profile, and plans what workflow/Snakefile plans.

`snakedeploy deploy-workflow <repo> <dir>` copies the repo's config/ into <dir> and writes a
workflow/Snakefile that loads this workflow as a module (from GitHub, here from this checkout:
the tests run offline) and uses all of its rules. The deployment must plan the whole study and
run a job (the package must be found from the deployment's folder).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml
from helpers import REPO, tiny_config

pytestmark = pytest.mark.slow

DEPLOYED = """configfile: "config/config.yaml"


module aefheight:
    snakefile:
        "{snakefile}"
    config:
        config


use rule * from aefheight as aefheight_*
"""


def _snakemake(workdir, *args):
    exe = shutil.which("snakemake", path=os.path.dirname(sys.executable)) or "snakemake"
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    env.pop("PYTHONPATH", None)  # the module must set it up itself
    return subprocess.run(
        [exe, *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=600
    )


def test_deployed_as_a_module_plans_the_study_and_runs_a_job(tmp_path):
    shutil.copytree(REPO / "config", tmp_path / "config")
    (tmp_path / "workflow").mkdir()
    snakefile = REPO / "workflow" / "Snakefile"
    (tmp_path / "workflow" / "Snakefile").write_text(DEPLOYED.format(snakefile=snakefile))
    plan = _snakemake(tmp_path, "-n", "--cores", "1")
    assert plan.returncode == 0, plan.stdout[-3000:] + plan.stderr[-3000:]
    for rule in ("synthesize", "train_net", "tables", "report_front", "all"):
        assert f"aefheight_{rule}" in plan.stdout
    # the user's own config (the deployed copy, edited) drives the module
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(tiny_config()))
    run = _snakemake(tmp_path, "--cores", "1", "results/tiny/inputs/dsm.tif")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert (tmp_path / "results" / "tiny" / "inputs" / "dsm.tif").is_file()


def _planned(out):
    """{rule: job count} of a dry run's job table."""
    return dict(re.findall(r"^(\w+)\s+(\d+)$", out, flags=re.M))


def test_the_root_snakefile_plans_the_study_with_the_default_profile():
    """`snakemake --cores all` from the root (a dry run of every job, whatever results exist)."""
    root = _snakemake(REPO, "-n", "--forceall", "--quiet", "rules")
    assert root.returncode == 0, root.stdout[-3000:] + root.stderr[-3000:]
    assert "Using workflow specific profile profiles/default " in root.stderr  # the link:
    assert (REPO / "profiles" / "default").resolve() == REPO / "workflow" / "profiles" / "default"
    inner = _snakemake(REPO, "-s", "workflow/Snakefile", "-n", "--forceall", "--quiet", "rules")
    assert inner.returncode == 0, inner.stdout[-3000:] + inner.stderr[-3000:]
    jobs, same = _planned(root.stdout), _planned(inner.stdout)
    assert jobs.pop("study") == same.pop("all") == "1"  # the root's default rule
    assert jobs.pop("total") == same.pop("total") and jobs == same and "train_net" in jobs

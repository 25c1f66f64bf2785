"""Helpers of the cluster tests: the settings of the test runs and starting snakemake.

(Snakemake itself is started by tests/helpers.py's command, as every other test does.)
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from helpers import snakemake_cmd, tiny_config

# The test cluster's partitions, handed to the profile the way a user does (environment).
SLURM_ENV = {
    "AEF_SLURM_PARTITION": "cpu",
    "AEF_SLURM_GPU_PARTITION": "gpu",
    "AEF_SLURM_ACCOUNTING": "no",  # no slurmdbd here: status by squeue, no account
}
# Knobs of the test run only. Conda cannot run here: --sdm env-modules replaces the profile's
# conda (no rule has `envmodules:`, so nothing is deployed and the venv's Python runs the jobs).
# The plugin's first status check comes after 2 s instead of 40 s.
SLURM_ARGS = ("--sdm", "env-modules", "--slurm-init-seconds-before-status-checks", "2")
RUN_TIMEOUT = 900  # s, all three runs together (3 to 4 minutes on a quiet 2-core machine)
# The chain from inputs to the metrics of every model: synthesize, tile, split, the three
# trainings, predictions and evaluations, collect_metrics. Seven levels of SLURM jobs, each
# costing 15 to 40 s of the plugin's status polling, so the report's figures are left out.
TARGET = "results/tiny/metrics/metrics.csv"


@dataclass
class Run:
    """A finished snakemake run: its folder, exit code, output and duration."""

    workdir: Path
    returncode: int
    output: str
    seconds: float


def run_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    bindir = os.path.dirname(sys.executable)
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", **(extra or {})}
    for name in list(env):  # a user's own settings must not leak into the test runs
        if name.startswith("AEF_SLURM_") and name not in (extra or {}):
            del env[name]
    return env


def start_run(workdir: Path, cfg: dict, *args: str, env: dict | None = None):
    """Write the config and start snakemake in the background; output goes to run.log."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg))
    log = (workdir / "run.log").open("w")
    proc = subprocess.Popen(
        snakemake_cmd(workdir, *args),
        cwd=workdir,
        env=run_env(env),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return proc, log, time.monotonic()


def finish_run(workdir: Path, started, deadline: float) -> Run:
    proc, log, t0 = started
    try:
        rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 15)  # its own session: snakemake and its children
        try:
            rc = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            rc = proc.wait(timeout=30)
        rc = rc if rc else -15
    log.close()
    output = (workdir / "run.log").read_text(errors="replace")
    return Run(workdir, rc, output, time.monotonic() - t0)


def study_config() -> dict:
    """The tiny study of tests/workflow with one seed, three models and one training epoch (the
    runs here test the orchestration; the SLURM plugin's polling makes every step cost 15 to
    40 s)."""
    cfg = tiny_config()
    cfg["training"]["max_epochs"] = 1
    cfg["seeds"] = [0]
    for name in ("ridge_ctx", "coarse_dem", "unet_dem"):  # the orchestration needs no more
        del cfg["models"][name]
    cfg["correction"] = {"methods": []}
    return cfg


def failing_config() -> dict:
    """The tiny study with a leakage buffer wider than the AOI: a valid config (it is checked
    before any job), but job `split` finds no train patch left and fails."""
    cfg = study_config()
    cfg["split"]["buffer_px"] = 100_000
    return cfg

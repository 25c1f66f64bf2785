"""Fixtures of the cluster tests: a real single-node SLURM cluster and the runs made on it.

The cluster (tests/cluster/slurmctl.py) is installed with apt-get when missing and started once
per session; its daemons are stopped by PID when the session ends. Where SLURM cannot be
installed or started (not root, no apt-get, a real SLURM owns /etc/slurm) the SLURM tests are
skipped, and the end of the pytest output says so in a banner.

The runs are started together, since each mostly waits (the SLURM plugin polls): a local
reference run, the tiny study through `--profile slurm`, and a study whose first job fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "workflow")]

import slurmctl  # noqa: E402
from snakehelp import REPO, tiny_config  # noqa: E402

SKIPPED: list[str] = []  # reasons the SLURM tests were skipped, for the closing banner

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


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    bindir = os.path.dirname(sys.executable)
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", **(extra or {})}
    for name in list(env):  # a user's own settings must not leak into the test runs
        if name.startswith("AEF_SLURM_") and name not in (extra or {}):
            del env[name]
    return env


def snakemake_cmd(workdir: Path, *args: str) -> list[str]:
    exe = shutil.which("snakemake", path=os.path.dirname(sys.executable)) or "snakemake"
    return [
        exe,
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(workdir / "config.yaml"),
        *args,
    ]


def start_run(workdir: Path, cfg: dict, *args: str, env: dict | None = None):
    """Write the config and start snakemake in the background; output goes to run.log."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg))
    log = (workdir / "run.log").open("w")
    proc = subprocess.Popen(
        snakemake_cmd(workdir, *args),
        cwd=workdir,
        env=_env(env),
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


def _skip(reason: str) -> None:
    SKIPPED.append(reason)
    pytest.skip(f"SLURM TESTS SKIPPED: {reason}")


@pytest.fixture(scope="session")
def slurm_cluster():
    """A running single-node cluster (installed first when missing); stopped by PID after."""
    reason = slurmctl.why_not()
    if reason:
        _skip(reason)
    try:
        slurmctl.install()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        _skip(f"SLURM could not be installed: {e}")
    cluster = slurmctl.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def study_config() -> dict:
    """The tiny study of tests/workflow, with one training epoch (the runs here test the
    orchestration; the SLURM plugin's polling already makes every step cost 15 to 40 s)."""
    cfg = tiny_config()
    cfg["training"]["max_epochs"] = 1
    return cfg


def failing_config() -> dict:
    """The tiny study with a leakage buffer wider than the AOI: a valid config (it is checked
    before any job), but job `split` finds no train patch left and fails."""
    cfg = study_config()
    cfg["split"]["buffer_px"] = 100_000
    return cfg


class JobWatcher(threading.Thread):
    """Keeps the last `scontrol show jobs` record of every job while the runs go on (SLURM
    forgets finished jobs after MinJobAge; the tests read partitions, CPUs, memory, GPUs)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.jobs: dict[str, dict[str, str]] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while True:
            try:
                self.jobs.update(slurmctl.jobs())
            except (OSError, subprocess.SubprocessError, ValueError):
                pass
            if self.done.wait(2.0):
                break

    def stop(self) -> dict[str, dict[str, str]]:
        self.done.set()
        self.join(timeout=30)
        self.jobs.update(slurmctl.jobs())
        return self.jobs


SLURM_JOBS: dict[str, dict[str, str]] = {}


@pytest.fixture(scope="session")
def slurm_jobs(cluster_runs) -> dict[str, dict[str, str]]:
    """SLURM's record of every job of the runs, by SLURM job id."""
    return SLURM_JOBS


@pytest.fixture(scope="session")
def cluster_runs(slurm_cluster, tmp_path_factory) -> dict[str, Run]:
    """The three runs, started together and awaited (at most RUN_TIMEOUT seconds)."""
    base = tmp_path_factory.mktemp("cluster")
    slurm = ("--profile", str(REPO / "profiles" / "slurm"), TARGET, *SLURM_ARGS)
    # The local reference runs its jobs with as many threads as the SLURM jobs get here (2),
    # and with cores for both GPU trainings at once, so only the `gpu` resource keeps them apart.
    local = ("--cores", "4", TARGET, "--set-threads", "train_net=2", "predict=2")
    started = {
        "local": start_run(base / "local", study_config(), *local),
        "slurm": start_run(base / "slurm", study_config(), *slurm, env=SLURM_ENV),
        "failing": start_run(base / "failing", failing_config(), *slurm, env=SLURM_ENV),
    }
    watcher = JobWatcher()
    watcher.start()
    deadline = time.monotonic() + RUN_TIMEOUT
    try:
        return {name: finish_run(base / name, s, deadline) for name, s in started.items()}
    finally:
        SLURM_JOBS.update(watcher.stop())


def pytest_terminal_summary(terminalreporter):
    if SKIPPED:
        bar = "!" * 78
        terminalreporter.write_line(bar, red=True, bold=True)
        for reason in dict.fromkeys(SKIPPED):
            terminalreporter.write_line(f"!!! SLURM CLUSTER TESTS SKIPPED: {reason}", red=True)
        terminalreporter.write_line(bar, red=True, bold=True)

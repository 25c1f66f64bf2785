"""Fixtures of the cluster tests: a real single-node SLURM cluster and the runs made on it.

The cluster (tests/cluster/slurmctl.py) is installed with apt-get when missing and started once
per session; its daemons are stopped by PID when the session ends. Where SLURM cannot be
installed or started (not root, no apt-get, a real SLURM owns /etc/slurm) the SLURM tests are
skipped, and the end of the pytest output says so in a banner.

The runs are started together, since each mostly waits (the SLURM plugin polls): a local
reference run, the tiny study through `--profile slurm`, and a study whose job `split` fails.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE)]

import slurmctl  # noqa: E402
from clusterhelp import (  # noqa: E402
    RUN_TIMEOUT,
    SLURM_ARGS,
    SLURM_ENV,
    TARGET,
    Run,
    failing_config,
    finish_run,
    start_run,
    study_config,
)
from helpers import REPO  # noqa: E402


def _skip(reason: str) -> None:
    pytest.skip(f"SLURM TESTS SKIPPED: {reason}")  # tests/conftest.py prints a banner of these


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

"""The tiny study through `snakemake --profile slurm` on a real (single-node) SLURM cluster."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio

pytestmark = pytest.mark.slow

SUBMITTED = re.compile(
    r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (\S+)\)\.", re.MULTILINE
)
MODELS = ("unet", "unetplusplus", "ridge")


def submissions(output: str) -> list[tuple[str, str, Path]]:
    """(rule, SLURM job id, SLURM log) of every sbatch the plugin reported."""
    out = []
    for _, slurm_id, log in SUBMITTED.findall(output):
        rule = re.search(r"/rule_([a-z_]+)/", log)
        out.append((rule.group(1) if rule else "?", slurm_id, Path(log)))
    return out


def job_stats(output: str) -> dict[str, int]:
    """The 'Job stats' table snakemake prints at the start: rule -> job count."""
    block = output.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    rows = [line.split() for line in block.splitlines()[3:]]
    return {r[0]: int(r[1]) for r in rows if len(r) == 2 and r[0] != "total"}


def test_every_job_goes_through_sbatch_and_finishes(cluster_runs):
    run = cluster_runs["slurm"]
    assert run.returncode == 0, run.output[-6000:]
    stats = job_stats(run.output)
    subs = submissions(run.output)
    # every job but the target rule `all` (no command, finished on the spot) is an sbatch job
    expected = {rule: n for rule, n in stats.items() if rule != "all"}
    got: dict[str, int] = {}
    for rule, _, _ in subs:
        got[rule] = got.get(rule, 0) + 1
    assert got == expected
    assert len({slurm_id for _, slurm_id, _ in subs}) == len(subs)
    assert run.output.count("Finished jobid") == sum(stats.values())
    assert "Nothing to be done" not in run.output


def test_outputs_equal_a_local_run(cluster_runs):
    local, slurm = cluster_runs["local"], cluster_runs["slurm"]
    assert local.returncode == 0, local.output[-6000:]
    assert slurm.returncode == 0, slurm.output[-6000:]
    a, b = local.workdir / "results" / "tiny", slurm.workdir / "results" / "tiny"
    # same seed, same CPU arithmetic: the metrics are identical, not just close
    pd.testing.assert_frame_equal(
        pd.read_csv(a / "metrics" / "metrics.csv"), pd.read_csv(b / "metrics" / "metrics.csv")
    )
    for m in MODELS:
        with rasterio.open(a / "predictions" / f"{m}_seed0.tif") as pa:
            with rasterio.open(b / "predictions" / f"{m}_seed0.tif") as pb:
                assert (pa.crs, pa.transform) == (pb.crs, pb.transform)
                assert np.array_equal(pa.read(), pb.read(), equal_nan=True)
        ha = pd.read_csv(a / "models" / m / "seed0" / "history.csv")
        hb = pd.read_csv(b / "models" / m / "seed0" / "history.csv")
        timing = [c for c in ("seconds",) if c in ha.columns]
        pd.testing.assert_frame_equal(ha.drop(columns=timing), hb.drop(columns=timing))
    local_files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    slurm_files = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert local_files == slurm_files


def test_training_gets_the_gpu_partition_and_a_gpu(cluster_runs, slurm_jobs):
    """train_net: partition from AEF_SLURM_GPU_PARTITION, one GPU; the rest: CPU partition.
    Each job asks for as many CPUs as the rule has threads (the profile's set-threads)."""
    run = cluster_runs["slurm"]
    assert run.returncode == 0, run.output[-6000:]
    seen = set()
    for rule, slurm_id, _ in submissions(run.output):
        job = slurm_jobs[slurm_id]
        seen.add(rule)
        gpus = job.get("TresPerJob", "") + job.get("TresPerNode", "")
        if rule == "train_net":
            assert (job["Partition"], gpus) == ("gpu", "gres:gpu:1"), job
        else:
            assert (job["Partition"], gpus) == ("cpu", ""), job
        assert job["JobState"] == "COMPLETED", job
        threads = {"train_net": 8, "predict": 4}.get(rule, 1)
        assert job["NumCPUs"] == str(threads), (rule, job)
    assert {"train_net", "train_ridge", "predict", "evaluate"} <= seen


def test_local_trainings_share_the_gpu_slot_only_with_a_gpu(cluster_runs):
    """With cores for both, the `gpu` resource (workflow/profiles/default: gpu=1) serializes the
    trainings where this machine has CUDA; without one they ask for no GPU and run together."""
    import torch

    run = cluster_runs["local"]
    assert run.returncode == 0, run.output[-6000:]
    running, most = set(), 0
    for m in re.finditer(
        r"^(?:local)?rule (\w+):\n(?:    .*\n)*?    jobid: (\d+)|^Finished jobid: (\d+)",
        run.output,
        re.M,
    ):
        rule, started, finished = m.groups()
        if rule == "train_net":
            running.add(started)
            most = max(most, len(running))
        elif finished:
            running.discard(finished)
    assert len(re.findall(r"^(?:local)?rule train_net:", run.output, re.M)) == 2
    if torch.cuda.is_available():
        assert most == 1
    else:  # no slot asked for: nothing keeps two CPU trainings apart
        pattern = r"^(?:local)?rule train_net:\n(?:    .*\n)*?    resources: (.*)"
        asked = re.findall(pattern, run.output, re.M)
        assert len(asked) == 2 and all("gpu=0" in r for r in asked), asked


def test_failed_job_is_reported_with_its_logs_and_retried_with_more_memory(
    cluster_runs, slurm_jobs
):
    run = cluster_runs["failing"]
    assert run.returncode != 0
    assert "Error in rule split" in run.output
    assert "results/tiny/logs/split.log" in run.output  # the rule's own log
    subs = [s for s in submissions(run.output) if s[0] == "split"]
    # the profile's retries: 2, so three attempts, each with more memory (mem_mb * attempt)
    assert len(subs) == 3, run.output[-6000:]
    mems = [slurm_jobs[slurm_id]["MinMemoryNode"] for _, slurm_id, _ in subs]
    assert mems == ["4000M", "8000M", "12000M"]
    for _, slurm_id, log in subs:
        assert slurm_jobs[slurm_id]["JobState"] == "FAILED"
        # the plugin names the SLURM log of the failed job; it is kept, not cleaned up
        assert str(log) in run.output and log.exists()
        assert f"SLURM-job '{slurm_id}' failed" in run.output
    split_log = run.workdir / "results" / "tiny" / "logs" / "split.log"
    assert "aefheight split: error" in split_log.read_text()
    # what split needs ran; nothing after it was submitted
    assert {s[0] for s in submissions(run.output)} == {"synthesize", "tile", "split"}

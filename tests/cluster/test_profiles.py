"""The profiles and the fan-out, without a cluster: parsed profiles and dry runs (seconds)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from clusterhelp import SLURM_ENV, study_config
from clusterhelp import run_env as _env
from helpers import REPO, snakemake_cmd
from snakemake.profiles import ProfileConfigFileParser

SLURM_PROFILE = REPO / "profiles" / "slurm" / "config.yaml"
DEFAULT_PROFILE = REPO / "workflow" / "profiles" / "default" / "config.yaml"
NO_CONDA = ("--sdm", "env-modules")  # conda cannot run here; the plan is the same


def parse_profile(path: Path, env: dict[str, str], monkeypatch) -> dict:
    """The profile as Snakemake reads it (YTE evaluated) under the given environment."""
    for name in [n for n in os.environ if n.startswith("AEF_SLURM_")]:
        monkeypatch.delenv(name)
    # the profile sets CONDA_OVERRIDE_CUDA in this process: set-then-delete makes monkeypatch
    # restore the variable's absence afterwards
    monkeypatch.setenv("CONDA_OVERRIDE_CUDA", "")
    monkeypatch.delenv("CONDA_OVERRIDE_CUDA")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with path.open() as fh:
        return dict(ProfileConfigFileParser().parse(fh))


def kv(items: list[str]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in items)


def dry_run(workdir: Path, cfg: dict, *args: str, env: dict | None = None) -> list[dict]:
    """Plan the workflow (`snakemake -n`) and return its jobs: rule, jobid, input, output,
    wildcards and resources of each."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg))
    out = subprocess.run(
        snakemake_cmd(workdir, "-n", *args),
        cwd=workdir,
        env=_env(env),
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    return parse_jobs(out.stdout + out.stderr)


def parse_jobs(text: str) -> list[dict]:
    jobs = []
    for m in re.finditer(r"^(?:local)?rule (\w+):\n((?:    .*\n)+)", text, re.M):
        job: dict = {"rule": m.group(1), "input": [], "output": [], "wildcards": {}}
        for line in m.group(2).splitlines():
            key, _, value = line.strip().partition(": ")
            if key in ("input", "output"):
                job[key] = value.split(", ")
            elif key in ("wildcards", "resources"):
                job[key] = dict(p.split("=", 1) for p in value.split(", ") if "=" in p)
            elif key == "jobid":
                job["jobid"] = int(value)
        jobs.append(job)
    return jobs


# --- profiles ------------------------------------------------------------------------------


def test_slurm_profile_defaults(monkeypatch):
    p = parse_profile(SLURM_PROFILE, {}, monkeypatch)
    assert p["executor"] == "slurm"
    assert p["software-deployment-method"] == "conda"
    assert p["rerun-incomplete"] == "True" and p["keep-going"] == "True"
    assert int(p["retries"]) >= 1 and int(p["latency-wait"]) >= 30
    assert p["slurm-status-command"] == "sacct"  # a cluster with accounting
    d = kv(p["default-resources"])
    assert d["slurm_partition"] == "''" and d["slurm_account"] == "''"  # cluster defaults
    assert d["cpus_per_task"] == "threads"  # SLURM CPUs = threads, for every rule
    assert "attempt" in d["mem_mb"]  # a retry asks for more memory
    assert int(d["runtime"]) > 0
    s = kv(p["set-resources"])
    assert "train_net:gres" not in s and "attempt" in s["train_net:mem_mb"]
    assert kv(p["set-resource-scopes"]) == {"gpu": "local"}
    assert os.environ["CONDA_OVERRIDE_CUDA"]  # for the CUDA pytorch of train_net


def test_slurm_profile_takes_partitions_and_account_from_the_environment(monkeypatch):
    env = {
        "AEF_SLURM_PARTITION": "compute",
        "AEF_SLURM_GPU_PARTITION": "a100",
        "AEF_SLURM_ACCOUNT": "proj42",
        "CONDA_OVERRIDE_CUDA": "12.4",
    }
    p = parse_profile(SLURM_PROFILE, env, monkeypatch)
    d, s = kv(p["default-resources"]), kv(p["set-resources"])
    assert (d["slurm_partition"], d["slurm_account"]) == ("'compute'", "'proj42'")
    assert s["train_net:slurm_partition"] == "'a100'"
    assert os.environ["CONDA_OVERRIDE_CUDA"] == "12.4"  # the user's value wins
    # no GPU partition of its own: the trainings go to the CPU jobs' partition
    del env["AEF_SLURM_GPU_PARTITION"]
    p = parse_profile(SLURM_PROFILE, env, monkeypatch)
    assert kv(p["set-resources"])["train_net:slurm_partition"] == "'compute'"


def test_one_setting_for_clusters_without_accounting(monkeypatch):
    env = {"AEF_SLURM_ACCOUNTING": "no", "AEF_SLURM_ACCOUNT": "proj42"}
    p = parse_profile(SLURM_PROFILE, env, monkeypatch)
    assert p["slurm-status-command"] == "squeue"
    assert kv(p["default-resources"])["slurm_account"] == "''"  # nothing to check it against
    # squeue forgets finished jobs after MinJobAge: the first check must come well before
    assert 3 * int(p["slurm-init-seconds-before-status-checks"]) <= 120


def test_gres_instead_of_gpus(monkeypatch):
    p = parse_profile(SLURM_PROFILE, {"AEF_SLURM_GPU_GRES": "gpu:a100:1"}, monkeypatch)
    s = kv(p["set-resources"])
    assert (s["train_net:gres"], s["train_net:gpu"]) == ("gpu:a100:1", "0")


def test_default_profile_is_local_and_holds_nothing_a_cluster_run_needs_otherwise(monkeypatch):
    p = parse_profile(DEFAULT_PROFILE, {}, monkeypatch)
    # the workflow profile is read on `--profile slurm` runs too and wins key by key
    cluster_keys = {
        "executor",
        "jobs",
        "cores",
        "latency-wait",
        "keep-going",
        "retries",
        "default-resources",
        "set-resources",
        "set-threads",
        "set-resource-scopes",
        "software-deployment-method",
    }
    assert not cluster_keys & set(p), cluster_keys & set(p)
    assert kv(p["resources"]) == {"gpu": "1"}  # one GPU training at a time on a workstation


# --- dry runs ------------------------------------------------------------------------------


@pytest.mark.slow
def test_slurm_plan_puts_training_on_the_gpu_partition_with_a_gpu(tmp_path):
    slurm = ("--profile", str(REPO / "profiles" / "slurm"), *NO_CONDA)
    jobs = dry_run(tmp_path / "gpu", study_config(), *slurm, env=SLURM_ENV)
    for job in jobs:
        res = job.get("resources", {})
        if job["rule"] == "train_net":
            assert (res["slurm_partition"], res["gpu"]) == ("gpu", "1"), job
        elif job["rule"] != "all":
            assert res["slurm_partition"] == "cpu" and res.get("gpu", "0") == "0", job
    # a CPU-only cluster: training.device: cpu asks for no GPU
    cfg = study_config()
    cfg["training"]["device"] = "cpu"
    jobs = dry_run(tmp_path / "cpu", cfg, *slurm, env=SLURM_ENV)
    assert {j["resources"]["gpu"] for j in jobs if j["rule"] == "train_net"} == {"0"}


def fan_out_config() -> dict:
    cfg = study_config()
    aoi = cfg["aois"]["tiny"]
    cfg["aois"] = {
        "north": aoi,
        "south": {**aoi, "synthetic": {**aoi["synthetic"], "seed": 6}},
    }
    assert len(cfg["models"]) == 3  # study_config drops the multi-scale Ridge
    cfg["seeds"] = [0, 1, 2]
    return cfg


@pytest.mark.slow
def test_two_aois_three_models_three_seeds_plan_18_independent_chains(tmp_path):
    jobs = dry_run(tmp_path, fan_out_config())
    by_id = {j["jobid"]: j for j in jobs}
    producer = {f: j["jobid"] for j in jobs for f in j["output"]}
    parents = {j["jobid"]: {producer[f] for f in j["input"] if f in producer} for j in jobs}

    def ancestors(jid: int) -> set[int]:
        seen, todo = set(), list(parents[jid])
        while todo:
            p = todo.pop()
            if p not in seen:
                seen.add(p)
                todo += parents[p]
        return seen

    trainings = [j for j in jobs if j["rule"] in ("train_net", "train_ridge")]
    key = lambda j: tuple(j["wildcards"][w] for w in ("aoi", "model", "seed"))  # noqa: E731
    assert len(trainings) == 18
    assert sorted(key(t) for t in trainings) == sorted(
        (a, m, s)
        for a in ("north", "south")
        for m in ("unet", "unetplusplus", "ridge")
        for s in ("0", "1", "2")
    )
    chains = {}
    for t in trainings:
        (predict,) = [
            j for j in jobs if j["rule"] == "predict" and t["jobid"] in parents[j["jobid"]]
        ]
        (evaluate,) = [
            j for j in jobs if j["rule"] == "evaluate" and predict["jobid"] in parents[j["jobid"]]
        ]
        assert key(predict) == key(evaluate) == key(t)
        chains[key(t)] = (t["jobid"], predict["jobid"], evaluate["jobid"])
    # independent: no job of one chain is upstream of (or shared with) another chain
    for k, chain in chains.items():
        upstream = set().union(*(ancestors(j) for j in chain))
        others = set().union(*(set(c) for k2, c in chains.items() if k2 != k))
        assert not (upstream | set(chain)) & others, k
        # what a chain waits for: only its own AOI's inputs, tiles and split
        for j in upstream - set(chain):
            assert by_id[j]["rule"] in ("synthesize", "tile", "split"), by_id[j]
            assert by_id[j]["wildcards"]["aoi"] == k[0]
    # and per AOI the chains meet again: one metrics table over all models and seeds, which
    # the report's table (rule tables) shows as mean and sd over the seeds
    for aoi in ("north", "south"):
        (collect,) = [
            j for j in jobs if j["rule"] == "collect_metrics" and j["wildcards"]["aoi"] == aoi
        ]
        evals = {j for j in parents[collect["jobid"]] if by_id[j]["rule"] == "evaluate"}
        assert evals == {c[2] for k, c in chains.items() if k[0] == aoi}  # 3 models x 3 seeds
        assert any(j["rule"] == "tables" and collect["jobid"] in parents[j["jobid"]] for j in jobs)


@pytest.mark.slow
def test_snakemake_profile_slurm_from_the_repo_root_after_the_one_time_install(tmp_path):
    """`snakemake --profile slurm` finds the profile once it is linked into Snakemake's config
    dir with the README's command (here with XDG_CONFIG_HOME pointing to a temporary dir)."""
    env = {**SLURM_ENV, "XDG_CONFIG_HOME": str(tmp_path)}

    def snakemake_profile_slurm() -> subprocess.CompletedProcess:
        return subprocess.run(
            # --forceall: the plan does not depend on results/ a study left in the checkout
            ["snakemake", "--profile", "slurm", "-n", "--forceall", *NO_CONDA],
            cwd=REPO,
            env=_env(env),
            capture_output=True,
            text=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
        )

    before = snakemake_profile_slurm()
    assert before.returncode != 0 and "slurm" in before.stderr
    install = (  # the one-time install (XDG_CONFIG_HOME-aware: the test points it elsewhere)
        'mkdir -p "${XDG_CONFIG_HOME:-$HOME/.config}/snakemake" && '
        'ln -sfn "$PWD/profiles/slurm" "${XDG_CONFIG_HOME:-$HOME/.config}/snakemake/slurm"'
    )
    subprocess.run(["bash", "-c", install], cwd=REPO, env=_env(env), check=True, timeout=30)
    after = snakemake_profile_slurm()
    assert after.returncode == 0, after.stdout[-3000:] + after.stderr[-3000:]
    assert "Using profiles slurm" in after.stderr
    jobs = parse_jobs(after.stdout + after.stderr)
    assert {j["resources"]["slurm_partition"] for j in jobs if j["rule"] == "train_net"} == {"gpu"}

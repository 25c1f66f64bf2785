"""The test cluster's own rules: when it refuses to run, and the settings the issue names."""

from __future__ import annotations

import slurmctl


def test_refuses_without_root(monkeypatch):
    monkeypatch.setattr(slurmctl.os, "geteuid", lambda: 1000)
    assert "root" in slurmctl.why_not()


def test_never_touches_a_real_slurm_config(monkeypatch, tmp_path):
    monkeypatch.setattr(slurmctl.os, "geteuid", lambda: 0)
    conf = tmp_path / "slurm.conf"
    monkeypatch.setattr(slurmctl, "CONF", conf)
    conf.write_text("ClusterName=production\n")
    assert "real SLURM" in slurmctl.why_not()
    conf.write_text(slurmctl.slurm_conf(tmp_path))  # one of ours: may be rewritten
    assert slurmctl.why_not() is None or "apt-get" in slurmctl.why_not()


def test_cluster_settings(tmp_path):
    conf = dict(
        line.split("=", 1)
        for line in slurmctl.slurm_conf(tmp_path).splitlines()
        if "=" in line and not line.startswith(("#", "NodeName", "PartitionName"))
    )
    assert conf["SelectType"] == "select/cons_tres"
    assert conf["ProctrackType"] == "proctrack/linuxproc"
    assert conf["TaskPlugin"] == "task/none"
    assert conf["MinJobAge"] == "300"
    assert conf["AccountingStorageType"] == "accounting_storage/none"  # no slurmdbd, as issued
    assert str(tmp_path) in conf["StateSaveLocation"]


def test_removes_only_its_own_config(monkeypatch, tmp_path):
    ours, real = tmp_path / "slurm.conf", tmp_path / "gres.conf"
    monkeypatch.setattr(slurmctl, "CONF", ours)
    monkeypatch.setattr(slurmctl, "GRES_CONF", real)
    ours.write_text(slurmctl.slurm_conf(tmp_path))
    real.write_text("NodeName=gpu01 Name=gpu File=/dev/nvidia0\n")
    slurmctl.remove_config()
    assert not ours.exists() and real.exists()

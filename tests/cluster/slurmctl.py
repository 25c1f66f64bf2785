"""A throwaway single-node SLURM cluster on localhost, for the cluster tests.

No systemd here: ``munged``, ``slurmctld`` and ``slurmd -N localhost`` are started by hand in
the foreground of child processes, and stopped by the PIDs this module recorded. There is no
slurmdbd, so there is no accounting: ``sacct`` fails and the SLURM profile must be run with
``AEF_SLURM_ACCOUNTING=no`` (status checks by ``squeue``; ``MinJobAge`` is 300 s here).

By hand (as root):  python tests/cluster/slurmctl.py up   |   python tests/cluster/slurmctl.py down
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

# The client commands (sbatch, srun inside jobs) read this path: the jobstep plugin drops
# SLURM_* variables (SLURM_CONF too) before its srun, so an alternative path would not reach it.
CONF = Path("/etc/slurm/slurm.conf")
GRES_CONF = CONF.with_name("gres.conf")
MARKER = "# written by aefheight tests/cluster/slurmctl.py (a throwaway test cluster)"
PACKAGES = ("slurm-wlm", "munge")
DAEMONS = ("munged", "slurmctld", "slurmd")
STATE = Path(os.environ.get("AEF_TEST_SLURM_STATE", "/tmp/aefheight-test-slurm"))
# Declared CPUs of the node (more than this machine has: SlurmdParameters=config_overrides),
# so jobs asking for the profile's cpus_per_task (up to 8) fit on a 2-core CI machine.
NODE_CPUS = 16
PARTITIONS = ("cpu", "gpu")  # both on the one node; cpu is the default


def why_not() -> str | None:
    """Why a test cluster cannot run here (None when it can, maybe after an install)."""
    if sys.platform != "linux":
        return "SLURM test cluster needs Linux"
    if os.geteuid() != 0:
        return "SLURM test cluster needs root (daemons, /etc/slurm, apt-get)"
    if CONF.exists() and MARKER not in CONF.read_text(errors="replace"):
        return f"{CONF} belongs to a real SLURM installation; not touching it"
    if all(shutil.which(d) for d in (*DAEMONS, "sbatch", "squeue")):
        return None
    if not shutil.which("apt-get"):
        return "SLURM is not installed and there is no apt-get to install it"
    return None


def install(timeout: float = 420) -> None:
    """Install Debian's slurm-wlm and munge when missing (about 15 s on CI)."""
    if all(shutil.which(d) for d in (*DAEMONS, "sbatch", "squeue")):
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    deadline = time.monotonic() + timeout
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *PACKAGES]):
        left = max(10.0, deadline - time.monotonic())
        out = subprocess.run(
            cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=left
        )
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")


def _mem_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024 - 512
    return 4096


def slurm_conf(state: Path) -> str:
    """slurm.conf of the one-node cluster (no accounting, no cgroups, a fake GPU)."""
    nodes = "NodeName=localhost NodeAddr=127.0.0.1"
    return "\n".join(
        [
            MARKER,
            "ClusterName=aeftest",
            "SlurmctldHost=localhost(127.0.0.1)",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            "SlurmUser=root",
            "SlurmdUser=root",
            f"StateSaveLocation={state}/ctld",
            f"SlurmdSpoolDir={state}/spool",
            f"SlurmctldPidFile={state}/slurmctld.pid",
            f"SlurmdPidFile={state}/slurmd.pid",
            f"SlurmctldLogFile={state}/slurmctld.log",
            f"SlurmdLogFile={state}/slurmd.log",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            # finished jobs stay visible to squeue this long: the plugin's squeue status
            # checks need it (>= 3 x slurm-init-seconds-before-status-checks, >= 120 s)
            "MinJobAge=300",
            "ReturnToService=2",
            "SlurmdParameters=config_overrides",
            "MpiDefault=none",
            "GresTypes=gpu",
            f"{nodes} CPUs={NODE_CPUS} RealMemory={_mem_mb()} Gres=gpu:1 State=UNKNOWN",
            f"PartitionName={PARTITIONS[0]} Nodes=localhost Default=YES MaxTime=INFINITE State=UP",
            f"PartitionName={PARTITIONS[1]} Nodes=localhost MaxTime=INFINITE State=UP",
            "",
        ]
    )


# A GPU without a device file: SLURM counts and allocates it, nothing can use it (the
# training then runs on the CPU, which is what the tests compare against a local run).
GRES = f"{MARKER}\nAutoDetect=off\nNodeName=localhost Name=gpu File=/dev/null\n"


@dataclass
class Cluster:
    """The running daemons of a test cluster (PIDs of the processes started here)."""

    state: Path
    pids: dict[str, int] = field(default_factory=dict)

    def save(self) -> None:
        (self.state / "pids.json").write_text(json.dumps(self.pids))

    def stop(self, timeout: float = 20) -> None:
        """Cancel the jobs still on the cluster (a test that timed out leaves some), then stop
        the daemons this cluster started, by PID, slurmd first."""
        if self.pids.get("slurmctld") and _is_ours(self.pids["slurmctld"], "slurmctld"):
            cancel_all_jobs(timeout)
        for name in ("slurmd", "slurmctld", "munged"):
            pid = self.pids.get(name)
            if pid is None or not _is_ours(pid, name):
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.2)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
            _reap(pid)
        self.pids.clear()
        (self.state / "pids.json").unlink(missing_ok=True)
        remove_config()


def remove_config() -> None:
    """Remove our slurm.conf and gres.conf: with a config but no controller, every
    ``scontrol`` waits 9 s, and the SLURM executor plugin runs one when snakemake starts."""
    for conf in (CONF, GRES_CONF):
        if conf.exists() and MARKER in conf.read_text(errors="replace"):
            conf.unlink()


def jobs() -> dict[str, dict[str, str]]:
    """`scontrol show jobs` by job id: JobState, Partition, NumCPUs, MinMemoryNode, TresPerJob
    (gres:gpu:1 for a GPU job), ... (finished jobs stay listed for MinJobAge seconds)."""
    out = _run("scontrol", "-o", "show", "jobs").stdout
    recs = (dict(kv.split("=", 1) for kv in line.split() if "=" in kv) for line in out.splitlines())
    return {r["JobId"]: r for r in recs if "JobId" in r}


def cancel_all_jobs(timeout: float = 20) -> None:
    """scancel every job of the test cluster and wait until none runs (their processes are
    children of slurmd's slurmstepd, so stopping the daemons alone would leave them running)."""
    try:
        ids = _run("squeue", "-h", "-o", "%i").stdout.split()
        if ids:
            _run("scancel", "--full", *ids)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            active = _run("squeue", "-h", "-t", "RUNNING,COMPLETING,PENDING", "-o", "%i")
            if not active.stdout.split():
                return
            time.sleep(0.5)
    except (OSError, subprocess.SubprocessError):
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _is_ours(pid: int, name: str) -> bool:
    """True when the PID still runs the daemon started here (not a recycled PID)."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        return False
    return os.path.basename(cmd) == name


def _wait(cond, timeout: float, what: str, log: Path | None = None, proc=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.3)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    why = "it exited" if proc is not None and proc.poll() is not None else "timed out"
    raise RuntimeError(f"{why} while waiting for {what} ({timeout:.0f} s at most)\n{tail}")


def _run(*cmd: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def stop_leftovers(state: Path = STATE) -> None:
    """Stop the daemons of an earlier test session that did not clean up (by saved PIDs)."""
    saved = state / "pids.json"
    if saved.exists():
        try:
            Cluster(state, json.loads(saved.read_text())).stop()
        except (ValueError, OSError):
            saved.unlink(missing_ok=True)


def start(state: Path = STATE, timeout: float = 60) -> Cluster:
    """Write the config, start munged, slurmctld and slurmd; return when the node is idle."""
    stop_leftovers(state)
    shutil.rmtree(state, ignore_errors=True)
    for sub in ("ctld", "spool", "munge"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    CONF.parent.mkdir(parents=True, exist_ok=True)
    CONF.write_text(slurm_conf(state))
    GRES_CONF.write_text(GRES)
    cluster = Cluster(state)
    devnull = subprocess.DEVNULL
    try:
        # munged runs as the munge user (it refuses keys it does not own)
        munge = pwd.getpwnam("munge")
        key = Path("/etc/munge/munge.key")
        if not key.exists():
            _run("mungekey", "--create", f"--keyfile={key}")
        os.chown(key, munge.pw_uid, munge.pw_gid)
        key.chmod(0o400)
        sock_dir = Path("/run/munge")
        sock_dir.mkdir(parents=True, exist_ok=True)
        os.chown(sock_dir, munge.pw_uid, munge.pw_gid)
        for d in (Path("/var/lib/munge"), Path("/var/log/munge")):
            d.mkdir(parents=True, exist_ok=True)
            os.chown(d, munge.pw_uid, munge.pw_gid)
        log = state / "munged.log"
        with log.open("w") as fh:
            p = subprocess.Popen(
                ["munged", "--foreground", "--force", f"--log-file={log}"],
                user=munge.pw_uid,
                group=munge.pw_gid,
                stdin=devnull,
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        cluster.pids["munged"] = p.pid
        cluster.save()
        _wait(lambda: _run("munge", "-n").returncode == 0, timeout, "munged", log, p)

        for name, args in (("slurmctld", ["-D", "-i"]), ("slurmd", ["-D", "-N", "localhost"])):
            log = state / f"{name}.log"
            p = subprocess.Popen(
                [name, *args],
                stdin=devnull,
                stdout=devnull,
                stderr=(state / f"{name}.stderr").open("w"),
                start_new_session=True,
            )
            cluster.pids[name] = p.pid
            cluster.save()
            if name == "slurmctld":
                _wait(lambda: _run("scontrol", "ping").returncode == 0, timeout, name, log, p)

        def idle() -> bool:
            out = _run("sinfo", "-h", "-N", "-o", "%T").stdout.split()
            return bool(out) and all(s.rstrip("*") in ("idle", "mixed") for s in out)

        _wait(idle, timeout, "the node to be idle", state / "slurmd.log")
    except BaseException:
        cluster.stop()
        raise
    return cluster


def main(argv: list[str]) -> int:
    if argv[1:] == ["up"]:
        reason = why_not()
        if reason:
            print(reason, file=sys.stderr)
            return 1
        install()
        c = start()
        print(f"SLURM test cluster up: {c.pids} (state in {c.state})")
        return 0
    if argv[1:] == ["down"]:
        stop_leftovers()
        print("SLURM test cluster down")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""Atomic file writes every step uses: scratch paths beside the target, renamed on success.

No third-party import at module level, so every step's env can use it.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale(beside: Path) -> None:
    """Delete scratch files of ``beside`` left by killed processes (their PID is gone)."""
    for old in beside.parent.glob(f".{beside.name}.*"):
        pid = old.name[len(beside.name) + 2 :].split("-", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            old.unlink(missing_ok=True)


@contextlib.contextmanager
def scratch_path(beside: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a hidden temporary path in the folder of ``beside``; always removed afterwards.

    The name carries this process's PID, so a later run can tell (and delete) scratch files
    of a killed run.
    """
    beside = Path(beside)
    beside.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(beside)
    tmp = beside.with_name(f".{beside.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}")
    try:
        yield tmp
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        for side in tmp.parent.glob(tmp.name + ".*"):  # GDAL side files (.aux.xml, .ovr)
            side.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it to ``final`` only on success.

    Same folder, so the rename is atomic: readers see the old file or the complete new one.
    """
    with scratch_path(final, suffix=Path(final).suffix) as tmp:
        yield tmp
        os.replace(tmp, final)


def write_csv(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a pandas frame as CSV atomically (fixed float format: reruns are byte-identical)."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.6g")

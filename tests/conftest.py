"""Shared fixtures (tiny synthetic rasters built by code with fixed seeds) and the suite's groups.

`make test` runs the suite on two workers (pytest-xdist, ``--dist loadfile``): the tests of
one file stay on one worker, so a module's or session's study (the k-fold study, the SLURM
cluster and its runs, the tiny study) is made once; each is read by one file only.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from aefheight.core.schema import make
from aefheight.inputs.synthetic import SyntheticSettings, write_synthetic

TINY = make(SyntheticSettings, width=256, height=192, seed=3, holes=2)
# The studies first: on two workers (`make test`: pytest-xdist, ``--dist loadfile``, a file's
# tests on one worker, so a study fixture is made once) the long ones start at once and the
# unit tests fill the gaps, instead of two studies left for the end.
FIRST = (
    "workflow/test_kfold_run.py",
    "cluster/test_slurm.py",
    "workflow/test_end_to_end.py",
    "workflow/test_sharding_run.py",
)
TESTS = Path(__file__).resolve().parent


def _rank(item: pytest.Item) -> int:
    rel = item.path.resolve().relative_to(TESTS).as_posix()
    return FIRST.index(rel) if rel in FIRST else len(FIRST)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=_rank)  # stable: every other test keeps its order


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """A banner for skipped SLURM tests (from the reports: also those of xdist's workers)."""
    reasons = [
        str(r.longrepr[-1]).split("SLURM TESTS SKIPPED: ", 1)[1]
        for r in terminalreporter.stats.get("skipped", [])
        if isinstance(r.longrepr, tuple) and "SLURM TESTS SKIPPED: " in str(r.longrepr[-1])
    ]
    if reasons:
        bar = "!" * 78
        terminalreporter.write_line(bar, red=True, bold=True)
        for reason in dict.fromkeys(reasons):
            terminalreporter.write_line(f"!!! SLURM CLUSTER TESTS SKIPPED: {reason}", red=True)
        terminalreporter.write_line(bar, red=True, bold=True)


@pytest.fixture(scope="session")
def tiny_settings() -> SyntheticSettings:
    """Settings of the tiny AOI (for tests that regenerate it)."""
    return TINY


@pytest.fixture(scope="session")
def tiny_aoi(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 256 x 192 px synthetic AOI: embeddings, DSM, land cover and coarse DEM GeoTIFFs."""
    d = tmp_path_factory.mktemp("tiny_aoi")
    paths = {k: d / f"{k}.tif" for k in ("embeddings", "dsm", "landcover", "coarse_dem")}
    write_synthetic(TINY, *paths.values())
    return paths

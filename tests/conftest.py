"""Shared fixtures (tiny synthetic rasters built by code with fixed seeds) and the suite's groups.

`make test` runs the suite on two workers (pytest-xdist, ``--dist loadgroup``): the tests of
one file stay on one worker, so a module's fixture (a k-fold study, the sharded runs) is made
once, and the groups below share a session fixture: one SLURM cluster, one tiny study, one
fixture world of the download tests.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from aefheight.core.schema import make
from aefheight.inputs.synthetic import SyntheticSettings, write_synthetic

TINY = make(SyntheticSettings, width=256, height=192, seed=3, holes=2)
TESTS = Path(__file__).resolve().parent
GROUPS = {  # path prefix under tests/ -> the group its tests share a worker with
    "cluster/": "slurm",
    "workflow/test_end_to_end.py": "tiny_run",
    "workflow/test_faults.py": "tiny_run",
    "inputs/sources/": "sources",
}


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        rel = item.path.resolve().relative_to(TESTS).as_posix()
        group = next((g for prefix, g in GROUPS.items() if rel.startswith(prefix)), rel)
        item.add_marker(pytest.mark.xdist_group(group))


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

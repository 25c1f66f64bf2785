"""Fixtures for tests that run the real `snakemake` (helpers in snakehelp.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from helpers import FAKE_CREDENTIALS, snakemake, tiny_config


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny study (session-scoped: several tests read its outputs)."""
    work = tmp_path_factory.mktemp("tiny_study")
    (work / "config.yaml").write_text(yaml.safe_dump(tiny_config()))
    snakemake(work, "--cores", "2", env=FAKE_CREDENTIALS)
    return work

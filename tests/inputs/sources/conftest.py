"""Fixtures of the download tests: the fixture world (built once) and a fresh local server.

Nothing here touches the network beyond 127.0.0.1: every base URL of the ``downloads`` section
points at the fixture server.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fixture_server import FixtureServer, serve
from fixture_world import World, build


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """The fixture files in the providers' layouts (AEF, Copernicus, RGE ALTI) and the truth."""
    return build(tmp_path_factory.mktemp("world"))


@pytest.fixture
def server(world: World) -> FixtureServer:
    """A server of the world on a new port (GDAL caches per URL, so each test gets its own)."""
    with serve(world.root) as srv:
        yield srv


@pytest.fixture(autouse=True)
def _no_google_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never pick up a developer's Google credentials from the environment."""
    for var in (
        "GOOGLE_APPLICATION_CREDENTIALS",
        "GS_USER_PROJECT",
        "GOOGLE_CLOUD_PROJECT",
        "GOOGLE_OAUTH_ACCESS_TOKEN",
        "EE_PROJECT",
        "GS_OAUTH2_REFRESH_TOKEN",
        "GS_SECRET_ACCESS_KEY",
        "CPL_GS_CREDENTIALS_FILE",
        "GS_ACCESS_TOKEN",
    ):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "resources"

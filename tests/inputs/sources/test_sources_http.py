"""Whole-file downloads against the fixture server: resume, retries, checksums, 404s."""

from __future__ import annotations

import json

import pytest
from aefheight.core.errors import DownloadError
from aefheight.core.schema import make
from aefheight.inputs.sources.http import (
    NotFound,
    download_file,
    gdal_options,
    is_complete,
    redact,
    sidecar,
    with_retries,
)
from aefheight.inputs.sources.spec import DownloadSettings
from fixture_world import RGE_ID

FAST = make(DownloadSettings, max_retry=4, retry_delay_s=0.01, timeout_s=5)
ARCHIVE = f"/rgealti/{RGE_ID}/{RGE_ID}.7z"


def test_download_writes_file_and_checksum(server, world, tmp_path):
    dest = tmp_path / "a.7z"
    rec = download_file(server.url + ARCHIVE, dest, FAST)
    assert dest.read_bytes() == (world.root / ARCHIVE.lstrip("/")).read_bytes()
    side = json.loads(sidecar(dest).read_text())
    assert side["sha256"] == rec.sha256 and side["bytes"] == dest.stat().st_size
    assert is_complete(dest)
    assert not list(tmp_path.glob("*.part"))


def test_interrupted_download_resumes_with_a_range_request(server, world, tmp_path):
    size = (world.root / ARCHIVE.lstrip("/")).stat().st_size
    server.inject(ARCHIVE, ["truncate"])  # half the body, then the connection drops
    dest = tmp_path / "a.7z"
    download_file(server.url + ARCHIVE, dest, FAST)
    gets = server.requests(ARCHIVE, "GET")
    assert [g.status for g in gets] == ["truncate", 206]
    first, second = gets
    assert second.range == f"bytes={first.bytes}-"
    assert first.bytes + second.bytes == size  # nothing fetched twice
    assert dest.read_bytes() == (world.root / ARCHIVE.lstrip("/")).read_bytes()


def test_complete_file_is_not_fetched_again(server, tmp_path):
    dest = tmp_path / "a.7z"
    download_file(server.url + ARCHIVE, dest, FAST)
    download_file(server.url + ARCHIVE, dest, FAST)
    assert len(server.requests(ARCHIVE, "GET")) == 1


def test_corrupt_cached_file_is_fetched_again(server, tmp_path):
    dest = tmp_path / "a.7z"
    download_file(server.url + ARCHIVE, dest, FAST)
    dest.write_bytes(b"x" * dest.stat().st_size)  # same size, wrong bytes
    assert not is_complete(dest)
    download_file(server.url + ARCHIVE, dest, FAST)
    assert len(server.requests(ARCHIVE, "GET")) == 2 and is_complete(dest)


def test_500s_and_dropped_connections_are_retried(server, tmp_path):
    server.inject(ARCHIVE, ["500", "drop", "503", "502"])
    download_file(server.url + ARCHIVE, tmp_path / "a.7z", FAST)
    statuses = [r.status for r in server.requests(ARCHIVE, "GET")]
    assert statuses == [500, "drop", 503, 502, 200]


def test_persistent_failure_ends_with_a_named_error(server, tmp_path):
    server.inject(ARCHIVE, ["500"] * 10)
    with pytest.raises(DownloadError, match=r"after 5 attempts.*HTTP 500"):
        download_file(server.url + ARCHIVE, tmp_path / "a.7z", FAST)
    assert len(server.requests(ARCHIVE, "GET")) == 5  # bounded: 1 + max_retry


def test_404_is_not_retried(server, tmp_path):
    with pytest.raises(NotFound, match="404"):
        download_file(server.url + "/nope/none.tif", tmp_path / "n.tif", FAST)
    assert len(server.requests("/nope/")) == 1


def test_redact_drops_query_and_user_info():
    url = "https://user:secret@storage.example.com/b/k.parquet?userProject=p&token=t"
    assert redact(url) == "https://storage.example.com/b/k.parquet"


def test_with_retries_is_bounded():
    calls = []

    def boom():
        calls.append(1)
        raise OSError("reset")

    with pytest.raises(DownloadError, match="reset"):
        with_retries(boom, "thing", make(DownloadSettings, max_retry=2, retry_delay_s=0))
    assert len(calls) == 3


def test_gdal_options_configure_retries_and_multiplexing():
    opts = gdal_options(make(DownloadSettings, max_retry=3, retry_delay_s=0.5))
    assert opts["GDAL_HTTP_MAX_RETRY"] == "3" and opts["GDAL_HTTP_RETRY_DELAY"] == "0.5"
    assert "500" in opts["GDAL_HTTP_RETRY_CODES"] and opts["GDAL_HTTP_MULTIPLEX"] == "YES"
    assert gdal_options(make(DownloadSettings, multiplex=False))["GDAL_HTTP_MULTIPLEX"] == "NO"


def test_parallel_downloads_of_one_file_do_not_collide(server, world, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    dest = tmp_path / "a.7z"
    with ThreadPoolExecutor(4) as pool:
        recs = list(pool.map(lambda _: download_file(server.url + ARCHIVE, dest, FAST), range(4)))
    assert len({r.sha256 for r in recs}) == 1
    assert dest.read_bytes() == (world.root / ARCHIVE.lstrip("/")).read_bytes()
    assert len(server.requests(ARCHIVE, "GET")) == 1  # the others waited, then found it complete

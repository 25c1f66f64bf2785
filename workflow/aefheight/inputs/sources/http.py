"""HTTP for the download steps: whole files with resume and retries, and GDAL's range reads.

Two ways data comes in:

* whole files (the AEF index, Copernicus tiles, RGE ALTI archives): :func:`download_file`
  streams into ``<dest>.part``, resumes an interrupted transfer with a ``Range`` request,
  retries HTTP 5xx/429 and dropped connections with exponential backoff, and renames the file
  into place only when complete. A ``<dest>.sha256`` sidecar records the URL, size and checksum,
  so a later run skips a file that is complete (and re-fetches one that is not);
* windows of remote COGs (the AEF embeddings): GDAL's ``/vsicurl/`` reads only the byte ranges
  it needs; :func:`gdal_options` sets its retries, timeouts and HTTP/2 multiplexing.

Credentials come from the environment only and are never logged (URLs are logged without their
query string).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from aefheight.core.errors import DownloadError
from aefheight.inputs.sources.spec import DownloadSettings

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRY_CODES = (429, 500, 502, 503, 504)
CHUNK = 1 << 20
USER_AGENT = "aefheight (+https://github.com/; reproducible AEF height study)"


class NotFound(DownloadError):
    """The server answered 404/410: the file does not exist (no retry helps)."""


def redact(url: str) -> str:
    """A URL without its query string and user info, safe to log."""
    p = urllib.parse.urlsplit(url)
    host = p.hostname or ""
    if p.port:
        host = f"{host}:{p.port}"
    return urllib.parse.urlunsplit((p.scheme, host, p.path, "", ""))


def backoff(attempt: int, base: float) -> float:
    """Seconds to wait before retry ``attempt`` (1-based): base * 2**(attempt-1), capped at 60."""
    return min(60.0, base * 2 ** max(0, attempt - 1))


def with_retries(
    fn: Callable[[], T],
    what: str,
    settings: DownloadSettings,
    retry_on: tuple[type[BaseException], ...] = (DownloadError, OSError),
    never_retry: tuple[type[BaseException], ...] = (NotFound,),
) -> T:
    """Call ``fn`` up to ``settings.max_retry + 1`` times, backing off between attempts.

    Use it around any remote operation that may fail transiently (a GDAL window read, a
    request). Errors in ``never_retry`` (a 404) propagate at once; the last error of a bounded
    series of attempts is re-raised as :class:`DownloadError` naming ``what``.
    """
    last: BaseException | None = None
    for attempt in range(settings.max_retry + 1):
        if attempt:
            delay = backoff(attempt, settings.retry_delay_s)
            log.warning(
                "%s failed (%s); retry %d/%d in %.1f s",
                what,
                _short(last),
                attempt,
                settings.max_retry,
                delay,
            )
            time.sleep(delay)
        try:
            return fn()
        except never_retry:
            raise
        except retry_on as exc:
            last = exc
    raise DownloadError(
        f"{what} failed after {settings.max_retry + 1} attempts: {_short(last)}"
    ) from last


def _short(exc: BaseException | None) -> str:
    text = f"{type(exc).__name__}: {exc}" if exc is not None else "?"
    return text if len(text) < 300 else text[:300] + "..."


@dataclass(frozen=True)
class FileRecord:
    """The ``.sha256`` sidecar of a downloaded file."""

    url: str
    sha256: str
    bytes: int
    fetched_utc: str

    @classmethod
    def read(cls, path: Path) -> FileRecord | None:
        try:
            d = json.loads(path.read_text())
            return cls(d["url"], d["sha256"], int(d["bytes"]), d["fetched_utc"])
        except (OSError, ValueError, KeyError, TypeError):
            return None


def sidecar(dest: str | os.PathLike) -> Path:
    """Path of the checksum sidecar recorded beside a downloaded file."""
    dest = Path(dest)
    return dest.with_name(dest.name + ".sha256")


def sha256_of(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def is_complete(dest: str | os.PathLike, verify: bool = True) -> bool:
    """True if ``dest`` exists with a sidecar whose size (and checksum, if ``verify``) match."""
    dest = Path(dest)
    rec = FileRecord.read(sidecar(dest))
    if rec is None or not dest.exists() or dest.stat().st_size != rec.bytes:
        return False
    return not verify or sha256_of(dest) == rec.sha256


def _open(url: str, headers: dict[str, str], timeout: float) -> http.client.HTTPResponse:
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **headers})
    return urllib.request.urlopen(req, timeout=timeout)


def download_file(
    url: str,
    dest: str | os.PathLike,
    settings: DownloadSettings,
    headers: dict[str, str] | None = None,
    verify_existing: bool = True,
) -> FileRecord:
    """Download ``url`` to ``dest`` (atomically), resuming a partial ``.part`` file.

    Use it for whole files: indexes, DSM tiles, archives. A file already complete (sidecar
    matches) is not fetched again. Transient failures (5xx, 429, timeouts, dropped connections,
    short bodies) are retried up to ``settings.max_retry`` times; each retry continues from the
    bytes already on disk with a ``Range`` request when the server supports it.

    Args:
        url: http(s) URL (a query string, e.g. ``userProject``, is never logged).
        dest: final path; its folder is created.
        settings: retry and timeout settings.
        headers: extra request headers (e.g. an ``Authorization`` from the environment).
        verify_existing: re-hash a complete file before trusting it.

    Returns:
        The sidecar record (URL without query, SHA-256, size, UTC time).

    Raises:
        NotFound: the server says the file does not exist (404/410).
        DownloadError: still failing after all retries.
    """
    if not url.startswith(("http://", "https://")):
        raise DownloadError(f"not an http(s) URL: {redact(url)}")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # one writer per file: parallel jobs sharing the cache (two AOIs on one DSM tile) wait
    with file_lock(dest):
        if is_complete(dest, verify=verify_existing):
            log.info("cached: %s", dest)
            rec = FileRecord.read(sidecar(dest))
            assert rec is not None
            return rec
        return _download(url, dest, settings, dict(headers or {}))


@contextlib.contextmanager
def file_lock(dest: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``<dest>.lock`` (POSIX ``flock``) for the block's duration."""
    import fcntl

    with open(dest.with_name(dest.name + ".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _download(
    url: str, dest: Path, settings: DownloadSettings, headers: dict[str, str]
) -> FileRecord:
    part = dest.with_name(dest.name + ".part")

    def attempt() -> None:
        have = part.stat().st_size if part.exists() else 0
        h = dict(headers)
        if have:
            h["Range"] = f"bytes={have}-"
        try:
            resp = _open(url, h, settings.timeout_s)
        except urllib.error.HTTPError as exc:
            if exc.code in (404, 410):
                raise NotFound(f"{redact(url)}: HTTP {exc.code} (no such file)") from exc
            if exc.code == 416 and have:  # asked past the end: the part file is complete
                return
            if exc.code in RETRY_CODES:
                raise DownloadError(f"{redact(url)}: HTTP {exc.code}") from exc
            raise DownloadError(
                f"{redact(url)}: HTTP {exc.code} {exc.reason}"
                + (" (credentials or billing project missing?)" if exc.code in (401, 403) else "")
            ) from exc
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise DownloadError(f"{redact(url)}: {exc}") from exc
        with resp:
            status = resp.status
            total = resp.headers.get("Content-Length")
            mode = "ab"
            if have and status == 200:  # server ignored the Range: start over
                log.info("server does not resume %s; restarting", redact(url))
                mode, have = "wb", 0
            expected = have + int(total) if total is not None else None
            try:
                with open(part, mode) as f:
                    for chunk in iter(lambda: resp.read(CHUNK), b""):
                        f.write(chunk)
            except (TimeoutError, OSError, http.client.HTTPException) as exc:
                raise DownloadError(f"{redact(url)}: connection dropped ({exc})") from exc
        got = part.stat().st_size
        if expected is not None and got < expected:
            raise DownloadError(f"{redact(url)}: short body ({got} of {expected} bytes)")

    log.info("downloading %s -> %s", redact(url), dest)
    with_retries(attempt, f"download of {redact(url)}", settings, retry_on=(DownloadError,))
    digest = sha256_of(part)
    rec = FileRecord(
        redact(url), digest, part.stat().st_size, datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    )
    os.replace(part, dest)
    tmp = sidecar(dest).with_name(sidecar(dest).name + ".tmp")
    tmp.write_text(json.dumps(rec.__dict__, indent=1) + "\n")
    os.replace(tmp, sidecar(dest))
    log.info("done: %s (%d bytes, sha256 %s)", dest, rec.bytes, rec.sha256[:12])
    return rec


def gdal_options(settings: DownloadSettings, extensions: str = ".tif,.tiff,.vrt") -> dict[str, str]:
    """GDAL config options for ``/vsicurl/`` (and ``/vsigs/``) range reads.

    Use with ``rasterio.Env(**gdal_options(s))`` around every remote open/read. GDAL retries a
    failed range request itself (``GDAL_HTTP_MAX_RETRY``/``GDAL_HTTP_RETRY_DELAY``; which codes:
    ``GDAL_HTTP_RETRY_CODES``, GDAL >= 3.10); the callers add an outer retry around a whole
    window read for failures GDAL does not retry (a dropped connection mid-body).
    """
    opts = {
        # GDAL's multi-threaded reads of a window (GDAL_NUM_THREADS > 1) fetch byte ranges in
        # parallel without its per-request retry, so one 500 fails the whole window; the
        # workflow parallelises over blocks itself, so each GDAL read stays single-threaded.
        "GDAL_NUM_THREADS": "1",
        "GDAL_HTTP_MAX_RETRY": str(settings.max_retry),
        "GDAL_HTTP_RETRY_DELAY": f"{settings.retry_delay_s:g}",
        "GDAL_HTTP_RETRY_CODES": ",".join(str(c) for c in RETRY_CODES),
        "GDAL_HTTP_TIMEOUT": f"{settings.timeout_s:g}",
        "GDAL_HTTP_CONNECTTIMEOUT": f"{min(settings.timeout_s, 30):g}",
        # no directory listing per open (there is none on these servers), only tile files
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
        "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": extensions,
        "GDAL_INGESTED_BYTES_AT_OPEN": "65536",  # the COG header in one request
        "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
        "VSI_CACHE": "TRUE",
    }
    if settings.multiplex:
        # HTTP/2 lets the 64 per-band block requests of a window share one connection;
        # 2TLS: HTTP/2 only over TLS (plain-http test servers stay on HTTP/1.1).
        opts["GDAL_HTTP_MULTIPLEX"] = "YES"
        opts["GDAL_HTTP_VERSION"] = "2TLS"
    else:
        opts["GDAL_HTTP_MULTIPLEX"] = "NO"
    return opts


@contextlib.contextmanager
def gdal_env(settings: DownloadSettings, **extra: str) -> Iterator[None]:
    """``rasterio.Env`` with :func:`gdal_options` (plus ``extra`` options)."""
    import rasterio

    with rasterio.Env(**gdal_options(settings), **extra):
        yield

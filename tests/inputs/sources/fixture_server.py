"""A real HTTP server on 127.0.0.1 serving fixture files, with Range requests and faults.

Use :func:`serve` as a context manager (or the ``server`` fixture in ``conftest.py``): it serves
a folder over HTTP/1.1 (keep-alive, ``HEAD``, ``GET``, single ``Range: bytes=`` requests with
206/416) on a free port of 127.0.0.1 only, and logs every request. Faults are injected per
path: ``server.inject("/x.tif", ["500", "drop", "truncate"])`` makes the next three requests
for that path answer HTTP 500, close the connection without answering, and send half the body
then close; ``server.missing.add("/y.tif")`` answers 404 for good. Everything is bounded: the
fault queues are finite and the server thread is shut down at exit.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    range: str | None
    status: int | str  # HTTP status, or the fault injected ("drop", "truncate")
    bytes: int


class FixtureServer(ThreadingHTTPServer):
    """Serves ``root``; holds the request log and the fault schedule."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, root: Path) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.root = Path(root).resolve()
        self.lock = threading.Lock()
        self.log: list[Request] = []
        self.faults: dict[str, collections.deque[str]] = {}
        self.missing: set[str] = set()
        self.every: tuple[int, str] | None = None  # (n, kind): every n-th request fails
        self.count = self.due = 0
        self.failed_last: set[str] = set()  # requests whose last attempt was failed on purpose

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def inject(self, path: str, kinds: list[str]) -> None:
        """Queue faults ("500", "503", "drop", "truncate", "404") for the next requests of path.

        ``path`` is the URL path (``/a/b.tif``), or ``*`` for any path.
        """
        with self.lock:
            self.faults.setdefault(path, collections.deque()).extend(kinds)

    def fail_every(self, n: int, kind: str = "500") -> None:
        """A steady fault rate over the whole run: every ``n``-th request (any path) fails.

        A retry of a request that was just failed on purpose is let through, so that
        concurrent clients whose retries interleave in step cannot be failed for ever (a
        server failing at random would not single out one request either).
        """
        with self.lock:
            self.every, self.count, self.due = (n, kind), 0, 0
            self.failed_last.clear()

    def next_fault(self, path: str, request: str = "") -> str | None:
        """The fault for this request (``request`` identifies it: method, path and range)."""
        with self.lock:
            if self.every is not None:
                self.count += 1
                key = request or path
                self.due += self.count % self.every[0] == 0
                if self.due and key not in self.failed_last:  # a skipped fault goes to the next
                    self.due -= 1
                    self.failed_last.add(key)
                    return self.every[1]
                self.failed_last.discard(key)
            for key in (path, "*"):
                q = self.faults.get(key)
                if q:
                    return q.popleft()
        return None

    def record(self, req: Request) -> None:
        with self.lock:
            self.log.append(req)

    def requests(self, contains: str = "", method: str | None = None) -> list[Request]:
        with self.lock:
            return [
                r for r in self.log if contains in r.path and (method is None or r.method == method)
            ]

    def clear(self) -> None:
        with self.lock:
            self.log.clear()
            self.faults.clear()
            self.missing.clear()
            self.every = None
            self.failed_last.clear()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FixtureServer

    def log_message(self, format: str, *args) -> None:
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _fail(self, status: int, rng: str | None) -> None:
        self.server.record(Request(self.command, self.path, rng, status, 0))
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _serve(self, body: bool) -> None:
        path = self.path.split("?", 1)[0]
        rng = self.headers.get("Range")
        fault = self.server.next_fault(path, f"{self.command} {path} {rng}")
        if fault == "drop":
            self.server.record(Request(self.command, self.path, rng, "drop", 0))
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(2)
            return
        if fault and fault.isdigit():
            self._fail(int(fault), rng)
            return
        target = (self.server.root / path.lstrip("/")).resolve()
        if (
            path in self.server.missing
            or not target.is_file()
            or self.server.root not in target.parents
        ):
            self._fail(404, rng)
            return
        size = target.stat().st_size
        start, end, status = 0, size - 1, 200
        if rng:
            m = RANGE_RE.match(rng.strip())
            if not m or (not m.group(1) and not m.group(2)):
                self._fail(416, rng)
                return
            if m.group(1):
                start = int(m.group(1))
                end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
            else:  # suffix range: the last n bytes
                start = max(0, size - int(m.group(2)))
            if start >= size or start > end:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                self.server.record(Request(self.command, self.path, rng, 416, 0))
                return
            status = 206
        length = end - start + 1
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(length))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if not body:
            self.server.record(Request(self.command, self.path, rng, status, 0))
            return
        with open(target, "rb") as f:
            f.seek(start)
            data = f.read(length)
        if fault == "truncate":
            data = data[: max(1, len(data) // 2)]
            self.server.record(Request(self.command, self.path, rng, "truncate", len(data)))
            with contextlib.suppress(OSError):
                self.wfile.write(data)
                self.wfile.flush()
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(2)
            return
        self.server.record(Request(self.command, self.path, rng, status, len(data)))
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(data)


@contextlib.contextmanager
def serve(root: str | os.PathLike) -> Iterator[FixtureServer]:
    """Serve ``root`` on 127.0.0.1 (free port) for the duration of the block."""
    srv = FixtureServer(Path(root))
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)

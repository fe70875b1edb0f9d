"""Shared fixtures. `http_server` serves a folder on 127.0.0.1 with HTTP Range support (resumed downloads)."""

from __future__ import annotations

import functools
import http.server
import os
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """SimpleHTTPRequestHandler plus single `Range: bytes=N-` requests (206 Partial Content)."""

    def log_message(self, format, *args):  # keep test output quiet
        pass

    def send_head(self):
        rng = self.headers.get("Range")
        path = Path(self.translate_path(self.path))
        if not rng or not path.is_file():
            return super().send_head()
        m = re.fullmatch(r"bytes=(\d+)-", rng.strip())
        size = path.stat().st_size
        if not m or int(m.group(1)) >= size:
            self.send_error(416, "Requested Range Not Satisfiable")
            return None
        start = int(m.group(1))
        fh = open(path, "rb")
        fh.seek(start)
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        self.send_header("Content-Length", str(size - start))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        return fh


@pytest.fixture
def handler_server() -> Iterator[Callable[[type], str]]:
    """Factory: handler_server(RequestHandlerClass) -> base URL of a server on 127.0.0.1 (for handlers
    that misbehave on purpose); every server is shut down after the test."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(handler: type) -> str:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def http_server(handler_server) -> Callable[[os.PathLike], str]:
    """Factory: http_server(folder) -> base URL (no trailing slash) serving that folder on 127.0.0.1."""
    return lambda directory: handler_server(functools.partial(_RangeHandler, directory=str(directory)))

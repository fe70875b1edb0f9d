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

# One OpenMP/MKL thread in this process and in every process the tests start (kernels, CLI runs, Dask
# workers inherit the environment); set before torch is first imported. The suite runs several such
# processes at once on 2 cores, and torch's spinning worker threads, oversubscribed, cost up to 10x
# the CPU time of one thread (measured: a tiny VAE epoch, 0.8 s with one thread, 7 s with two on a
# busy machine). A value already in the environment is kept.
for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")
# Sweeps with workers="auto" (the book's chapters) run in-process: a pool's worker processes each
# import torch (seconds of CPU), more than the tiny tasks of the tests cost. Tests that ask for a
# pool (workers=2) still get one.
os.environ.setdefault("PADIM_WORKERS", "1")


# The test modules that use the built book (the session fixture `built_book`, tests/conftest_book.py).
_BOOK_MODULES = {f"tests/{p.name}" for p in Path(__file__).parent.glob("test_*.py") if "built_book" in p.read_text()}


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist, absent without it
def pytest_xdist_make_scheduler(config, log):
    """`make test` runs two pytest-xdist workers. A module's tests run in one worker, so its
    module-scoped fixtures are made once; the modules that use the built book share one worker, so
    the book is built once (and first: it is the longest)."""
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "book" if module in _BOOK_MODULES else module

    return ModuleScheduling(config, log)


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


@pytest.fixture(scope="session")
def cli_workspace(tmp_path_factory) -> Path:
    """syn/: a synthetic class (washer: 3 training and 4 test images of 64 px); model.pt: PaDiM fitted
    on it by `padim fit` (in-process, the shipped Lite0 weights, resize 64, no crop). Shared by the CLI
    tests: copy it before writing into it."""
    from padim_lib.cli import main
    from padim_lib.datasets import make_synthetic

    ws = tmp_path_factory.mktemp("cli_workspace")
    make_synthetic(ws / "syn", seed=0, n_train=3, n_test_good=2, n_test_defect=2, size=64, categories=["washer"])
    fit = ["fit", "--data", str(ws / "syn"), "--category", "washer", "--resize", "64", "--crop", "0",
           "--device", "cpu", "--out", str(ws / "model.pt")]
    assert main(fit) == 0
    return ws


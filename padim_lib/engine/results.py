"""The result cache: one tidy row file per task, written atomically, safe to share between sweeps.

Layout under the store's directory::

    rows/<task_key>.parquet       tidy result rows of one task; written LAST, it marks the task complete
    artifacts/<task_key>.npz      arrays for plots (ROC/PRO curves, example maps); written before the rows

Every file is written to a temporary file in its final directory and moved into place with
`os.replace`, which is atomic on POSIX file systems (and on NFS for a rename within one
directory). So a reader sees either no file or a complete one; a process killed half-way leaves
at most a stray ``.*.tmp`` file, which `load` ignores. Two sweeps computing the same task write
identical content under the same name, so the last replace wins and nothing is duplicated.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from padim_lib.errors import PadimError
from padim_lib.io.atomic import atomic_write, open_output

ROWS_SUFFIX = ".parquet"
# The number of bootstrap replicates a task's rows were computed with, in the Parquet file's metadata:
# part of what a stored result is, so a sweep asking for another count recomputes the task.
BOOTSTRAP_META = b"padim_lib.bootstrap"
ARTIFACTS_SUFFIX = ".npz"
# Task keys become file names: keep them to a safe alphabet (no separators, no leading dot).
_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")


def _check_key(task_key: str) -> str:
    if not isinstance(task_key, str) or not _KEY_RE.fullmatch(task_key):
        raise PadimError(
            f"task_key {task_key!r} is not a valid result key: expected 1-200 characters from "
            "[A-Za-z0-9_.-], not starting with '.'"
        )
    return task_key


def _as_array(name: str, value) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype == object:
        # npz without pickle cannot hold object arrays; pickled files would also be unsafe to load.
        raise PadimError(
            f"artifact {name!r} has dtype object; expected a numeric, bool or string array "
            "(convert lists of str with np.asarray(..., dtype=str))"
        )
    return arr


class ResultStore:
    """Tidy result rows and artifacts of many tasks in one directory (shared by sweeps and workers).

    The directory must be on a file system every Dask worker and the client can see.
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        if self.directory.exists() and not self.directory.is_dir():
            raise PadimError(f"result directory {self.directory} exists and is not a directory")
        self.rows_dir = self.directory / "rows"
        self.artifacts_dir = self.directory / "artifacts"

    def __repr__(self) -> str:
        return f"ResultStore({str(self.directory)!r})"

    # -- paths -----------------------------------------------------------------------------------
    def rows_path(self, task_key: str) -> Path:
        return self.rows_dir / f"{_check_key(task_key)}{ROWS_SUFFIX}"

    def artifacts_path(self, task_key: str) -> Path:
        return self.artifacts_dir / f"{_check_key(task_key)}{ARTIFACTS_SUFFIX}"

    # -- queries ---------------------------------------------------------------------------------
    def has(self, task_key: str, bootstrap: int | None = None) -> bool:
        """True when the task's rows are stored (its artifacts, if any, were written before them),
        and, when `bootstrap` is given, were computed with that many bootstrap replicates."""
        if not self.rows_path(task_key).is_file():
            return False
        return bootstrap is None or self.replicates(task_key) == bootstrap

    def replicates(self, task_key: str) -> int | None:
        """The bootstrap replicate count a stored task was computed with (None: not stored)."""
        path = self.rows_path(task_key)
        try:
            meta = pq.read_schema(path).metadata or {}
        except FileNotFoundError:
            return None
        except (OSError, pa.ArrowException) as exc:
            raise PadimError(f"result file {path} is unreadable ({exc}); delete it to recompute the task") from exc
        if BOOTSTRAP_META in meta:
            return int(meta[BOOTSTRAP_META])
        rows = pq.read_table(path, columns=["replicate"]).column("replicate").to_numpy()  # files of older versions
        return int(np.unique(rows[rows >= 0]).size)

    def keys(self) -> list[str]:
        """Keys of every completed task, sorted. Temporary files (``.*.tmp``) are not listed."""
        if not self.rows_dir.is_dir():
            return []
        return sorted(
            p.name[: -len(ROWS_SUFFIX)]
            for p in self.rows_dir.iterdir()
            if p.name.endswith(ROWS_SUFFIX) and not p.name.startswith(".")
        )

    def remove_stale_tmp(self, older_than: float = 3600.0) -> int:
        """Delete temporary files left by killed writers, if older than `older_than` seconds.

        A write takes well under a second, so an hour-old temporary file belongs to no live writer.
        Returns the number of files removed.
        """
        now = time.time()
        removed = 0
        for folder in (self.rows_dir, self.artifacts_dir):
            for path in folder.glob(".*.tmp") if folder.is_dir() else ():
                with contextlib.suppress(FileNotFoundError):  # another sweep may clean up at once
                    if now - path.stat().st_mtime >= older_than:
                        path.unlink()
                        removed += 1
        return removed

    # -- writing ---------------------------------------------------------------------------------
    def write(
        self, task_key: str, rows: pd.DataFrame, artifacts: Mapping[str, np.ndarray] | None = None
    ) -> None:
        """Store one task's rows (and artifacts). Idempotent: the same key replaces the same content.

        Artifacts go first, rows last, each atomically: once `has(task_key)` is true, both are complete.
        """
        _check_key(task_key)
        if not isinstance(rows, pd.DataFrame):
            raise PadimError(f"rows for task {task_key} must be a pandas DataFrame, got {type(rows).__name__}")
        if "task_key" in rows.columns:
            raise PadimError(f"rows for task {task_key} have a 'task_key' column; the store adds it on load")
        if artifacts:
            arrays = {str(k): _as_array(str(k), v) for k, v in artifacts.items()}

            def write_npz(tmp: Path) -> None:
                with open_output(tmp) as fh:  # a file object: np.savez would append ".npz" to a path
                    np.savez_compressed(fh, **arrays)

            atomic_write(self.artifacts_path(task_key), write_npz)
        table = pa.Table.from_pandas(rows.reset_index(drop=True), preserve_index=False)
        if "replicate" in rows.columns:
            n = int(rows.loc[rows["replicate"] >= 0, "replicate"].nunique())
            table = table.replace_schema_metadata({**(table.schema.metadata or {}), BOOTSTRAP_META: str(n).encode()})

        def write_rows(tmp: Path) -> None:
            with open_output(tmp) as fh:  # a file object: Arrow's own opener seeks, which a pipe refuses
                pq.write_table(table, fh)

        atomic_write(self.rows_path(task_key), write_rows)

    # -- reading ---------------------------------------------------------------------------------
    def _read_rows(self, task_key: str) -> pa.Table | None:
        path = self.rows_path(task_key)
        try:
            table = pq.read_table(path)
        except FileNotFoundError:
            return None
        except (OSError, pa.ArrowException) as exc:  # only possible if someone edited the file
            raise PadimError(f"result file {path} is unreadable ({exc}); delete it to recompute the task") from exc
        return table.append_column("task_key", pa.array([task_key] * table.num_rows, pa.string()))

    def load(self, task_keys: Iterable[str] | None = None) -> pd.DataFrame:
        """Rows of the given tasks (default: every completed task) in one frame, plus a `task_key` column.

        Keys without stored rows are skipped (use `has` to check); rows are never partial.
        """
        keys = self.keys() if task_keys is None else list(dict.fromkeys(task_keys))
        for key in keys:
            _check_key(key)
        # Reading small Parquet files is latency-bound; a few threads overlap the file-system waits.
        with ThreadPoolExecutor(max_workers=min(8, max(1, len(keys)))) as pool:
            tables = [t for t in pool.map(self._read_rows, keys) if t is not None]
        if not tables:
            return pd.DataFrame()
        # Columns may differ in type between tasks (e.g. `reduce` all-null in one file, str in another).
        table = pa.concat_tables(tables, promote_options="permissive")
        return table.to_pandas()

    def artifacts(self, task_key: str) -> dict[str, np.ndarray]:
        """The arrays stored with a task's rows (FileNotFoundError naming the file if there are none)."""
        path = self.artifacts_path(task_key)
        if not path.is_file():
            raise FileNotFoundError(f"no artifacts for task {task_key}: {path} does not exist")
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}

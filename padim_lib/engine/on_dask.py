"""The sweep on Dask: a scheduler address, a LocalCluster, or the caller's `distributed.Client`.

Jobs are submitted with deterministic keys, so two clients on one scheduler share a job; a task's
stored rows prove it complete even when the worker that ran it died afterwards.
"""

from __future__ import annotations

import contextlib
import re
import time
import traceback
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from padim_lib.errors import PadimError

if TYPE_CHECKING:
    from distributed import Client

SCHEDULER_TIMEOUT_S = 10  # an unreachable scheduler fails in seconds, with its address
_ADDRESS_RE = re.compile(r"^(([a-z][a-z0-9+]*)://)?(\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.-]+):[0-9]{1,5}$")


@contextlib.contextmanager
def _dask_client(scheduler: str | Client | None, local_cluster: int | None) -> Iterator[Client]:
    from distributed import Client, LocalCluster

    if scheduler is not None and not isinstance(scheduler, str):
        yield scheduler  # the caller's client: leave it open
        return
    if scheduler is not None:
        import dask
        from dask.utils import parse_timedelta

        configured = parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"), "s")
        try:
            client = Client(scheduler, timeout=min(configured, SCHEDULER_TIMEOUT_S))
        except (OSError, TimeoutError) as exc:
            raise PadimError(f"cannot connect to the Dask scheduler at {scheduler!r}: {exc}") from exc
        with client:
            yield client
        return
    if not isinstance(local_cluster, int) or isinstance(local_cluster, bool) or local_cluster < 1:
        raise PadimError(f"local_cluster must be a positive number of workers, got {local_cluster!r}")
    # One thread per worker process: torch gets one core each, and a worker that dies takes one task.
    # Everything listens on 127.0.0.1 only (the dashboard too, on a free port).
    with LocalCluster(
        n_workers=local_cluster, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
    ) as cluster, Client(cluster) as client:
        yield client


def check_scheduler(scheduler: Any, local_cluster: Any) -> None:
    """The Dask options checked before anything is planned or written: an address
    ("tcp://host:8786", "host:8786") and a positive number of local workers."""
    if scheduler is not None and local_cluster is not None:
        raise PadimError("pass either scheduler or local_cluster, not both")
    if isinstance(scheduler, str) and not _ADDRESS_RE.match(scheduler):
        raise PadimError(f"scheduler={scheduler!r}; expected a Dask scheduler address such as tcp://host:8786")
    if local_cluster is not None and (
        not isinstance(local_cluster, int) or isinstance(local_cluster, bool) or local_cluster < 1
    ):
        raise PadimError(f"local_cluster must be a positive number of workers, got {local_cluster!r}")


def _describe(fut) -> str:
    if fut.status == "error":
        exc = fut.exception()
        return f"{type(exc).__name__}: {exc}"
    return f"job {fut.status}"


def _run_on_dask(plan, store, cache_dir, device, bootstrap, task_fn, feature_fn, progress, client, retries,
                 threads):
    from distributed import as_completed

    from padim_lib.engine.jobs import _failure, _feature_job, _task_job, task_label

    results_dir = str(store.directory)
    # Deterministic keys: two clients on one scheduler share a job instead of running it twice.
    ffuts = {
        fkey: client.submit(_feature_job, spec, cache_dir, device, feature_fn, threads,
                            key=f"padim-features-{fkey}", retries=retries, pure=False)
        for fkey, spec in plan.specs.items()
    }
    tfuts = {
        key: client.submit(_task_job, task, key, results_dir, cache_dir, device, bootstrap, task_fn, threads,
                           *[ffuts[f] for f in plan.deps[key]],
                           key=f"padim-task-{key}", retries=retries, pure=False)
        for key, task in plan.todo
    }
    labels = {f.key: f"features {s.category} {s.split} {s.backbone}" for f, s in
              ((ffuts[k], plan.specs[k]) for k in ffuts)}
    labels.update({tfuts[k].key: task_label(t) for k, t in plan.todo})
    store_keys = {f.key: k for k, f in {**ffuts, **tfuts}.items()}
    ours = set(labels)
    failures: list[dict] = []
    pending = as_completed(list(ffuts.values()) + list(tfuts.values()))
    try:
        while not pending.is_empty():
            # Feature jobs sort first ("padim-features-" < "padim-task-"), so a failed feature job is
            # reported before the tasks that fail because of it.
            for fut in sorted(pending.next_batch(block=False), key=lambda f: f.key):
                label, key = labels[fut.key], store_keys[fut.key]
                is_task = fut.key.startswith("padim-task-")
                # A task's rows in the store are the proof of completion, even when the worker that
                # held its (tiny) result died afterwards and Dask now calls the result lost.
                if fut.status == "finished" or (is_task and store.has(key, bootstrap)):
                    progress.done()
                    continue
                if fut.status in ("lost", "pending"):  # its worker died after it finished: Dask recomputes it
                    pending.add(fut)
                    continue
                dead = [f for f in plan.deps.get(key, []) if is_task and ffuts[f].status in ("error", "cancelled")]
                if dead:  # Dask hands the dependency's error down: name the real cause
                    cause = ffuts[dead[0]]
                    exc: BaseException = PadimError(
                        f"feature extraction failed: {labels[cause.key]}: {_describe(cause)}")
                    tb = ""
                elif fut.status == "error":
                    exc, tb = fut.exception(), "".join(traceback.format_tb(fut.traceback()))
                else:  # cancelled or lost: the scheduler went away or released it
                    exc, tb = PadimError(f"job {fut.key} was {fut.status} by the Dask scheduler"), ""
                failures.append(_failure(key if is_task else f"features-{key}", label, exc, tb))
                progress.fail(label, type(exc).__name__, str(exc))
            if not pending.is_empty():
                processing = client.processing()
                progress.set_running(sum(1 for keys in processing.values() for k in keys if k in ours))
                time.sleep(0.2)
    finally:
        progress.set_running(0)
        # Release our futures so the scheduler forgets them (and cancels any still queued on interrupt).
        client.cancel(list(ffuts.values()) + list(tfuts.values()))
    return failures

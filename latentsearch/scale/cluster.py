"""The one place that talks to Ray: connecting, running jobs as tasks, one progress bar.

``connect(address)`` gives a :class:`Cluster`: ``"auto"`` is the cluster in ``RAY_ADDRESS``
or the one ``ray start`` runs on this machine, ``"local"`` starts one inside this process
(stopped again by :meth:`Cluster.close`), anything else is a cluster's address
(``host:6379`` or ``ray://host:10001``). When Ray is already initialised in this process
(a test's fixture, a program of the user's) that cluster is used and left running.

:meth:`Cluster.map` runs a module-level function over picklable jobs as Ray tasks and
returns the results in job order. A task whose worker process dies is retried by Ray
(``RETRIES`` times); an exception raised by the function itself is not retried (bad input
stays bad) and is re-raised here as itself, so a worker's ``InvalidInput`` reaches the
caller as ``InvalidInput``. Callers commit nothing until ``map`` has returned every result.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from latentsearch.errors import ClusterError, LatentSearchError
from latentsearch.progress import bar

__all__ = ["Cluster", "connect", "on_cluster", "import_ray", "fault_point", "RETRIES"]

RETRIES = 3  # Ray's own default for tasks whose worker dies

_FAULTS = "LATENTSEARCH_FAULTS"


def import_ray():
    try:
        import ray
    except ImportError:
        raise ClusterError("--ray needs Ray: pip install 'latentsearch[ray]'") from None
    return ray


class Cluster:
    """A connected Ray cluster (see the module docstring)."""

    def __init__(self, ray: Any, owned: bool):
        self.ray = ray
        self.owned = owned  # started by connect("local"): stopped by close()

    @property
    def workers(self) -> int:
        """CPUs the cluster offers: how many tasks run at once."""
        return max(1, int(self.ray.cluster_resources().get("CPU", 1)))

    def map(self, fn: Callable[[Any], Any], jobs: Sequence[Any], *, desc: str,
            unit: str = "part", sizes: Sequence[int] | None = None, quiet: bool = False,
            num_cpus: float = 1) -> list[Any]:
        """``[fn(job) for job in jobs]``, run as Ray tasks; one bar advancing by ``sizes``
        (items per job) as jobs finish anywhere on the cluster."""
        ray = self.ray
        task = ray.remote(num_cpus=num_cpus, max_retries=RETRIES, retry_exceptions=False)(fn)
        pending = {task.remote(job): i for i, job in enumerate(jobs)}
        results: list[Any] = [None] * len(jobs)
        sizes = list(sizes) if sizes is not None else [1] * len(jobs)
        waiting = list(pending)
        with bar(total=sum(sizes), desc=desc, unit=unit, quiet=quiet) as progress:
            while waiting:
                done, waiting = ray.wait(waiting, num_returns=1)
                for ref in done:
                    i = pending[ref]
                    try:
                        results[i] = ray.get(ref)
                    except Exception as exc:
                        for other in waiting:
                            ray.cancel(other, force=True)
                        raise _unwrap(exc, desc, i) from None
                    progress.update(sizes[i])
        return results

    def actor(self, cls: type, *args: Any, num_cpus: float = 0, concurrency: int = 1,
              **kwargs: Any) -> Any:
        """A Ray actor of ``cls`` (a plain class; made remote here), started with ``args``;
        ``concurrency`` calls at a time, on threads (for a thread-safe ``cls``)."""
        remote = self.ray.remote(num_cpus=num_cpus, max_restarts=RETRIES,
                                 max_concurrency=concurrency)(cls)
        return remote.remote(*args, **kwargs)

    def get(self, refs: Any) -> Any:
        """``ray.get`` with a worker's own exception re-raised as itself."""
        try:
            return self.ray.get(refs)
        except Exception as exc:
            raise _unwrap(exc, "a shard call", None) from None

    def close(self) -> None:
        if self.owned and self.ray.is_initialized():
            self.ray.shutdown()

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _unwrap(exc: BaseException, desc: str, job: int | None) -> BaseException:
    """A worker's exception as the caller should see it: a LatentSearchError as itself, a
    lost worker as a ClusterError naming the job."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, LatentSearchError):
        return cause
    where = f"{desc}, part {job}" if job is not None else desc
    if cause is not None:
        return ClusterError(f"{where} failed on the cluster: {type(cause).__name__}: {cause}")
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ClusterError(f"{where} failed on the cluster (retried {RETRIES} times): {first}")


def connect(address: str) -> Cluster:
    """A :class:`Cluster` for ``address`` (``auto``, ``local`` or a cluster's address)."""
    ray = import_ray()
    if ray.is_initialized():
        return Cluster(ray, owned=False)
    options: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING,
                               "log_to_driver": False}
    # the package must be importable on the workers: installed there, or (one machine)
    # the driver's own environment, which local workers share
    try:
        if address == "local":
            ray.init(**options)
            return Cluster(ray, owned=True)
        _check_reachable(address)
        ray.init(address=address, **options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ClusterError(f"cannot connect to the Ray cluster at {address!r}: {first} "
                           "(start one with `ray start --head`, or use --ray local)") from None
    return Cluster(ray, owned=False)


@contextmanager
def on_cluster(address: str | None) -> Iterator[Any]:
    """The Ray cluster at ``address`` for the block (``latentsearch.scale.cluster``), or None."""
    if address is None:
        yield None
        return
    with connect(address) as cluster:
        yield cluster


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """A ``host:port`` that nothing answers on fails here at once: Ray would retry for
    minutes, printing a warning every few seconds."""
    if address == "auto" or "://" in address or address.count(":") != 1:
        return
    host, _, port = address.partition(":")
    if not port.isdigit():
        raise ClusterError(f"--ray takes auto, local or host:port, got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ConnectionError(f"nothing answers at {address} ({exc.strerror or exc})") from None


def fault_point(where: str) -> None:
    """Fault injection for the tests: when ``$LATENTSEARCH_FAULTS`` names a folder holding a
    file ``kill-<where>``, the file is removed and this worker process SIGKILLs itself (once:
    the retry finds no file); a file ``fail-<where>`` makes it raise, every time. Does
    nothing otherwise."""
    folder = os.environ.get(_FAULTS)
    if not folder:
        return
    if (Path(folder) / f"fail-{where}").exists():
        raise RuntimeError(f"fault injected at {where}")
    try:
        (Path(folder) / f"kill-{where}").unlink()
    except FileNotFoundError:
        return
    os.kill(os.getpid(), signal.SIGKILL)

"""Shared fixtures: seeded clustered vectors, and a root folder per test under tmp_path."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import settings

# Tests never write into the repository: no .hypothesis example database.
settings.register_profile("latentsearch", database=None)
settings.load_profile("latentsearch")


def clustered(n: int, dim: int = 32, clusters: int = 20, seed: int = 0, spread: float = 0.35):
    """``n`` vectors around ``clusters`` random centres, and the cluster of each as its label."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)).astype(np.float32)
    labels = rng.integers(0, clusters, n)
    x = centres[labels] + rng.normal(scale=spread, size=(n, dim)).astype(np.float32)
    return x.astype(np.float32), labels


@pytest.fixture
def root(tmp_path, monkeypatch):
    """A collections root under tmp_path; $LATENTSEARCH_ROOT points there too."""
    path = tmp_path / "indexes"
    monkeypatch.setenv("LATENTSEARCH_ROOT", str(path))
    return path


@pytest.fixture(autouse=True)
def _library_logger_as_found():
    """The CLI's ``progress.configure`` puts a stderr handler on the 'latentsearch' logger
    (propagation off) and may turn bars on; every test starts and ends without them."""
    import logging

    from latentsearch import progress

    logger = logging.getLogger("latentsearch")
    yield
    progress.configure(bars=False)  # bars off; then the handler it installs goes too
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    logger.propagate = True
    logger.setLevel(logging.NOTSET)


def pytest_collection_modifyitems(items):
    """Tests marked ``ray`` run last, in their usual order: the Ray cluster they share then
    starts once and no other test runs beside its processes (some tests measure speed)."""
    items.sort(key=lambda item: item.get_closest_marker("ray") is not None)


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """One local Ray cluster (2 CPUs) for every test marked ``ray``, stopped after the last.

    Yields the fault folder: a file ``kill-<where>`` put there makes the worker running
    that point SIGKILL itself once (``latentsearch.scale.cluster.fault_point``)."""
    import logging
    import os

    import ray

    faults = tmp_path_factory.mktemp("faults")
    os.environ["LATENTSEARCH_FAULTS"] = str(faults)  # inherited by the workers
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING,
             log_to_driver=False)
    try:
        yield faults
    finally:
        ray.shutdown()
        os.environ.pop("LATENTSEARCH_FAULTS", None)

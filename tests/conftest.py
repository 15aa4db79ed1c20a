"""Shared fixtures: a real LocalCluster on 127.0.0.1, started once per session."""

from __future__ import annotations

import os

import numpy as np
import pytest
from distributed import Client, LocalCluster


def pytest_collection_modifyitems(config, items):
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        skip = pytest.mark.skip(reason="slow test: skipped when CI=true")
        for item in items:
            if "slow" in item.keywords:
                item.add_marker(skip)


def _cluster(n_workers: int) -> LocalCluster:
    return LocalCluster(
        n_workers=n_workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
        memory_limit="4GiB",
    )


@pytest.fixture(scope="session")
def client():
    """A 2-worker process cluster on 127.0.0.1 shared by the tests of a session."""
    with _cluster(2) as cluster, Client(cluster, set_as_default=False) as c:
        yield c


@pytest.fixture(scope="session")
def client1():
    """A 1-worker process cluster (to compare results across worker counts)."""
    with _cluster(1) as cluster, Client(cluster, set_as_default=False) as c:
        yield c


@pytest.fixture
def rng():
    return np.random.default_rng(12345)

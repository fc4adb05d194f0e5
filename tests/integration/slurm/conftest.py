"""Fixtures of a real SLURM cluster on 127.0.0.1 (see cluster.py).

`slurm_cluster` (no accounting: sacct fails) and `slurm_cluster_accounting` (MariaDB +
slurmdbd: sacct works) are session-scoped and independent: own directories, ports, munge and
namespaces, so both run at once. `slurm` / `slurm_accounting` hand a test the same cluster,
idle at the start, and cancel whatever jobs the test left. When a test that used a cluster
fails, the daemons' logs are appended to its report.

A cluster that cannot start (no root, apt unreachable, a daemon dying) fails the test with the
reason and the daemon logs: never a silent skip, so a broken CI machine shows up as broken.
Fixtures of a conftest are seen only below its folder: tests that need a cluster live in
tests/integration/slurm/.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.slurm.cluster import Cluster, ClusterError

_CLUSTER_FIXTURES = ("slurm_cluster", "slurm_cluster_accounting", "slurm", "slurm_accounting")


def _started(**options: Any) -> Cluster:
    try:
        return Cluster(**options).start()
    except ClusterError as exc:
        pytest.fail(f"the SLURM test cluster did not start:\n{exc}", pytrace=False)


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[Cluster]:
    """A started cluster without accounting, shared by the whole session."""
    cluster = _started()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def slurm_cluster_accounting() -> Iterator[Cluster]:
    """A started cluster with slurmdbd and a private MariaDB, shared by the whole session."""
    cluster = _started(accounting=True)
    try:
        yield cluster
    finally:
        cluster.stop()


def _clean(cluster: Cluster) -> Iterator[Cluster]:
    cluster.wait_until_idle(timeout=60)
    yield cluster
    cluster.cancel_all()


@pytest.fixture
def slurm(slurm_cluster: Cluster) -> Iterator[Cluster]:
    """`slurm_cluster`, idle when the test starts; the test's leftover jobs are cancelled."""
    yield from _clean(slurm_cluster)


@pytest.fixture
def slurm_accounting(slurm_cluster_accounting: Cluster) -> Iterator[Cluster]:
    """`slurm_cluster_accounting`, idle when the test starts; leftover jobs are cancelled."""
    yield from _clean(slurm_cluster_accounting)


@pytest.fixture
def slurm_environ(slurm: Cluster, monkeypatch: pytest.MonkeyPatch) -> Cluster:
    """`slurm` with its env in os.environ (and no inherited SLURM_*): for code that shells out
    to sbatch by itself, like submitit."""
    _export(slurm, monkeypatch)
    return slurm


@pytest.fixture
def slurm_accounting_environ(slurm_accounting: Cluster, monkeypatch: pytest.MonkeyPatch) -> Cluster:
    """`slurm_accounting` with its env in os.environ."""
    _export(slurm_accounting, monkeypatch)
    return slurm_accounting


def _export(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("SLURM_")]:
        monkeypatch.delenv(key)
    for key, value in cluster.env.items():
        monkeypatch.setenv(key, value)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Append the daemon logs of the cluster a failing test used to its report."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.failed and report.when in ("call", "teardown"):
        funcargs = getattr(item, "funcargs", {})
        seen: set[int] = set()
        for name in _CLUSTER_FIXTURES:
            cluster = funcargs.get(name)
            if isinstance(cluster, Cluster) and id(cluster) not in seen:
                seen.add(id(cluster))
                report.sections.append((f"{name} daemon logs", cluster.logs()))

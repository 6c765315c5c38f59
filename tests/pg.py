"""The private-cluster fixture body the PostgreSQL test modules share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from firmware_sim.harness import ClusterUnavailable, PrivateCluster


def started_cluster(*, tls: bool = False) -> Iterator[PrivateCluster]:
    """The body of a module-scoped ``cluster`` fixture: a started private cluster,
    destroyed afterwards; the module's tests are skipped where none can be made."""
    try:
        cluster = PrivateCluster.create(tls=tls)
    except ClusterUnavailable as exc:
        pytest.skip(f"no private PostgreSQL cluster can be made here: {exc}")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()

"""Starting the real programs a test or benchmark runs against, each as a process of its own.

The gateway (``smiley-gateway run``), a private Mosquitto, a private
PostgreSQL cluster and a private HAProxy, on free ports in their own directories, so that the shared
broker on 1883 and server on 5432 are never touched. ``tests/`` and ``bench/``
both use these; nothing here imports ``gateway`` (the gateway is started as an
operator starts it) or pytest. ``browser.py`` (not imported here: Playwright is a test
dependency) starts the system Chromium headless.
"""

from firmware_sim.harness.gateway_process import (
    GATEWAY_SCRIPT,
    GatewayProcess,
    HarnessError,
    export_rows,
    write_config,
)
from firmware_sim.harness.haproxy import PrivateHaproxy, check_config
from firmware_sim.harness.mosquitto import CuttableLink, PrivateMosquitto, user_line
from firmware_sim.harness.net import free_port
from firmware_sim.harness.postgres import ClusterUnavailable, PrivateCluster
from firmware_sim.harness.publish import publish_acknowledged

__all__ = [
    "GATEWAY_SCRIPT",
    "ClusterUnavailable",
    "CuttableLink",
    "GatewayProcess",
    "HarnessError",
    "PrivateCluster",
    "PrivateHaproxy",
    "PrivateMosquitto",
    "check_config",
    "export_rows",
    "free_port",
    "publish_acknowledged",
    "user_line",
    "write_config",
]

"""What operations may see of a running gateway: narrow, read-only views.

The composition root builds one :class:`Observed` from its parts and hands it
to the health port, the stats line and housekeeping; none of them imports the
composition root or reaches past these views.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from gateway.intake.fleet_status import FleetStatus
from gateway.intake.ingest import IngestCounters
from gateway.intake.outbox import Backlog
from gateway.registry.config import HealthSection
from gateway.registry.terminals import Registry
from gateway.stores import CentralStore


class OutboxView(Protocol):
    @property
    def commits(self) -> int: ...
    @property
    def busy_errors(self) -> int: ...
    @property
    def committed_presses(self) -> int: ...
    async def backlog(self) -> Backlog: ...


class ForwarderView(Protocol):
    @property
    def forwarded(self) -> int: ...
    @property
    def failures(self) -> int: ...


class TcpView(Protocol):
    @property
    def listening(self) -> bool: ...
    @property
    def connections(self) -> int: ...


class MqttFlowView(Protocol):
    """The MQTT flow control (gateway.transports.mqtt_flow.FlowCounters fits)."""

    @property
    def received(self) -> int: ...
    @property
    def pubacks(self) -> int: ...
    @property
    def unacked(self) -> int: ...
    @property
    def peak_unacked(self) -> int: ...
    @property
    def holds(self) -> int: ...
    @property
    def answers_qos0(self) -> int: ...
    @property
    def packets_too_large(self) -> int: ...


class MqttView(Protocol):
    @property
    def connected(self) -> asyncio.Event: ...
    @property
    def flow(self) -> MqttFlowView: ...


class ModemView(Protocol):
    """The modem's status (gateway.transports.modem_status.ModemStatus fits)."""

    @property
    def ready(self) -> bool: ...
    @property
    def registered(self) -> bool | None: ...
    @property
    def signal_dbm(self) -> int | None: ...
    @property
    def sim(self) -> str | None: ...
    @property
    def storage_used(self) -> int | None: ...
    @property
    def storage_total(self) -> int | None: ...


class SmsCountersView(Protocol):
    @property
    def batches(self) -> int: ...
    @property
    def quarantined(self) -> dict[str, int]: ...


class WebCountersView(Protocol):
    """The web smiley counters (gateway.transports.web.WebCounters fits)."""

    @property
    def requests(self) -> int: ...
    @property
    def presses(self) -> int: ...
    @property
    def resent(self) -> int: ...
    @property
    def rate_limited(self) -> int: ...
    @property
    def refused(self) -> dict[str, int]: ...


@dataclass(frozen=True, slots=True)
class Observed:
    """The parts of one gateway that operations watch; absent parts are None."""

    health: HealthSection | None
    """``[health]`` as configured; None: no health port (housekeeping still runs)."""
    data_dir: Path
    registry: Registry
    counters: IngestCounters
    fleet: FleetStatus
    outbox: OutboxView
    forwarder: ForwarderView
    store: CentralStore
    tcp: TcpView | None = None
    mqtt: MqttView | None = None
    modem: ModemView | None = None
    sms: SmsCountersView | None = None
    web: WebCountersView | None = None

"""Prometheus metrics of a running gateway, read from its live parts at each scrape.

Every metric the dashboard (deploy/grafana) and the alerts (deploy/prometheus)
name is exposed from the first scrape whatever sections are configured: a part
that is off or idle reads 0 (``smiley_transport_enabled`` and
``smiley_modem_enabled`` tell off from idle), so a panel never says "no data".
``tests/test_monitoring.py`` holds the two files to this.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from gateway.intake.fleet_status import FleetStatus
from gateway.intake.outbox import Backlog
from gateway.ops.history import HistoryRing
from gateway.ops.probes import Check, StoreProbe
from gateway.ops.views import ModemView, MqttFlowView, Observed
from gateway.ops.web_metrics import web_metrics
from protocols.constants import NakCode

TRANSPORTS = ("tcp", "mqtt", "sms")
NAK_CODES = tuple(code.name for code in NakCode)
# What a refusal is kept in quarantine for: the frame's NAK, or a record the gateway refused.
REASONS = (*(c for c in NAK_CODES if c != "BUSY"), "RECORD_INVALID", "SMS_PARTS_INCONSISTENT")


class OperationsView(Protocol):
    """What the health port and metrics read of the operations side (gateway.ops.operations)."""

    @property
    def observed(self) -> Observed: ...
    @property
    def modem(self) -> ModemView | None: ...
    @property
    def backlog(self) -> Backlog | None: ...
    @property
    def store(self) -> StoreProbe: ...
    @property
    def fleet(self) -> FleetStatus: ...
    @property
    def history(self) -> HistoryRing | None: ...
    @property
    def now(self) -> Callable[[], float]: ...
    def readiness(self) -> tuple[bool, dict[str, Check]]: ...
    def ready_now(self) -> bool: ...
    async def refresh_backlog(self) -> None: ...
    def loop_lag_s(self) -> float: ...
    def log_suppressed(self) -> int: ...


class GatewayCollector(Collector):
    """Every metric, read from the running gateway at scrape time."""

    def __init__(self, ops: OperationsView) -> None:
        self._ops = ops

    def describe(self) -> Iterable[Metric]:
        return []  # collected only when scraped

    def collect(self) -> Iterator[Metric]:
        ops = self._ops
        gw = ops.observed
        counters = gw.counters
        presses = CounterMetricFamily(
            "smiley_presses", "Presses committed to the outbox, by transport", labels=["transport"]
        )
        for transport, n in sorted((dict.fromkeys(TRANSPORTS, 0) | counters.by_transport).items()):
            presses.add_metric([transport], n)
        yield presses
        naks = CounterMetricFamily(
            "smiley_naks", "NAKs sent to terminals, by code", labels=["code"]
        )
        for code, n in sorted((dict.fromkeys(NAK_CODES, 0) | counters.naks).items()):
            naks.add_metric([code], n)
        yield naks
        quarantined = CounterMetricFamily(
            "smiley_quarantined",
            "Records and frames kept in quarantine, by reason",
            labels=["reason"],
        )
        for reason, n in sorted((dict.fromkeys(REASONS, 0) | counters.quarantined).items()):
            quarantined.add_metric([reason], n)
        yield quarantined
        yield CounterMetricFamily(
            "smiley_heartbeats", "HEARTBEAT frames received", value=counters.heartbeats
        )
        yield CounterMetricFamily(
            "smiley_outbox_commits", "Outbox transactions committed", value=gw.outbox.commits
        )
        yield CounterMetricFamily(
            "smiley_outbox_busy_errors",
            "Outbox commits that failed (NAK BUSY)",
            value=gw.outbox.busy_errors,
        )
        yield CounterMetricFamily(
            "smiley_forwarded_rows",
            "Rows forwarded to the central store",
            value=gw.forwarder.forwarded,
        )
        yield CounterMetricFamily(
            "smiley_forward_failures", "Failed forwarding attempts", value=gw.forwarder.failures
        )
        yield from _outbox_metrics(ops)
        yield GaugeMetricFamily(
            "smiley_store_up", "1 if the central store answered the last probe", value=ops.store.up
        )
        yield GaugeMetricFamily(
            "smiley_store_down_seconds",
            "How long the store has been down",
            value=ops.store.down_for_s(),
        )
        yield GaugeMetricFamily(
            "smiley_store_outage_budget_seconds",
            "How long the store may be down before /readyz says not ready",
            value=ops.store.budget_s,
        )
        yield GaugeMetricFamily("smiley_ready", "1 when /readyz says ready", value=ops.ready_now())
        yield from _transport_metrics(ops)
        yield from _mqtt_flow_metrics(gw.mqtt.flow if gw.mqtt is not None else None)
        yield GaugeMetricFamily(
            "smiley_tcp_connections",
            "Open terminal connections",
            value=gw.tcp.connections if gw.tcp is not None else 0,
        )
        yield from _modem_metrics(ops.modem)
        yield from web_metrics(gw.web)
        yield GaugeMetricFamily(
            "smiley_event_loop_lag_seconds",
            "Lateness of the last loop probe",
            value=ops.loop_lag_s(),
        )
        yield CounterMetricFamily(
            "smiley_log_lines_suppressed",
            "Repeated warnings dropped by the log rate limiter",
            value=ops.log_suppressed(),
        )
        yield from _terminal_metrics(ops)


def _outbox_metrics(ops: OperationsView) -> Iterator[Metric]:
    backlog = ops.backlog or Backlog(0, 0, None, 0)  # before the first read: empty
    depth = GaugeMetricFamily(
        "smiley_outbox_depth", "Rows in the outbox not yet forwarded", labels=["kind"]
    )
    depth.add_metric(["press"], backlog.presses)
    depth.add_metric(["reject"], backlog.rejects)
    depth.add_metric(["hour"], backlog.hours)
    yield depth
    oldest = backlog.oldest_received_at_ms
    age = max(0.0, ops.now() - oldest / 1000) if oldest is not None else 0.0
    yield GaugeMetricFamily(
        "smiley_outbox_oldest_age_seconds", "Age of the oldest row in the outbox", value=age
    )
    yield GaugeMetricFamily(
        "smiley_forward_lag_seconds",
        "How far forwarding trails: the oldest unforwarded row's age",
        value=age,
    )


def _transport_metrics(ops: OperationsView) -> Iterator[Metric]:
    gw = ops.observed
    state = {
        "tcp": None if gw.tcp is None else gw.tcp.listening,
        "mqtt": None if gw.mqtt is None else gw.mqtt.connected.is_set(),
        "sms": None if ops.modem is None else ops.modem.ready,
    }
    enabled = GaugeMetricFamily(
        "smiley_transport_enabled", "1 when the transport is configured", labels=["transport"]
    )
    up = GaugeMetricFamily(
        "smiley_transport_up", "1 when the transport is up (0 when off)", labels=["transport"]
    )
    for transport, is_up in state.items():
        enabled.add_metric([transport], is_up is not None)
        up.add_metric([transport], bool(is_up))
    yield from (enabled, up)


def _modem_metrics(modem: ModemView | None) -> Iterator[Metric]:
    registered = None if modem is None else modem.registered
    signal = None if modem is None else modem.signal_dbm
    unknown = float("nan") if modem is not None else 0.0  # off: 0; on but not yet asked: NaN
    yield GaugeMetricFamily(
        "smiley_modem_enabled", "1 when a modem is configured ([sms])", value=modem is not None
    )
    yield GaugeMetricFamily(
        "smiley_modem_registered",
        "1 when the modem is registered on the mobile network (0 without a modem)",
        value=unknown if registered is None else float(registered),
    )
    yield GaugeMetricFamily(
        "smiley_modem_signal_dbm",
        "The modem's received signal strength (0 without a modem)",
        value=unknown if signal is None else float(signal),
    )


def _terminal_metrics(ops: OperationsView) -> Iterator[Metric]:
    last_seen = GaugeMetricFamily(
        "smiley_terminal_last_seen_timestamp_seconds",
        "When the terminal last sent anything (Unix time)",
        labels=["terminal_id", "transport"],
    )
    battery = GaugeMetricFamily(
        "smiley_terminal_battery_percent",
        "Battery level from the last HEARTBEAT (255: mains powered)",
        labels=["terminal_id"],
    )
    signal = GaugeMetricFamily(
        "smiley_terminal_signal_dbm", "Signal from the last HEARTBEAT", labels=["terminal_id"]
    )
    queued = GaugeMetricFamily(
        "smiley_terminal_queued", "Records the terminal holds unsent", labels=["terminal_id"]
    )
    offset = GaugeMetricFamily(
        "smiley_terminal_clock_offset_seconds",
        "Terminal clock minus gateway clock",
        labels=["terminal_id"],
    )
    silent = GaugeMetricFamily(
        "smiley_terminal_silent",
        "1 when the terminal has been quiet longer than health.silent_after_s",
        labels=["terminal_id"],
    )
    now, limits = ops.now(), ops.fleet.limits
    silent_count = never_seen = 0
    for status in ops.fleet.terminals.values():
        tid = str(status.terminal_id)
        is_silent = "silent" in status.flags(now, limits)
        silent_count += is_silent
        never_seen += status.last_contact is None
        silent.add_metric([tid], is_silent)
        if status.last_contact is not None:
            last_seen.add_metric([tid, status.transport or ""], status.last_contact)
        if status.battery_pct is not None:
            battery.add_metric([tid], status.battery_pct)
        if status.signal_dbm is not None:
            signal.add_metric([tid], status.signal_dbm)
        if status.queued is not None:
            queued.add_metric([tid], status.queued)
        if status.clock_offset_s is not None:
            offset.add_metric([tid], status.clock_offset_s)
    yield from (last_seen, battery, signal, queued, offset, silent)
    yield GaugeMetricFamily(
        "smiley_terminals_silent", "Terminals flagged silent", value=silent_count
    )
    yield GaugeMetricFamily(
        "smiley_terminals_never_seen",
        "Registered terminals never heard from since the status file began",
        value=never_seen,
    )
    yield GaugeMetricFamily(
        "smiley_terminal_silent_after_seconds",
        "health.silent_after_s: how long a terminal may be quiet",
        value=limits.silent_after_s,
    )


def _mqtt_flow_metrics(flow: MqttFlowView | None) -> Iterator[Metric]:
    """The gateway's own MQTT flow control: unacknowledged never above mqtt.max_in_flight."""
    flow = flow or _NoMqtt()
    yield CounterMetricFamily(
        "smiley_mqtt_received", "MQTT messages received from the broker", value=flow.received
    )
    yield CounterMetricFamily("smiley_mqtt_pubacks", "PUBACKs sent", value=flow.pubacks)
    yield GaugeMetricFamily(
        "smiley_mqtt_unacked", "MQTT messages received, not yet acknowledged", value=flow.unacked
    )
    yield GaugeMetricFamily(
        "smiley_mqtt_unacked_peak",
        "Most MQTT messages unacknowledged at once",
        value=flow.peak_unacked,
    )
    yield CounterMetricFamily(
        "smiley_mqtt_read_holds", "Times reading stopped at mqtt.max_in_flight", value=flow.holds
    )
    yield CounterMetricFamily(
        "smiley_mqtt_answers_qos0",
        "Answers sent at QoS 0 while reading was held with the broker's window full",
        value=flow.answers_qos0,
    )
    yield CounterMetricFamily(
        "smiley_mqtt_packets_too_large",
        "Broker connections dropped for a packet over the Maximum Packet Size sent in CONNECT",
        value=flow.packets_too_large,
    )


def metrics_registry(ops: OperationsView) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(ops))
    return registry


class _NoMqtt:
    """The MQTT flow of a gateway without [mqtt]: all 0."""

    received = pubacks = unacked = peak_unacked = holds = answers_qos0 = packets_too_large = 0

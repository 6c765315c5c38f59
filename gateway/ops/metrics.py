"""Prometheus metrics of a running gateway, read from its live parts at each scrape."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from gateway.intake.fleet_status import FleetStatus
from gateway.intake.outbox import Backlog
from gateway.ops.probes import Check, StoreProbe
from gateway.ops.views import ModemView, MqttFlowView, Observed, WebCountersView


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
        for transport, n in sorted(counters.by_transport.items()):
            presses.add_metric([transport], n)
        yield presses
        naks = CounterMetricFamily(
            "smiley_naks", "NAKs sent to terminals, by code", labels=["code"]
        )
        for code, n in sorted(counters.naks.items()):
            naks.add_metric([code], n)
        yield naks
        quarantined = CounterMetricFamily(
            "smiley_quarantined",
            "Records and frames kept in quarantine, by reason",
            labels=["reason"],
        )
        for reason, n in sorted(counters.quarantined.items()):
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
        backlog = ops.backlog
        if backlog is not None:
            depth = GaugeMetricFamily(
                "smiley_outbox_depth", "Rows in the outbox not yet forwarded", labels=["kind"]
            )
            depth.add_metric(["press"], backlog.presses)
            depth.add_metric(["reject"], backlog.rejects)
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
        yield GaugeMetricFamily(
            "smiley_store_up", "1 if the central store answered the last probe", value=ops.store.up
        )
        yield GaugeMetricFamily(
            "smiley_store_down_seconds",
            "How long the store has been down",
            value=ops.store.down_for_s(),
        )
        yield GaugeMetricFamily("smiley_ready", "1 when /readyz says ready", value=ops.ready_now())
        up = GaugeMetricFamily(
            "smiley_transport_up", "1 when the transport is up", labels=["transport"]
        )
        if gw.tcp is not None:
            up.add_metric(["tcp"], gw.tcp.listening)
        if gw.mqtt is not None:
            up.add_metric(["mqtt"], gw.mqtt.connected.is_set())
        if ops.modem is not None:
            up.add_metric(["sms"], ops.modem.ready)
        yield up
        yield from _intake_metrics(gw)
        if gw.tcp is not None:
            yield GaugeMetricFamily(
                "smiley_tcp_connections", "Open terminal connections", value=gw.tcp.connections
            )
        if ops.modem is not None:
            registered = ops.modem.registered
            signal = ops.modem.signal_dbm
            yield GaugeMetricFamily(
                "smiley_modem_registered",
                "1 when the modem is registered on the mobile network",
                value=float("nan") if registered is None else float(registered),
            )
            yield GaugeMetricFamily(
                "smiley_modem_signal_dbm",
                "The modem's received signal strength",
                value=float("nan") if signal is None else float(signal),
            )
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
    for status in ops.fleet.terminals.values():
        tid = str(status.terminal_id)
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
    yield from (last_seen, battery, signal, queued, offset)


def _intake_metrics(gw: Observed) -> Iterator[Metric]:
    if gw.mqtt is not None:
        yield from _mqtt_flow_metrics(gw.mqtt.flow)
    if gw.web is not None:
        yield from _web_metrics(gw.web)


def _web_metrics(web: WebCountersView) -> Iterator[Metric]:
    """Web smiley requests: presses taken once, resends, refusals by reason, rate limited."""
    yield CounterMetricFamily(
        "smiley_web_requests", "Web smiley press requests read", value=web.requests
    )
    yield CounterMetricFamily(
        "smiley_web_presses", "Web smiley presses committed (each once)", value=web.presses
    )
    yield CounterMetricFamily(
        "smiley_web_presses_resent", "Web smiley presses sent again, taken before",
        value=web.resent,
    )  # fmt: skip
    yield CounterMetricFamily(
        "smiley_web_rate_limited", "Web smiley requests answered 429", value=web.rate_limited
    )
    refused = CounterMetricFamily(
        "smiley_web_refused", "Web smiley requests refused whole, by reason", labels=["reason"]
    )
    for reason, n in sorted(web.refused.items()):
        refused.add_metric([reason], n)
    yield refused


def _mqtt_flow_metrics(flow: MqttFlowView) -> Iterator[Metric]:
    """The gateway's own MQTT flow control: unacknowledged never above mqtt.max_in_flight."""
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

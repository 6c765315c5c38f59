"""The counters of the gateway's own MQTT flow control (see mqtt_link.py), for /metrics."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class FlowCounters:
    """The gateway's own flow control on MQTT, for /metrics and the tests (over all connections)."""

    received: int = 0
    """PUBLISH packets from the broker handed to the gateway."""
    pubacks: int = 0
    """PUBACKs the gateway sent for them (queued to paho, in order after the answer)."""
    unacked: int = 0
    """Received on this connection and not acknowledged yet: never above ``mqtt.max_in_flight``."""
    peak_unacked: int = 0
    holds: int = 0
    """Times reading stopped because ``unacked`` reached ``mqtt.max_in_flight``."""
    answers_qos0: int = 0
    """Answers sent at QoS 0: reading had stopped with the broker's window full (see _Link)."""
    packets_too_large: int = 0
    """Connections dropped for a packet over MAX_PACKET_BYTES (a broker ignoring our limit)."""

"""Filling a broker: many QoS 1 publishes, each acknowledged by it, from a paho client."""

from __future__ import annotations

import time
from collections.abc import Iterable

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

# paho numbers messages in flight with 16-bit ids: wait for each chunk before the next.
_CHUNK = 20_000


def publish_acknowledged(
    port: int, topic: str, payloads: Iterable[bytes], *, timeout_s: float = 120
) -> int:
    """Publish each payload at QoS 1 to the broker on 127.0.0.1:``port`` and return once
    the broker acknowledged them all (so it holds them for a subscriber); their count."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{time.monotonic_ns()}")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    sent = 0
    try:
        chunk: list[paho.MQTTMessageInfo] = []
        for payload in payloads:
            chunk.append(client.publish(topic, payload, qos=1))
            if len(chunk) == _CHUNK:
                sent += _wait(chunk, timeout_s)
        sent += _wait(chunk, timeout_s)
    finally:
        client.disconnect()
        client.loop_stop()
    return sent


def _wait(chunk: list[paho.MQTTMessageInfo], timeout_s: float) -> int:
    for info in chunk:
        info.wait_for_publish(timeout_s)
    count = len(chunk)
    chunk.clear()
    return count

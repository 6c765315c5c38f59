"""A broker that ignores the gateway's Maximum Packet Size cannot make it allocate (issue #15).

Mosquitto honours the limit, so the test plays a broker that does not: a
loopback server that answers CONNECT and SUBSCRIBE by the book, then announces
a PUBLISH of 8 MiB. The gateway must drop the connection on reading the
length, before the body (which is never sent), count it, and connect again.
"""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path

from firmware_sim.harness import GatewayProcess, free_port
from gateway.transports.mqtt_link import MAX_PACKET_BYTES
from tests.support import write_config

HUGE = 8 * 1024 * 1024


def varint(n: int) -> bytes:
    """MQTT's variable byte integer (section 1.5.5)."""
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


async def read_packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    first = (await reader.readexactly(1))[0]
    length, shift = 0, 0
    while True:
        byte = (await reader.readexactly(1))[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return first, await reader.readexactly(length)


class RogueBroker:
    """Takes CONNECT and SUBSCRIBE, then announces one PUBLISH far over the limit."""

    def __init__(self) -> None:
        self.connects: list[bytes] = []
        self.closed_early = 0  # connections the gateway closed before the body was sent
        self.connections = asyncio.Queue[None]()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            kind, connect = await read_packet(reader)
            assert kind == 0x10, kind
            self.connects.append(connect)
            writer.write(b"\x20\x03\x00\x00\x00")  # CONNACK v5: success, no properties
            kind, subscribe = await read_packet(reader)
            assert kind == 0x82, kind
            writer.write(b"\x90\x04" + subscribe[:2] + b"\x00\x01")  # SUBACK: QoS 1 granted
            topic = b"smiley/v1/1001/up"
            head = len(topic).to_bytes(2, "big") + topic + b"\x00\x01" + b"\x00"
            writer.write(b"\x32" + varint(len(head) + HUGE) + head + b"\xaa" * 1000)
            await writer.drain()
            # The gateway reads the length and goes (EOF, or a reset as it leaves
            # our bytes unread), never asking for the rest of the body.
            try:
                while await reader.read(65536):
                    pass
            except ConnectionResetError:
                pass
            self.closed_early += 1
        finally:
            writer.close()
            self.connections.put_nowait(None)


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.rpartition(" ")[2])
    return 0.0


async def test_a_packet_over_the_limit_drops_the_connection_before_its_body(
    tmp_path: Path,
) -> None:
    rogue = RogueBroker()
    server = await asyncio.start_server(rogue.serve, "127.0.0.1", 0)
    broker_port = server.sockets[0].getsockname()[1]
    health, tcp = free_port(), free_port()
    extra = f"""
[mqtt]
url = "mqtt://127.0.0.1:{broker_port}"
client_id = "gw-rogue"
reconnect_max_s = 1
[health]
listen = "127.0.0.1:{health}"
"""
    gateway = GatewayProcess(write_config(tmp_path / "gw", port=tcp, extra=extra), tcp)
    try:
        await gateway.start()
        async with asyncio.timeout(30):
            await rogue.connections.get()
            await rogue.connections.get()  # and it came back (the reconnect loop)
        assert rogue.closed_early >= 2
        # CONNECT's properties name the limit (0x27, four bytes), so a broker by the
        # book drops such a message instead of sending it.
        assert b"\x27" + MAX_PACKET_BYTES.to_bytes(4, "big") in rogue.connects[0]
        dropped = await asyncio.to_thread(metric, health, "smiley_mqtt_packets_too_large_total")
        assert dropped >= 2
        assert gateway.alive
    finally:
        await gateway.terminate()
        server.close()
        await server.wait_closed()
    assert "mqtt_packet_too_large" in gateway.log.read_text(encoding="utf-8")

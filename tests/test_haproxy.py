"""A real HAProxy (Debian's package) in front of gateways with ``tcp.proxy_protocol``.

deploy/haproxy/haproxy.cfg is checked by HAProxy itself; the private HAProxy
of firmware_sim/harness runs the same frontend and backend options on free
ports: send-proxy-v2 for terminals, health checks that send v2 LOCAL.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from structlog.testing import capture_logs

from firmware_sim.harness import PrivateHaproxy, check_config
from protocols.frames import Nak, Welcome
from tests.conftest import GatewayHarness
from tests.support import REPO, VECTOR_HEX, RawTerminal
from tests.test_tcp import quarantined, stored

SHIPPED = REPO / "deploy" / "haproxy" / "haproxy.cfg"
MakeHarness = Callable[..., GatewayHarness]


def test_the_shipped_configuration_is_valid() -> None:
    result = check_config(SHIPPED)
    assert result.returncode == 0, result.stdout + result.stderr
    text = SHIPPED.read_text(encoding="utf-8")
    for needed in ("mode tcp", "send-proxy-v2", " check ", "timeout client 10m"):
        assert needed in text


def test_a_broken_configuration_is_refused(tmp_path: Path) -> None:
    broken = tmp_path / "haproxy.cfg"
    broken.write_text(SHIPPED.read_text(encoding="utf-8") + "\n    server gw4 ::bad::\n")
    assert check_config(broken).returncode != 0


async def proxied(make_harness: MakeHarness) -> GatewayHarness:
    harness = make_harness()
    text = harness.config_path.read_text(encoding="utf-8")
    harness.config_path.write_text(
        text.replace("[tcp]\n", "[tcp]\nproxy_protocol = true\n"), encoding="utf-8"
    )
    await harness.start()
    return harness


async def accepted_at_least(harness: GatewayHarness, count: int, timeout: float = 20) -> None:
    assert harness.gateway is not None
    assert harness.gateway.tcp is not None
    deadline = time.monotonic() + timeout
    while harness.gateway.tcp.accepted < count:
        assert time.monotonic() < deadline, "HAProxy's health checks never came"
        await asyncio.sleep(0.05)


async def test_terminals_through_haproxy_keep_their_address_and_checks_stay_quiet(
    tmp_path: Path, make_harness: MakeHarness
) -> None:
    gateways = [await proxied(make_harness) for _ in range(2)]
    try:
        with capture_logs() as logs:
            async with PrivateHaproxy(tmp_path / "haproxy", [g.port for g in gateways]) as lb:
                for g in gateways:  # several checks each, every one a v2 LOCAL connection
                    await accepted_at_least(g, 3)
                peers = []
                for _ in range(4):
                    t = await RawTerminal.connect(lb.port)
                    peers.append(f"127.0.0.1:{t.writer.get_extra_info('sockname')[1]}")
                    await t.send(VECTOR_HEX["hello"])
                    assert isinstance(await t.receive(timeout=10), Welcome)
                    await t.send(VECTOR_HEX["bad_crc"])
                    assert isinstance(await t.receive(timeout=10), Nak)
                    await t.close()
        rows = [r.row for g in gateways for r in await quarantined(g)]
        # The quarantine names each terminal's own address, not HAProxy's.
        assert sorted(r.peer for r in rows) == sorted(peers)
        assert {r.reason for r in rows} == {"BAD_CRC"}
        checks = [e for e in logs if e["event"] == "proxy_health_check"]
        assert len(checks) >= 6
        assert {e["version"] for e in checks} == {2}
        warnings = [e for e in logs if e["log_level"] in ("warning", "error")]
        assert [e["event"] for e in warnings] == ["frame_refused"] * 4
        assert [p for g in gateways for p in await stored(g)] == []
    finally:
        for g in gateways:
            await g.stop()

"""The console's page and data over HTTP: credentials, the fleet rows, no external resource."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest

from firmware_sim.harness import free_port
from protocols.frames import Heartbeat
from tests.conftest import GatewayHarness
from tests.test_tcp import hello

pytestmark = pytest.mark.timeout(120)


def console_section(port: int, *, auth: bool = False) -> str:
    lines = [f'listen = "127.0.0.1:{port}"', "history_interval_s = 0.2"]
    if auth:
        lines += ['console_user = "ops"', 'console_password_file = "console.secret"']
    return "[health]\n" + "\n".join(lines) + "\n"


async def test_the_console_asks_for_credentials_when_they_are_set(tmp_path: Path) -> None:
    (tmp_path / "console.secret").write_text("s3cret pass\n", encoding="utf-8")
    port = free_port()
    harness = GatewayHarness(tmp_path, extra=console_section(port, auth=True))
    await harness.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            for path in ("/", "/console/data"):
                refused = await client.get(path)
                assert refused.status_code == 401
                assert refused.headers["www-authenticate"].startswith("Basic realm=")
                wrong = await client.get(path, auth=("ops", "guess"))
                assert wrong.status_code == 401
                right = await client.get(path, auth=("ops", "s3cret pass"))
                assert right.status_code == 200, right.text
            assert (await client.get("/metrics")).status_code == 200  # scrapers as before
            assert (await client.get("/healthz")).status_code == 200
    finally:
        await harness.stop()


async def test_the_page_is_self_contained_and_the_data_lists_the_fleet(tmp_path: Path) -> None:
    port = free_port()
    harness = GatewayHarness(tmp_path, extra=console_section(port))
    await harness.start()
    try:
        t, _ = await hello(harness)
        await t.send_frame(Heartbeat(1001, int(time.time()), 12, -80, 0, 60))
        await t.receive()
        await t.close()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            page = await client.get("/")
            data = (await client.get("/console/data")).json()
    finally:
        await harness.stop()
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    # No script, style, font or image from anywhere else: the only URL is SVG's namespace.
    assert set(re.findall(r"https?://[^\s\"')]+", page.text)) == {"http://www.w3.org/2000/svg"}
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", page.text)
    rows = {r["id"]: r for r in data["terminals"]}
    assert set(rows) == {1001, 1002}
    assert rows[1001]["flags"] == ["low_battery"]
    assert rows[1001]["location"] == "Helsinki store"
    assert rows[1001]["transport"] == "tcp"
    assert 0 <= rows[1001]["ago_s"] < 60
    assert rows[1002]["flags"] == ["never_seen"]
    assert rows[1002]["last_contact"] is None
    assert set(data["charts"]) == {"presses", "refusals", "outbox", "lag", "signal"}
    assert data["modem"] is None
    assert data["refresh_s"] == 10

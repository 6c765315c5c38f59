"""``POST /w/{slug}/presses`` over HTTP: exactly once, refused whole, rate limited, time placed."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Callable, MutableMapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from firmware_sim.harness import free_port
from gateway.ops.stats import StatsReporter
from gateway.stores import StoredPress, StoredReject
from gateway.transports.web import CLIENT_MEMORY_S, MAX_BODY
from protocols.frames import Ack, Presses, PressRecord
from tests.conftest import GatewayHarness
from tests.test_health import health_section, samples
from tests.test_tcp import hello
from tests.web_support import WEB_REGISTRY_TOML, body, iso, web_section

CLIENT = "browser-one"


@pytest.fixture
async def web(make_harness: Callable[..., GatewayHarness]) -> AsyncIterator[GatewayHarness]:
    h = make_harness(extra=web_section(free_port(), "5/minute"), registry=WEB_REGISTRY_TOML)
    await h.start()
    yield h
    await h.stop()


def url(h: GatewayHarness, path: str = "/w/helsinki-exit/presses") -> str:
    assert h.gateway is not None
    assert h.gateway.config.web is not None
    return f"http://{h.gateway.config.web.listen}{path}"


async def stored(h: GatewayHarness) -> list[StoredPress]:
    await h.forwarded()
    assert h.gateway is not None
    return [p async for p in h.gateway.store.presses(None, None)]


async def rejected(h: GatewayHarness) -> list[StoredReject]:
    await h.forwarded()
    assert h.gateway is not None
    return [r async for r in h.gateway.store.rejected(None, None)]


async def first_stats_line(reporter: StatsReporter) -> MutableMapping[str, Any]:
    """Run the reporter until it logs its first stats line, and return that line."""
    with capture_logs() as logs:
        task = asyncio.create_task(reporter.run())
        try:
            async with asyncio.timeout(10):
                while not any(line["event"] == "stats" for line in logs):  # noqa: ASYNC110
                    await asyncio.sleep(0.01)  # a structlog capture has no event to await
        finally:
            task.cancel()
            await asyncio.wait({task})
    return next(line for line in logs if line["event"] == "stats")


def presses(start: int, stop: int, at: float, **fields: Any) -> list[dict[str, Any]]:
    return [
        {"seq": s, "at": iso(at + s), "button": 1 + s % 4, "followup": 0, "ui": "qr"} | fields
        for s in range(start, stop)
    ]


async def test_resends_are_taken_once_and_acked_counts_earlier_requests(
    web: GatewayHarness,
) -> None:
    now = time.time()
    async with httpx.AsyncClient() as client:
        first = await client.post(url(web), json=body(CLIENT, now, presses(0, 3, now - 60)))
        assert first.status_code == 200
        assert first.json() == {"acked": 2}
        again = await client.post(url(web), json=body(CLIENT, now, presses(0, 3, now - 60)))
        assert again.json() == {"acked": 2}
        overlap = await client.post(url(web), json=body(CLIENT, now, presses(1, 5, now - 60)))
        assert overlap.json() == {"acked": 4}
        other = await client.post(url(web), json=body("browser-two", now, presses(0, 1, now)))
        assert other.json() == {"acked": 0}
    rows = await stored(web)
    assert [(p.terminal_id, p.seq, p.button, p.ui) for p in rows] == [
        (5001, 0, 1, "qr"), (5001, 1, 2, "qr"), (5001, 2, 3, "qr"), (5001, 3, 4, "qr"),
        (5001, 4, 1, "qr"), (5001, 5, 1, "qr"),
    ]  # fmt: skip
    assert {(p.transport, p.precision, p.clock_corrected) for p in rows} == {
        ("web", "second", False)
    }
    assert [p.occurred_at for p in rows[:5]] == [int(now - 60) + s for s in range(5)]
    assert rows[0].local_time.endswith(("+02:00", "+03:00"))  # Helsinki
    assert web.gateway is not None
    assert web.gateway.web is not None
    assert web.gateway.web.counters.presses == 6
    assert web.gateway.web.counters.resent == 5


async def test_a_browser_clock_an_hour_behind_is_corrected_and_marked(web: GatewayHarness) -> None:
    now = time.time()
    behind = now - 3600
    async with httpx.AsyncClient() as client:
        answer = await client.post(url(web), json=body(CLIENT, behind, presses(0, 2, behind - 10)))
    assert answer.json() == {"acked": 1}
    rows = await stored(web)
    assert [p.clock_corrected for p in rows] == [True, True]
    assert abs(rows[0].occurred_at - (now - 10)) <= 2  # moved by the offset sent_at showed


BAD: list[tuple[bytes | dict[str, Any], int, str]] = [
    (b"{not json", 400, "WEB_MALFORMED"),
    (body(CLIENT, 0) | {"extra": 1}, 400, "WEB_MALFORMED"),
    (body("short", 0), 400, "WEB_MALFORMED"),
    (body(CLIENT, 0, at="yesterday"), 400, "WEB_MALFORMED"),
    (body(CLIENT, 0, ui="fax"), 400, "WEB_MALFORMED"),
    (body(CLIENT, 0, presses(0, 101, 0)), 413, "WEB_TOO_MANY_PRESSES"),
    (body(CLIENT, 0, button=5), 422, "WEB_BUTTON_OUT_OF_RANGE"),
    (body(CLIENT, 0, button=0), 422, "WEB_BUTTON_OUT_OF_RANGE"),
    (body(CLIENT, 0, button=1, followup=5), 422, "WEB_FOLLOWUP_UNKNOWN"),
    (body(CLIENT, 0, button=3, followup=1), 422, "WEB_FOLLOWUP_NOT_ASKED"),
]


async def test_each_bad_input_gets_its_4xx_and_a_quarantine_row(
    make_harness: Callable[..., GatewayHarness],
) -> None:
    h = make_harness(extra=web_section(free_port()), registry=WEB_REGISTRY_TOML)
    await h.start()
    try:
        now = time.time()
        async with httpx.AsyncClient() as client:
            for bad, status, reason in BAD:
                if isinstance(bad, bytes):
                    answer = await client.post(url(h), content=bad)
                else:
                    answer = await client.post(url(h), json=dict(bad, sent_at=iso(now)))
                assert (answer.status_code, answer.json()["error"]) == (status, reason)
                assert answer.json()["detail"]
            # Refused whole: the good press beside a bad one is not taken either.
            mixed = presses(0, 1, now) + presses(1, 2, now, button=9)
            answer = await client.post(url(h), json=body(CLIENT, now, mixed))
            assert answer.status_code == 422
            unknown = await client.post(url(h, "/w/nowhere/presses"), json=body(CLIENT, now))
            assert unknown.status_code == 404
            page = await client.get(url(h, "/w/nowhere"))
            assert page.status_code == 404
            assert "does not exist" in page.text
        assert await stored(h) == []
        quarantine = await rejected(h)
        assert [r.row.reason for r in quarantine] == [reason for _, _, reason in BAD] + [
            "WEB_BUTTON_OUT_OF_RANGE"
        ]
        assert {(r.row.transport, r.row.terminal_id, r.row.peer) for r in quarantine} == {
            ("web", 5001, "127.0.0.1")
        }
        assert quarantine[0].row.raw == b"{not json"
    finally:
        await h.stop()


async def test_over_the_rate_limit_429_while_others_and_terminals_are_served(
    web: GatewayHarness,
) -> None:
    now = time.time()
    loopback = httpx.AsyncHTTPTransport(local_address="127.0.0.1")
    neighbour = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
    async with (
        httpx.AsyncClient(transport=loopback) as one,
        httpx.AsyncClient(transport=neighbour) as two,
    ):
        for seq in range(5):  # the limit: 5 a minute
            answer = await one.post(url(web), json=body(CLIENT, now, presses(seq, seq + 1, now)))
            assert answer.json() == {"acked": seq}
        limited = await one.post(url(web), json=body(CLIENT, now, presses(5, 6, now)))
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) >= 1
        assert limited.json()["error"] == "RATE_LIMITED"
        other = await two.post(url(web), json=body("browser-two", now, presses(0, 1, now)))
        assert other.json() == {"acked": 0}
        web.now = 1767225663.0
        terminal, _ = await hello(web)
        await terminal.send_frame(
            Presses(1001, 1767225663, 0, 0, (PressRecord(0, 1767225660, 2, 0),))
        )
        assert isinstance(await terminal.receive(), Ack)
        await terminal.close()
        web.now = None
        still = await one.post(url(web), json=body(CLIENT, now, presses(5, 6, now)))
        assert still.status_code == 429
    rows = await stored(web)
    assert (
        sorted((p.terminal_id, p.transport) for p in rows) == [(1001, "tcp")] + [(5001, "web")] * 6
    )
    assert web.gateway is not None
    assert web.gateway.web is not None
    assert web.gateway.web.counters.rate_limited == 2


async def test_web_presses_and_refusals_in_metrics_and_the_stats_line(
    make_harness: Callable[..., GatewayHarness],
) -> None:
    health = free_port()
    h = make_harness(
        extra=web_section(free_port(), "4/minute") + health_section(health),
        registry=WEB_REGISTRY_TOML,
    )
    await h.start()
    try:
        now = time.time()
        async with httpx.AsyncClient() as client:
            await client.post(url(h), json=body(CLIENT, now, presses(0, 2, now)))
            await client.post(url(h), json=body(CLIENT, now, presses(0, 3, now)))
            await client.post(url(h), json=body(CLIENT, now, button=7))
            await client.post(url(h), content=b"[]")
            assert (await client.post(url(h), json=body(CLIENT, now))).status_code == 429
            text = (await client.get(f"http://127.0.0.1:{health}/metrics")).text
        found = samples(text)
        assert found[("smiley_web_presses_total", ())] == 3
        assert found[("smiley_web_presses_resent_total", ())] == 2
        assert found[("smiley_web_requests_total", ())] == 4
        assert found[("smiley_web_rate_limited_total", ())] == 1
        assert found[("smiley_web_refused_total", (("reason", "WEB_BUTTON_OUT_OF_RANGE"),))] == 1
        assert found[("smiley_web_refused_total", (("reason", "WEB_MALFORMED"),))] == 1
        assert found[("smiley_presses_total", (("transport", "web"),))] == 3
        assert found[("smiley_quarantined_total", (("reason", "WEB_MALFORMED"),))] == 1
        promtool = await asyncio.create_subprocess_exec(
            "/usr/bin/promtool", "check", "metrics", stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        said, _ = await asyncio.wait_for(promtool.communicate(text.encode()), 60)
        assert promtool.returncode == 0, said.decode()
        assert h.gateway is not None
        line = await first_stats_line(StatsReporter(h.gateway.observed(), interval_s=0.01))
        assert (line["web_presses"], line["web_resent"], line["web_refused"],
                line["web_rate_limited"]) == (3, 2, 2, 1)  # fmt: skip
    finally:
        await h.stop()


async def test_web_over_https_and_bounded_bodies(
    make_harness: Callable[..., GatewayHarness], tls_files: tuple[Path, Path]
) -> None:
    cert, key = tls_files
    port = free_port()
    section = web_section(port) + f'tls_cert = "{cert}"\ntls_key = "{key}"\n'
    h = make_harness(extra=section, registry=WEB_REGISTRY_TOML)
    await h.start()
    try:
        now = time.time()
        trusting = ssl.create_default_context(cafile=str(cert))
        async with httpx.AsyncClient(verify=trusting) as client:
            address = f"https://127.0.0.1:{port}/w/helsinki-exit"
            assert (await client.get(address)).status_code == 200
            answer = await client.post(f"{address}/presses", json=body(CLIENT, now))
            assert answer.json() == {"acked": 0}
            huge = await client.post(f"{address}/presses", content=b" " * (MAX_BODY + 1))
            assert huge.status_code == 413
        async with httpx.AsyncClient() as plain:
            with pytest.raises(httpx.TransportError):
                await plain.get(f"http://127.0.0.1:{port}/w/helsinki-exit")
        assert [p.ui for p in await stored(h)] == ["qr"]
    finally:
        await h.stop()


async def test_without_a_web_section_nothing_listens(harness: GatewayHarness) -> None:
    assert harness.gateway is not None
    assert harness.gateway.web is None
    assert harness.gateway.observed().web is None


async def test_a_browser_silent_for_a_month_is_forgotten(web: GatewayHarness) -> None:
    now = time.time()
    async with httpx.AsyncClient() as client:
        await client.post(url(web), json=body(CLIENT, now, presses(0, 2, now)))
        assert web.gateway is not None
        assert web.gateway.web is not None
        assert await web.gateway.web.forget_old_clients() == 0  # seen just now
        web.now = now + CLIENT_MEMORY_S + 60
        assert await web.gateway.web.forget_old_clients() == 1
        web.now = None
        # Forgotten: its next press is taken; its seqs start over as a new browser's would.
        answer = await client.post(url(web), json=body(CLIENT, now, presses(2, 3, now)))
        assert answer.json() == {"acked": 2}
    assert [p.seq for p in await stored(web)] == [0, 1, 2]

"""``POST /w/{slug}/presses`` over HTTP: exactly once, refused whole, rate limited, time placed."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from firmware_sim.harness import free_port
from gateway.stores import StoredPress, StoredReject
from protocols.frames import Ack, Presses, PressRecord
from tests.conftest import GatewayHarness
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

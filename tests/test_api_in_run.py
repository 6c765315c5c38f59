"""The query API served by ``smiley-gateway run`` itself when ``[api]`` is configured."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from firmware_sim.harness import free_port
from gateway.api.db import open_reader
from gateway.api.tokens import create_token
from protocols.frames import Ack, Presses, PressRecord
from tests.conftest import GatewayHarness
from tests.test_tcp import hello

pytestmark = pytest.mark.timeout(60)


async def stored_presses_and_token(harness: GatewayHarness, *, button: int, count: int) -> str:
    """``count`` presses of ``button`` by terminal 1001, forwarded to the store; a token of
    the company that can read them."""
    terminal, _ = await hello(harness)
    at = 1767225600 + 3600
    records = tuple(PressRecord(seq, at + 10 * seq, button, 0) for seq in range(count))
    await terminal.send_frame(Presses(1001, at + 30, 0, 0, records))
    assert isinstance(await terminal.receive(), Ack)
    await terminal.close()
    await harness.forwarded()
    assert harness.gateway is not None
    reader = await open_reader(harness.gateway.config.store_url())
    try:
        _, token = await create_token(reader, "acme", None, "bi", None)
    finally:
        await reader.close()
    return token


async def test_run_serves_the_api_over_what_it_stores(
    make_harness: Callable[..., GatewayHarness],
) -> None:
    api_port = free_port()
    harness = make_harness(f'[api]\nlisten = "127.0.0.1:{api_port}"\n')
    await harness.start()
    try:
        token = await stored_presses_and_token(harness, button=4, count=3)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}") as client:
            answer = await client.get(
                "/v2/results/button-feedbacks.json",
                params={"startDate": "2026-01-01", "endDate": "2026-01-02"},
                headers={"X-HON-API-Token": token},
            )
            refused = await client.get("/v2/results/button-feedbacks.json")
    finally:
        await harness.stop()
    assert answer.status_code == 200, answer.text
    rows = answer.json()  # an array of ButtonFeedback, as the vendor's document says
    assert [r["buttonIndex"] for r in rows] == [3, 3, 3]
    assert {r["timePrecision"] for r in rows} == {"second"}
    assert refused.status_code == 401

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


async def test_run_serves_the_api_over_what_it_stores(
    make_harness: Callable[..., GatewayHarness],
) -> None:
    api_port = free_port()
    harness = make_harness(f'[api]\nlisten = "127.0.0.1:{api_port}"\n')
    gateway = await harness.start()
    try:
        terminal, _ = await hello(harness)
        at = 1767225600 + 3600
        records = tuple(PressRecord(seq, at + 10 * seq, 4, 0) for seq in range(3))
        await terminal.send_frame(Presses(1001, at + 30, 0, 0, records))
        assert isinstance(await terminal.receive(), Ack)
        await terminal.close()
        await harness.forwarded()
        reader = await open_reader(gateway.config.store_url())
        try:
            _, token = await create_token(reader, "acme", None, "bi", None)
        finally:
            await reader.close()
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

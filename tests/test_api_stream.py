"""A year of button feedback as CSV streams in constant memory, from ``serve_api`` in-process.

``serve_api`` is what the composition root runs inside ``run``; here it runs
as a task with a stop event, and the client reads the export chunk by chunk.
"""

from __future__ import annotations

import asyncio
import socket
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from firmware_sim.harness import free_port
from gateway.api import serve_api
from gateway.api.db import open_reader
from gateway.api.tokens import create_token
from gateway.errors import ConfigError
from gateway.registry.config import load_config
from gateway.stores import open_store
from tests.test_api_support import REGISTRY, press

pytestmark = pytest.mark.timeout(180)

YEAR_START = 1740787200  # 2025-03-01T00:00:00Z
PRESSES = 60_000
STEP = 365 * 86400 // PRESSES


async def test_year_of_csv_streams_in_constant_memory(tmp_path: Path) -> None:
    port = free_port()
    config_path = tmp_path / "gateway.toml"
    config_path.write_text(
        f'[store]\nurl = "sqlite:///{tmp_path}/central.db"\n'
        f'[api]\nlisten = "127.0.0.1:{port}"\nrate_limit = "100/second"\n',
        encoding="utf-8",
    )
    config = load_config(config_path, env={})
    store = await open_store(config.store_url())
    try:
        await store.import_registry(REGISTRY)
        rows = [press(1001 + (i % 2), i, YEAR_START + 7 + i * STEP, 1 + i % 4)
                for i in range(PRESSES)]  # fmt: skip
        for start in range(0, PRESSES, 10_000):
            await store.write(rows[start : start + 10_000], [])
    finally:
        await store.close()
    db = await open_reader(config.store_url())
    try:
        _, token = await create_token(db, "acme", None, "export", None)
    finally:
        await db.close()

    stop, started = asyncio.Event(), asyncio.Event()
    server = asyncio.create_task(serve_api(config, stop, started))
    try:
        await asyncio.wait_for(started.wait(), 20)
        url = f"http://127.0.0.1:{port}/v2/results/button-feedbacks.csv"
        await _export(url, token, "2025-03-01", "2025-03-02")  # warm up: imports, caches
        month = await _export(url, token, "2025-03-01", "2025-04-01")
        year = await _export(url, token, "2025-03-01", "2026-03-01")
    finally:
        stop.set()
        await asyncio.wait_for(server, 20)
    assert year.lines == PRESSES + 1  # the header, then every press
    assert year.received > 8_000_000
    assert month.lines < PRESSES // 10
    # Twelve times the rows, the same memory: nothing grows with the size of the answer.
    assert year.peak < 2 * month.peak + 256_000, (month, year)
    assert year.peak < 3_000_000, year


@dataclass
class Export:
    received: int
    lines: int
    peak: int


async def _export(url: str, token: str, start: str, end: str) -> Export:
    """Stream one export, counting it as it comes; the peak of traced memory meanwhile."""
    params = {"startDate": start, "endDate": end, "auth": token}
    tracemalloc.start()
    received = lines = 0
    try:
        async with (
            httpx.AsyncClient(timeout=60) as client,
            client.stream("GET", url, params=params) as answer,
        ):
            assert answer.status_code == 200
            assert answer.headers["x-more-available"] == "false"
            async for chunk in answer.aiter_bytes():
                received += len(chunk)
                lines += chunk.count(b"\n")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return Export(received, lines, peak)


async def test_a_port_in_use_is_a_config_error_not_an_exit(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config_path = tmp_path / "gateway.toml"
        config_path.write_text(
            f'[store]\nurl = "sqlite:///{tmp_path}/central.db"\n'
            f'[api]\nlisten = "127.0.0.1:{port}"\n',
            encoding="utf-8",
        )
        with pytest.raises(ConfigError, match=r"api\.listen"):
            await serve_api(load_config(config_path, env={}), asyncio.Event())


async def test_inside_run_a_store_that_is_down_is_waited_for(tmp_path: Path) -> None:
    config_path = tmp_path / "gateway.toml"
    config_path.write_text(
        f'[store]\nurl = "postgresql://nobody@127.0.0.1:{free_port()}/central"\n'
        f'[api]\nlisten = "127.0.0.1:{free_port()}"\n',
        encoding="utf-8",
    )
    stop = asyncio.Event()
    server = asyncio.create_task(
        serve_api(load_config(config_path, env={}), stop, wait_for_store=True)
    )
    await asyncio.sleep(0.5)
    assert not server.done()  # still waiting for the store, not failed
    stop.set()
    await asyncio.wait_for(server, 10)

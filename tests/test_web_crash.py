"""Kill -9 while browsers' presses are in flight: every acknowledged press is stored once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from firmware_sim.harness import GatewayProcess, export_rows, free_port, write_config
from tests.web_support import WEB_REGISTRY_TOML, body, iso, web_section

CLIENTS = 4
PRESSES = 60  # per client
START_DEADLINE_S = 30.0
KILL_AFTER = 5  # presses one browser has acknowledged


class Browser:
    """What the page does: number presses, keep the unacknowledged ones, resend them all."""

    def __init__(self, index: int, base: int, some_acked: asyncio.Event) -> None:
        self.client = f"crash-browser-{index}"
        self.index = index
        self.base = base
        self.next = 0
        self.pending: list[int] = []
        self.acked: set[int] = set()
        self.some_acked = some_acked

    def at(self, seq: int) -> float:
        # Each (client, seq) its own second: the export tells them apart by time.
        return self.base + self.index * 1000 + seq

    async def step(self, client: httpx.AsyncClient, url: str) -> None:
        if self.next < PRESSES:
            self.pending.append(self.next)
            self.next += 1
        if not self.pending:
            return
        presses = [{"seq": s, "at": iso(self.at(s)), "button": 1 + s % 4, "ui": "link"}
                   for s in self.pending]  # fmt: skip
        try:
            answer = await client.post(url, json=body(self.client, time.time(), presses))
        except httpx.TransportError:
            return  # the gateway is gone: keep them
        assert answer.status_code == 200, answer.text
        acked = answer.json()["acked"]
        self.acked |= {s for s in self.pending if s <= acked}
        if len(self.acked) >= KILL_AFTER:
            self.some_acked.set()
        self.pending = [s for s in self.pending if s > acked]


async def web_listening(url: str) -> None:
    deadline = time.monotonic() + START_DEADLINE_S
    async with httpx.AsyncClient() as client:
        while True:
            try:
                await client.get(url)
                return
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)


async def test_kill_9_with_presses_in_flight_loses_and_doubles_nothing(tmp_path: Path) -> None:
    web_port = free_port()
    config = write_config(
        tmp_path, port=free_port(), registry=WEB_REGISTRY_TOML, extra=web_section(web_port)
    )
    tcp_port = int(config.read_text().split('listen = "127.0.0.1:')[1].split('"')[0])
    url = f"http://127.0.0.1:{web_port}/w/helsinki-exit/presses"
    some_acked = asyncio.Event()
    browsers = [Browser(i, int(time.time()) - 3 * 86400, some_acked) for i in range(CLIENTS)]
    gateway = GatewayProcess(config, tcp_port)
    await gateway.start()
    await web_listening(url)
    async with httpx.AsyncClient(timeout=10) as client:

        async def browse(browser: Browser) -> None:
            while browser.next < PRESSES // 2:
                await browser.step(client, url)

        tasks = [asyncio.create_task(browse(b)) for b in browsers]
        # Kill once some presses are acknowledged, while the others' requests are in the air.
        await some_acked.wait()
        await gateway.kill()
        await asyncio.gather(*tasks)
        acked_before = {(b.index, s) for b in browsers for s in b.acked}
        assert acked_before
        await gateway.start()
        await web_listening(url)
        for browser in browsers:  # the pages send the rest, and press on
            while browser.pending or browser.next < PRESSES:
                await browser.step(client, url)
    assert await gateway.terminate() == 0
    rows = [r for r in export_rows(config) if r["terminal_id"] == 5001]
    times = [r["occurred_at"] for r in rows]
    expected = {iso(b.at(s)): (b.index, s) for b in browsers for s in range(PRESSES)}
    assert sorted(times) == sorted(expected)  # each press once, none lost
    assert {expected[iso(b.at(s))] for b in browsers for s in b.acked} >= acked_before
    assert sorted(r["seq"] for r in rows) == list(range(CLIENTS * PRESSES))
    assert {(r["transport"], r["ui"], r["precision"]) for r in rows} == {("web", "link", "second")}

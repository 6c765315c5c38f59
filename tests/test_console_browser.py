"""The console in a real headless Chromium, after a simulated fleet ran against a gateway process.

The fleet: steady terminals (heartbeat every second), low-battery ones, one
with a drifting clock, some that stop (and go silent), and registered ones
never heard from. The gateway runs with a simulated modem, so every chart
has something to draw. Screenshots at 1280 px go to tests/artifacts/.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Page

from firmware_sim import Fleet, FleetOptions, LinkOptions, Steady
from firmware_sim import load_registry as load_sim_registry
from firmware_sim.harness import GatewayProcess, free_port, write_config
from firmware_sim.harness.browser import headless_chromium
from firmware_sim.modem_profiles import ModemProfile
from firmware_sim.modem_server import SocketModemServer
from protocols.frames import Heartbeat, Hello, encode
from protocols.stream import FrameStream
from tests.test_sms import sms_config

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "tests" / "artifacts"
SAMPLE_REGISTRY = (REPO / "deploy" / "terminals.example.toml").read_text(encoding="utf-8")
SILENT_AFTER_S = 8.0
REFRESH_S = 10.0
ONE_REFRESH_S = REFRESH_S + 3.0  # a refresh, and the fetch and drawing it takes
CHARTS = ("presses", "refusals", "outbox", "lag", "signal")


def health_section(port: int) -> str:
    return (
        f'[health]\nlisten = "127.0.0.1:{port}"\nsilent_after_s = {SILENT_AFTER_S}\n'
        "history_interval_s = 1.0\nlow_battery_pct = 20\nclock_drift_s = 120.0\n"
    )


async def drifting_terminal(port: int, terminal_id: int, key: bytes, stop: asyncio.Event) -> None:
    """A terminal whose clock is 15 minutes ahead: every heartbeat says so; one bad frame."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    stream = FrameStream({terminal_id: key}.get, zero_tag_naks=True)

    async def answer() -> None:
        while not stream.feed(await reader.read(4096)):
            pass

    try:
        writer.write(encode(Hello(terminal_id, 0x0100, 1, int(time.time()) + 900, 0, 0), key))
        await answer()
        bad = bytearray(encode(Heartbeat(terminal_id, int(time.time()), 90, -70, 0, 5), key))
        bad[-1] ^= 0xFF  # a broken crc: NAK BAD_CRC, kept in quarantine (the refusals chart)
        writer.write(bytes(bad))
        await answer()
        while not stop.is_set():
            clock = int(time.time()) + 900
            writer.write(encode(Heartbeat(terminal_id, clock, 90, -70, 0, 60), key))
            await answer()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
    finally:
        writer.close()


async def status(client: httpx.AsyncClient) -> dict[int, dict[str, Any]]:
    body = (await client.get("/status")).json()
    return {t["terminal_id"]: t for t in body["terminals"]}


async def until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"not within {timeout} s: {what}")


def ago_text(seconds: float) -> str:
    """The page's own wording, for the numbers checked below."""
    s = max(0, round(seconds))
    return f"{s} s ago" if s < 60 else f"{s // 60} min ago"


@contextlib.asynccontextmanager
async def console_page(url: str) -> AsyncIterator[Page]:
    async with headless_chromium() as browser:
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        await page.goto(url)
        yield page


async def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / name), full_page=True)


async def row_flags(page: Page) -> dict[int, str]:
    found = await page.eval_on_selector_all(
        "#fleet tbody tr", "rows => rows.map(r => [r.dataset.terminal, r.dataset.flags])"
    )
    return {int(tid): flags for tid, flags in found}


async def test_the_console_shows_the_fleet_flags_charts_and_stale_data(tmp_path: Path) -> None:
    tcp_port, health_port = free_port(), free_port()
    async with SocketModemServer(ModemProfile.preset("generic")) as modem:
        config = write_config(
            tmp_path,
            port=tcp_port,
            registry=SAMPLE_REGISTRY,
            extra=health_section(health_port) + sms_config(modem.url),
        )
        gateway = GatewayProcess(config, tcp_port)
        await gateway.start()
        keys = load_sim_registry(tmp_path / "terminals.toml")
        ids = list(keys)
        steady, low, stopping = ids[:25], ids[25:28], ids[28:32]
        drifting, never_seen = ids[32], ids[33:]
        link = LinkOptions("127.0.0.1", tcp_port, heartbeat_interval=1.0, answer_timeout=20.0)
        options = FleetOptions(pattern=Steady(rate=0), seed=3)
        low_link = LinkOptions("127.0.0.1", tcp_port, heartbeat_interval=1.0, battery_pct=10)
        stop_drifting = asyncio.Event()
        base = f"http://127.0.0.1:{health_port}"
        async with (
            httpx.AsyncClient(base_url=base, timeout=5) as client,
            Fleet({i: keys[i] for i in steady}, link, options) as fleet,
            Fleet({i: keys[i] for i in low}, low_link, options) as low_fleet,
        ):
            drift = asyncio.create_task(
                drifting_terminal(tcp_port, drifting, keys[drifting], stop_drifting)
            )
            async with Fleet({i: keys[i] for i in stopping}, link, options) as quitting:
                await asyncio.gather(
                    fleet.run(presses=1500), low_fleet.run(presses=90), quitting.run(presses=120)
                )
                await fleet.wait_all_acked(timeout=120)
                await quitting.wait_all_acked(timeout=120)
            stopped_at = time.time()  # the quitting terminals are gone from here on

            async def heard_from_all() -> bool:
                seen = await status(client)
                # A press gives a last contact; the battery comes only with a HEARTBEAT,
                # which a loaded machine may deliver later: wait for that too.
                return all(seen[i]["last_contact"] for i in [*steady, *low, drifting]) and all(
                    seen[i].get("battery_pct") is not None for i in low
                )

            await until(heard_from_all, 30, "every running terminal heard from")
            async with console_page(base + "/") as page:
                await page.wait_for_selector('#freshness[data-state="fresh"]', timeout=15_000)
                flags = await row_flags(page)
                assert set(flags) == set(ids)  # every registered terminal, heard from or not
                for tid in never_seen:
                    cell = page.locator(f'tr[data-terminal="{tid}"] [data-col="last_contact"]')
                    assert await cell.inner_text() == "never seen"
                    assert flags[tid] == "never_seen"
                for tid in steady:
                    assert flags[tid] == "", (tid, flags[tid])
                    text = await page.inner_text(
                        f'tr[data-terminal="{tid}"] [data-col="last_contact"]'
                    )
                    assert re.fullmatch(r"\d+ s ago", text), text
                    assert int(text.split()[0]) < REFRESH_S + SILENT_AFTER_S
                for tid in low:
                    assert "low_battery" in flags[tid].split()
                assert "clock_drift" in flags[drifting].split()
                await check_last_contact_of_stopped(page, client, stopping)

                # The stopped terminals go silent; the page shows it within one refresh.
                async def gone_silent() -> bool:
                    seen = await status(client)
                    return all("silent" in seen[i]["flags"] for i in stopping)

                await until(gone_silent, SILENT_AFTER_S + 10, "the gateway flags them silent")
                assert time.time() - stopped_at >= SILENT_AFTER_S
                for tid in stopping:
                    await page.wait_for_selector(
                        f'tr[data-terminal="{tid}"] [data-flag="silent"]',
                        timeout=ONE_REFRESH_S * 1000,
                    )
                order = [int(t) for t in await page.eval_on_selector_all(
                    "#fleet tbody tr", "rows => rows.map(r => r.dataset.terminal)")]  # fmt: skip
                flagged = {*low, *stopping, drifting, *never_seen}
                assert set(order[: len(flagged)]) == flagged  # flagged ones first

                for chart in CHARTS:  # each chart has drawn points, not an empty frame
                    await page.wait_for_selector(
                        f'[data-chart="{chart}"] circle[data-point]', timeout=ONE_REFRESH_S * 1000
                    )
                presses = await page.eval_on_selector_all(
                    '[data-chart="presses"] [data-series="tcp"] circle[data-point]',
                    "dots => dots.map(d => Number(d.dataset.value))",
                )
                assert sum(presses) >= 1500 + 90 + 120
                await page.click('th button[data-sort="id"]')
                await page.click('th button[data-sort="id"]')  # descending
                await assert_sorted_within_groups(page)
                await shot(page, "console.png")

                stop_drifting.set()
                await drift
                assert await gateway.terminate() == 0
                stale = await page.wait_for_selector(
                    '[data-state="stale"]', timeout=(ONE_REFRESH_S + 5) * 1000
                )
                assert stale is not None
                assert "has not answered since" in await stale.inner_text()
                await shot(page, "console-stale.png")


async def check_last_contact_of_stopped(
    page: Page, client: httpx.AsyncClient, stopping: list[int]
) -> None:
    """The stopped terminals' last contact is fixed: the page says it exactly as the gateway."""
    seen = await status(client)
    data_now = float(await page.get_attribute("#fleet", "data-now") or 0)
    for tid in stopping:
        cell = page.locator(f'tr[data-terminal="{tid}"] [data-col="last_contact"]')
        assert float(await cell.get_attribute("data-last-contact") or 0) == pytest.approx(
            seen[tid]["last_contact"]
        )
        assert await cell.inner_text() == ago_text(data_now - seen[tid]["last_contact"])


async def assert_sorted_within_groups(page: Page) -> None:
    rows = await page.eval_on_selector_all(
        "#fleet tbody tr", "rows => rows.map(r => [Number(r.dataset.terminal), r.dataset.flags])"
    )
    flagged = [tid for tid, flags in rows if flags]
    quiet = [tid for tid, flags in rows if not flags]
    assert [t for t, _ in rows] == flagged + quiet
    assert flagged == sorted(flagged, reverse=True)
    assert quiet == sorted(quiet, reverse=True)

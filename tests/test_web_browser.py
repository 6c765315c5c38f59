"""The web smiley page in a real headless Chromium (Debian's, under Playwright).

Presses, follow-ups and the thanks state as a person meets them; the presses
in the export; a network cut with a reload in between, and an acknowledgement
lost on the way back: every press arrives once, with the time it was pressed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path

import pytest
from playwright.async_api import Page, Route

from firmware_sim.harness import free_port
from firmware_sim.harness.browser import headless_chromium
from gateway.stores import StoredPress
from tests.conftest import GatewayHarness
from tests.web_support import WEB_REGISTRY_TOML, web_section

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
# docs/web-smiley.png, in the README, is a copy of web-smiley-360.png.
WAIT_MS = 20_000


@pytest.fixture
async def web(make_harness: Callable[..., GatewayHarness]) -> AsyncIterator[GatewayHarness]:
    h = make_harness(extra=web_section(free_port()), registry=WEB_REGISTRY_TOML)
    await h.start()
    yield h
    await h.stop()


def page_url(h: GatewayHarness, query: str = "") -> str:
    assert h.gateway is not None
    assert h.gateway.config.web is not None
    return f"http://{h.gateway.config.web.listen}/w/helsinki-exit{query}"


async def stored(h: GatewayHarness) -> list[StoredPress]:
    await h.forwarded()
    assert h.gateway is not None
    return [p async for p in h.gateway.store.presses(None, None) if p.terminal_id == 5001]


async def state(page: Page) -> str:
    return str(await page.evaluate(
        "[...document.querySelectorAll('section[data-state]')].find(s => !s.hidden)"
        ".dataset.state"
    ))  # fmt: skip


async def holding(page: Page, count: int) -> None:
    """Wait until the page holds ``count`` unacknowledged presses (a selector: the page's
    Content-Security-Policy forbids the eval that wait_for_function needs)."""
    await page.wait_for_selector(f"body[data-pending='{count}']", state="attached",
                                 timeout=WAIT_MS)  # fmt: skip


async def all_sent(page: Page) -> None:
    await holding(page, 0)


async def test_press_each_button_answer_and_skip_a_followup(web: GatewayHarness) -> None:
    requested: list[str] = []
    async with headless_chromium() as browser:
        page = await browser.new_page(viewport={"width": 360, "height": 640})
        page.on("request", lambda request: requested.append(request.url))
        answer = await page.goto(page_url(web, "?ui=qr"))
        assert answer is not None
        assert answer.status == 200
        assert len(await answer.body()) < 60 * 1024
        assert await page.text_content("h1") == "How was your visit today?"
        labels = [await page.get_attribute(f"[data-button='{n}']", "aria-label")
                  for n in range(1, 5)]  # fmt: skip
        assert labels == ["Very dissatisfied", "Dissatisfied", "Satisfied", "Very satisfied"]
        assert await page.evaluate("document.documentElement.scrollWidth") <= 360
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=ARTIFACTS / "web-smiley-360.png")

        await page.click("[data-button='1']")  # asks the follow-up
        assert await state(page) == "followup"
        assert await page.text_content("#followup-question") == "What could we do better?"
        options = await page.locator("[data-followup]").all_text_contents()
        assert options == ["Queue", "Staff", "Cleanliness", "Prices", "Skip"]
        await page.screenshot(path=ARTIFACTS / "web-smiley-followup-360.png")
        await page.click("[data-followup='2']")  # Staff
        assert await state(page) == "thanks"
        await page.click("[data-action='again']")
        await page.click("[data-button='2']")
        await page.click("[data-followup='0']")  # skipped
        assert await state(page) == "thanks"
        await page.click("[data-action='again']")
        await page.click("[data-button='3']")  # no follow-up after 3
        assert await state(page) == "thanks"
        await page.click("[data-action='again']")
        await page.focus("[data-button='4']")  # by keyboard
        await page.keyboard.press("Enter")
        assert await state(page) == "thanks"
        await all_sent(page)
        await page.set_viewport_size({"width": 1280, "height": 800})
        await page.click("[data-action='again']")
        await page.screenshot(path=ARTIFACTS / "web-smiley-1280.png")
    rows = await stored(web)
    assert [(p.button, p.followup) for p in rows] == [(1, 2), (2, 0), (3, 0), (4, 0)]
    assert {(p.transport, p.precision, p.ui, p.clock_corrected) for p in rows} == {
        ("web", "second", "qr", False)
    }
    assert [p.seq for p in rows] == [0, 1, 2, 3]
    web_host = page_url(web).split("/w/")[0]
    assert all(url.startswith(web_host) for url in requested)  # nothing from elsewhere


async def test_kiosk_returns_to_the_smileys(web: GatewayHarness) -> None:
    async with headless_chromium() as browser:
        page = await browser.new_page(viewport={"width": 1280, "height": 800})
        await page.goto(page_url(web, "?kiosk=1"))
        await page.keyboard.press("3")
        assert await state(page) == "thanks"
        await page.wait_for_selector("section[data-state='smileys']", state="visible",
                                     timeout=WAIT_MS)  # fmt: skip
        await all_sent(page)
    assert [(p.button, p.ui) for p in await stored(web)] == [(3, "digital")]


async def test_offline_presses_arrive_once_with_their_times(web: GatewayHarness) -> None:
    async with headless_chromium() as browser:
        context = await browser.new_context(viewport={"width": 360, "height": 640})
        page = await context.new_page()
        await page.goto(page_url(web, "?ui=link"))
        await context.set_offline(True)
        for button in (3, 4, 3, 4, 3):
            await page.click(f"[data-button='{button}']")
            await page.click("[data-action='again']")
        await holding(page, 5)
        queue = await page.evaluate(
            "JSON.parse(localStorage.getItem('smiley:queue:helsinki-exit')).pending"
        )
        pressed_at = [int(datetime.fromisoformat(p["at"]).timestamp()) for p in queue]

        # Back online, but the first answer is lost on its way back: the press is
        # committed, the page does not know, and sends it again after the reload.
        lost: list[int] = []

        async def lose_the_answer(route: Route) -> None:
            await route.fetch()
            lost.append(1)
            await route.abort()

        await page.route("**/presses", lose_the_answer)
        await context.set_offline(False)
        await holding(page, 5)
        await page.reload()  # the queue is in localStorage
        assert await page.get_attribute("body", "data-pending") == "5"
        await page.unroute("**/presses")
        await all_sent(page)
        await page.reload()
        assert await page.get_attribute("body", "data-pending") == "0"
        assert lost
    rows = await stored(web)
    assert [(p.button, p.occurred_at, p.ui) for p in rows] == [
        (b, t, "link") for b, t in zip((3, 4, 3, 4, 3), pressed_at, strict=True)
    ]
    assert [p.seq for p in rows] == [0, 1, 2, 3, 4]

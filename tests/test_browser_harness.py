"""The system Chromium starts headless under Playwright and runs a page's script."""

from __future__ import annotations

from firmware_sim.harness.browser import headless_chromium


async def test_system_chromium_renders_a_page_and_runs_its_script() -> None:
    async with headless_chromium() as browser:
        page = await browser.new_page(viewport={"width": 360, "height": 640})
        await page.set_content(
            "<button data-button='1' onclick=\"this.dataset.state='pressed'\">1</button>"
        )
        await page.click("[data-button='1']")
        assert await page.get_attribute("[data-button='1']", "data-state") == "pressed"
        assert await page.evaluate("window.innerWidth") == 360

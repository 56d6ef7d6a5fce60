"""The Monitoring page in Debian's Chromium (Playwright), on the drift demo: alerts first, the charts drawn,
nothing wider than a phone. Screenshots at 1440 and 390 pixels land in artifacts/browser/."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from playwright import sync_api  # a missing Playwright fails the run, never skips it

from tests.test_monitoring import logged_warehouse

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "app"
sys.path.insert(0, str(FIXTURES))
import browser  # noqa: E402

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    if not Path(browser.CHROMIUM).exists():
        pytest.fail("Chromium missing: apt-get install chromium (make test does it)")
    demo = logged_warehouse(tmp_path_factory.mktemp("monitoring_browser"), 20_000, seed=7, scenario="drift")
    logs = tmp_path_factory.mktemp("logs")
    with browser.serve_app(demo.root, model_dir=demo.model_dir, audit_log=logs / "audit.jsonl",
                           extra_env={"READMIT_DATABASE_URL": demo.url},
                           log_path=logs / "streamlit.log") as url:
        yield url


@pytest.mark.parametrize("width, height", [(1440, 1000), (390, 844)])
def test_monitoring_page_shows_alerts_then_charts(served, width, height):
    browser.ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = browser.ARTIFACTS / f"monitoring_{width}.png"
    with sync_api.sync_playwright() as playwright:
        chromium = browser.launch(playwright)
        page = chromium.new_context(viewport={"width": width, "height": height}).new_page()
        page.set_default_timeout(120_000)
        try:
            page.goto(f"{served}/Monitoring")
            page.get_by_text("Performance over time").wait_for()
            browser.wait_app_idle(page, timeout=120_000)
            page.locator(".js-plotly-plot").nth(3).wait_for()
            body = page.locator("[data-testid='stMain']").inner_text()
            assert body.index("Alerts") < body.index("Performance over time") < body.index("Calibration by period")
            assert "Calibration: observed readmissions in" in body and "(act)" in body
            assert "diagnoses recorded (number_diagnoses, PSI" in body
            assert "No API traffic" in body
            assert page.locator("[data-testid='stException']").count() == 0
            assert page.locator(".js-plotly-plot").count() >= 5
            overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 1, f"the page is {overflow}px wider than the window"
        finally:
            # Streamlit scrolls inside its main block: grow the window to the page to shoot all of it
            tall = page.evaluate("() => document.querySelector('[data-testid=stMain]')?.scrollHeight || 0")
            page.set_viewport_size({"width": width, "height": max(height, int(tall))})
            page.wait_for_timeout(1500)
            page.screenshot(path=str(shot), full_page=True)
            chromium.close()

"""The daily worklist in Debian's Chromium (Playwright): today's list holds only discharges in the window,
the call list holds exactly the capacity, a coordinator records "Follow-up booked" and the patient moves to
Handled, Back and the sidebar return to the same filters and page, a second session sees the event, and the
phone layout shows rank, patient, risk and the first reason. Screenshots land in artifacts/browser/."""
from __future__ import annotations

import csv
import datetime as dt
import io
import re
import sys
from pathlib import Path

import pytest
from playwright import sync_api  # a missing Playwright fails the run, never skips it

from core.warehouse import Warehouse
from serving import worklist

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "app"
sys.path.insert(0, str(FIXTURES))
import browser  # noqa: E402
import make_warehouse  # noqa: E402

pytestmark = pytest.mark.browser
CALLS = 7
WINDOW = 30


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    if not Path(browser.CHROMIUM).exists():
        pytest.fail("Chromium missing: apt-get install chromium (make test does it)")
    wh = make_warehouse.build(tmp_path_factory.mktemp("wh_worklist_browser"), patients=500, seed=11)
    logs = tmp_path_factory.mktemp("logs")
    env = {"READMIT_DATABASE_URL": f"sqlite:///{logs / 'operational.sqlite3'}"}
    with browser.serve_app(wh, audit_log=logs / "audit.jsonl", log_path=logs / "streamlit.log", extra_env=env) as url:
        yield url, wh


@pytest.fixture(scope="module")
def chromium():
    with sync_api.sync_playwright() as playwright:
        launched = browser.launch(playwright)
        yield launched
        launched.close()


def new_tab(chromium, width: int = 1440, height: int = 1000):
    context = chromium.new_context(viewport={"width": width, "height": height}, accept_downloads=True)
    tab = context.new_page()
    tab.set_default_timeout(60_000)
    return context, tab


def settle(tab, text: str) -> None:
    tab.get_by_text(text).first.wait_for()
    browser.wait_app_idle(tab, 60_000)


def shot(tab, name: str) -> None:
    browser.ARTIFACTS.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(browser.ARTIFACTS / f"{name}.png"))


def in_window(wh: Path, as_of: dt.date) -> int:
    """Patients with a discharge on the date or the 29 days before, straight from the encounters table."""
    return int(Warehouse(str(wh)).query(
        "SELECT count(DISTINCT patient_id) AS n FROM encounters WHERE discharge_time::DATE BETWEEN ? AND ?",
        [as_of - dt.timedelta(days=WINDOW - 1), as_of])["n"].iloc[0])


def choose(tab, label: str, option: str, scope=None) -> None:
    """Pick `option` in the select box or multiselect labelled `label` (its combobox opens on a click, or on
    the down arrow when a rerun closed it again)."""
    box = (scope or tab).locator("[data-testid=stSelectbox], [data-testid=stMultiSelect]").filter(has_text=label)
    field = box.first.locator("[role=combobox]").first
    wanted = tab.get_by_role("option", name=option, exact=True)
    for _ in range(3):
        field.click()
        if field.get_attribute("aria-expanded") != "true":
            tab.keyboard.press("ArrowDown")
        try:
            wanted.wait_for(timeout=5_000)
            break
        except sync_api.TimeoutError:
            tab.keyboard.press("Escape")
    wanted.click()
    tab.keyboard.press("Escape")


def test_daily_worklist_call_list_outreach_back_and_a_second_session(served, chromium):
    url, wh = served
    as_of = worklist.WorklistIndex(Warehouse(str(wh))).latest_discharge
    context, tab = new_tab(chromium)
    step = "today"
    try:
        tab.goto(f"{url}/Worklist?calls={CALLS}")
        settle(tab, f"Today's call list for {as_of:%Y-%m-%d}: {CALLS} patients")
        counts = tab.get_by_test_id("stButtonGroup").inner_text()
        opened, handled = (int(n.replace(",", "")) for n in re.findall(r"\((\d[\d,]*)\)", counts))
        assert opened + handled == in_window(wh, as_of)          # only discharges in the window, one per patient
        shot(tab, "worklist_1440")

        step = "download"
        with tab.expect_download() as info:
            tab.get_by_role("button", name="Download today's call list (CSV)").click()
        rows = list(csv.DictReader(io.StringIO(Path(info.value.path()).read_text())))
        assert len(rows) == CALLS and [int(r["rank"]) for r in rows] == list(range(1, CALLS + 1))
        for row in rows:
            assert 0 <= (as_of - dt.date.fromisoformat(row["discharge_date"])).days < WINDOW
            assert int(row["days_since_discharge"]) < WINDOW

        step = "filter and page"
        choose(tab, "Sex", "Female", tab.get_by_test_id("stSidebar"))
        settle(tab, "match the filters")
        tab.get_by_role("button", name="Next ▶").click()
        settle(tab, "Page 2 of")
        assert "sex=Female" in tab.url and "page=2" in tab.url
        view = tab.get_by_text(re.compile(r"^Page 2 of \d+ · [\d,]+ patients match the filters$")).inner_text()

        step = "open and back"
        tab.get_by_role("button", name="Open patient").click()
        settle(tab, "Back to the worklist")
        assert "/Patient?encounter=" in tab.url
        tab.go_back()
        settle(tab, view)
        assert "sex=Female" in tab.url and "page=2" in tab.url
        assert "Female" in tab.get_by_test_id("stSidebar").inner_text()

        step = "record"
        tab.goto(f"{url}/Worklist?calls={CALLS}&call_list=true")
        settle(tab, f"{CALLS} patients match the filters")
        patient = rows[0]["patient_id"]
        tab.get_by_role("button", name="Open patient").click()
        settle(tab, f"Patient {patient}")
        tab.get_by_text(f"On the call list for {as_of:%Y-%m-%d}: rank 1 of {CALLS} patients to call.").wait_for()
        choose(tab, "Result", "Follow-up booked")
        tab.get_by_label("Note (optional)").fill("Reached; follow-up booked with the GP on Friday")
        tab.get_by_role("button", name="Save").click()
        settle(tab, f"Handled on the worklist for {as_of:%Y-%m-%d}: Follow-up booked.")
        history = tab.get_by_test_id("stTable").last.inner_text()
        assert "Follow-up booked" in history and "demo (not signed in)" in history

        step = "handled"
        tab.get_by_role("link", name="Back to the worklist").click()
        settle(tab, f"{CALLS} patients match the filters")             # the call list view, restored
        assert "call_list=true" in tab.url and f"calls={CALLS}" in tab.url
        assert f"Today's call list for {as_of:%Y-%m-%d}: {CALLS} patients" in tab.content()
        tab.get_by_test_id("stButtonGroup").locator("button", has_text="Handled").click()
        settle(tab, "the latest outreach first")
        tab.get_by_label("Find a patient or encounter id").fill(patient)
        tab.keyboard.press("Enter")
        settle(tab, "Handled: 1 match")
        shot(tab, "handled_1440")
    except Exception:
        shot(tab, f"worklist-{step}")
        raise
    finally:
        context.close()

    step = "second session"
    context, other = new_tab(chromium)
    try:
        other.goto(f"{url}/Worklist?calls={CALLS}&q={patient}")
        settle(other, "Handled: 1 match")
        other.goto(f"{url}/Patient?encounter={rows[0]['encounter_id']}")
        settle(other, f"Patient {patient}")
        history = other.get_by_test_id("stTable").last.inner_text()
        assert "Follow-up booked" in history and "Reached; follow-up booked with the GP on Friday" in history
    except Exception:
        shot(other, f"worklist-{step}")
        raise
    finally:
        context.close()


def test_phone_shows_rank_patient_risk_and_first_reason(served, chromium):
    url, wh = served
    context, tab = new_tab(chromium, 390, 2400)
    try:
        tab.goto(f"{url}/Worklist?calls={CALLS}")
        settle(tab, f"{CALLS} patients")
        table = tab.get_by_test_id("stTable")
        assert table.is_visible() and not tab.locator(".st-key-wl_desktop").is_visible()
        head = table.locator("thead").inner_text().split()
        assert head == ["Rank", "Patient", "Risk", "Main", "reason"]
        first = table.locator("tbody tr").first.inner_text()
        assert re.match(r"^1\s+P\d{6}\s+\d+\.\d%\s+\S", first)
        shot(tab, "worklist_390")
        tab.get_by_test_id("stButtonGroup").locator("button", has_text="Handled").click()
        settle(tab, "the latest outreach first")
        shot(tab, "handled_390")
    finally:
        context.close()
    context, wide = new_tab(chromium)
    try:
        wide.goto(f"{url}/Worklist?calls={CALLS}")
        settle(wide, f"{CALLS} patients")
        assert not wide.get_by_test_id("stTable").is_visible() and wide.locator(".st-key-wl_desktop").is_visible()
    finally:
        context.close()

"""Capture every dashboard page as a PNG (docs/screenshots/) from a running app, and time the loads.

    readmit app --port 8501 &                      # or readmit demo
    python scripts/screenshots.py --url http://127.0.0.1:8501 [--out docs/screenshots] [--measure 3]
    python scripts/screenshots.py --pages home,patient --widths 1440,390   # some pages, desktop and phone

Drives Debian's Chromium through Playwright (executable /usr/bin/chromium). Each page is saved at each
width: NAME.png at 1440 px (the README's), NAME_phone.png at 390 px (a phone; the whole page). With --measure N it
loads the Worklist N times in fresh browser sessions and prints the time until the ranked table is
drawn, then the time to apply a filter and to turn a page, as the load-time figures in docs/dashboard.md.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-dev-shm-usage", "--disable-extensions", "--no-first-run", "--mute-audio"]
# (file name, URL path, text that says the page is drawn)
PAGES = (
    ("home.png", "/", "Eligible discharges scored"),
    ("worklist.png", "/Worklist", "ranked by predicted 30-day readmission risk"),
    ("patient.png", None, "Main reasons for this score"),
    ("upload.png", "/Upload", "Problems found"),
    ("model_quality.png", "/Model_quality", "AUROC, transformer"),
    ("hospitals.png", "/Hospitals", "Excess readmission ratio by measure"),
)
UPLOAD = ROOT / "tests" / "fixtures" / "app" / "upload_one_bad_row.csv"


def settle(page, text: str, timeout: float = 90_000) -> None:
    page.get_by_text(text).first.wait_for(timeout=timeout)
    page.wait_for_function(
        "() => { const app = document.querySelector('[data-testid=\"stApp\"]');"
        " return app && app.getAttribute('data-test-script-state') === 'notRunning'"
        " && !document.querySelector('[data-testid=\"stSkeleton\"]'); }", timeout=timeout)
    page.wait_for_timeout(300)


PHONE_WIDTH = 390
TALLEST = 6000


def whole_page(page, width: int) -> None:
    """Grow the viewport to the page's height: Streamlit scrolls inside its main block, not the document, so
    Playwright's full_page screenshot would stop at the first screen."""
    height = page.evaluate("() => { const main = document.querySelector('[data-testid=\"stMain\"]');"
                           " return Math.max(main ? main.scrollHeight : 0, document.body.scrollHeight); }")
    if height > page.viewport_size["height"]:
        page.set_viewport_size({"width": width, "height": min(int(height), TALLEST)})
        page.wait_for_timeout(1500)   # charts redraw at the new size


def file_name(name: str, width: int) -> str:
    return name if width != PHONE_WIDTH else name.replace(".png", "_phone.png")


def capture(url: str, out: Path, names: tuple[str, ...] = (), widths: tuple[int, ...] = (1440,)) -> None:
    """Save the pages named (all when none: 'home', 'patient', ...) at each width."""
    out.mkdir(parents=True, exist_ok=True)
    chosen = [p for p in PAGES if not names or p[0].removesuffix(".png") in names]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        for width in widths:
            phone = width == PHONE_WIDTH
            viewport = {"width": width, "height": 844 if phone else 1000}
            context = browser.new_context(viewport=viewport, device_scale_factor=1)
            page = context.new_page()
            for name, path, marker in chosen:
                if name == "patient.png":   # the top of today's call list, opened as a coordinator would
                    page.goto(url + "/Worklist")
                    settle(page, "ranked by predicted 30-day readmission risk")
                    page.get_by_role("button", name="Open patient").click()
                else:
                    page.goto(url + path)
                    if name == "upload.png":
                        settle(page, "Nothing you upload is stored")
                        page.locator("input[type=file]").set_input_files(str(UPLOAD))
                settle(page, marker)
                page.wait_for_timeout(1500)  # charts finish their entry transition
                if phone or name != "worklist.png":
                    whole_page(page, width)
                target = out / file_name(name, width)
                page.screenshot(path=str(target))
                print(f"saved {target}")
                page.set_viewport_size(viewport)
            context.close()
        browser.close()


def measure(url: str, runs: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"worklist_first_load": [], "filter_very_high": [], "next_page": []}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        for _ in range(runs):
            context = browser.new_context(viewport={"width": 1440, "height": 1000})
            page = context.new_page()
            start = time.perf_counter()
            page.goto(url + "/Worklist")
            settle(page, "ranked by predicted 30-day readmission risk")
            page.get_by_test_id("stDataFrame").first.wait_for()
            times["worklist_first_load"].append(time.perf_counter() - start)
            start = time.perf_counter()
            page.get_by_role("button", name="Next ▶").click()
            settle(page, "Page 2 of")
            times["next_page"].append(time.perf_counter() - start)
            start = time.perf_counter()
            page.get_by_test_id("stSidebar").get_by_test_id("stMultiSelect").first.click()
            page.get_by_role("option", name="Very high").click()
            page.keyboard.press("Escape")
            settle(page, "Page 1 of")
            times["filter_very_high"].append(time.perf_counter() - start)
            context.close()
        browser.close()
    for name, values in times.items():
        print(f"{name}: median {statistics.median(values):.2f} s, min {min(values):.2f} s, max {max(values):.2f} s "
              f"over {len(values)} sessions")
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8501")
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    parser.add_argument("--measure", type=int, default=0, help="time N fresh Worklist sessions")
    parser.add_argument("--pages", default="", help="comma-separated page names (home, worklist, patient, upload, "
                        "model_quality, hospitals); default all")
    parser.add_argument("--widths", default="1440", help=f"comma-separated viewport widths in px; {PHONE_WIDTH} "
                        "saves NAME_phone.png")
    parser.add_argument("--no-capture", action="store_true")
    args = parser.parse_args(argv)
    if not args.no_capture:
        names = tuple(n.strip() for n in args.pages.split(",") if n.strip())
        unknown = set(names) - {p[0].removesuffix(".png") for p in PAGES}
        if unknown:
            parser.error(f"unknown page(s): {', '.join(sorted(unknown))}")
        capture(args.url.rstrip("/"), Path(args.out), names, tuple(int(w) for w in args.widths.split(",")))
    if args.measure:
        measure(args.url.rstrip("/"), args.measure)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The sign-in flow once, for real: Streamlit's st.login against oidc-provider-mock on loopback, in
Chromium. Real (non-synthetic) data: nothing is shown before sign-in; after it, the worklist and a
patient view, which is audited under the signed-in identity; then sign-out."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from playwright import sync_api  # a missing Playwright fails the run, never skips it

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "app"
sys.path.insert(0, str(FIXTURES))
import browser  # noqa: E402
import make_warehouse  # noqa: E402

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def provider():
    port = browser.free_port()
    process = subprocess.Popen([sys.executable, "-m", "oidc_provider_mock", "--port", str(port), "--host", "127.0.0.1"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        browser.wait_http(f"http://127.0.0.1:{port}/.well-known/openid-configuration", process=process)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_sign_in_with_oidc_then_audited_patient_view(provider, tmp_path):
    wh = make_warehouse.build(tmp_path / "wh", patients=80, seed=5, source="mimic4")
    port = browser.free_port()
    secrets = tmp_path / "secrets.toml"
    secrets.write_text(f"""[auth]
redirect_uri = "http://127.0.0.1:{port}/oauth2callback"
cookie_secret = "test-only-cookie-secret-0123456789abcdef"
client_id = "readmit-dashboard"
client_secret = "test-only-client-secret"
server_metadata_url = "{provider}/.well-known/openid-configuration"
""")
    audit_log = tmp_path / "audit.jsonl"
    with browser.serve_app(wh, port=port, secrets_file=secrets, audit_log=audit_log,
                           log_path=tmp_path / "streamlit.log") as url, sync_api.sync_playwright() as playwright:
        chromium = browser.launch(playwright)
        page = chromium.new_page(viewport={"width": 1300, "height": 900})
        page.set_default_timeout(30_000)
        try:
            page.goto(url + "/Worklist")
            page.get_by_role("button", name="Sign in").wait_for()
            assert "ranked by predicted" not in page.content()
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(f"{provider}/**")
            page.locator("input[name=sub]").fill("coordinator@example.org")
            page.get_by_role("button", name="Authorize").click()
            page.wait_for_url(f"{url}/**")
            page.get_by_text("Signed in as").wait_for()
            assert "coordinator@example.org" in page.get_by_test_id("stSidebar").inner_text()
            page.get_by_role("link", name="Worklist").first.click()
            page.get_by_role("button", name="Open patient").click()
            page.get_by_text("Main reasons for this score").wait_for()
            page.get_by_role("button", name="Sign out").click()
            page.wait_for_url(f"{provider}/**")  # the provider's end-session page (OIDC RP-initiated logout)
            page.get_by_role("button", name="End session").click()
            page.wait_for_url(f"{url}/**")
            page.get_by_role("button", name="Sign in").wait_for()
            assert "ranked by predicted" not in page.content()
        except Exception:
            browser.ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(browser.ARTIFACTS / "signin-oidc.png"), full_page=True)
            raise
        finally:
            chromium.close()
    records = [json.loads(line) for line in audit_log.read_text().splitlines()]
    assert records and records[-1]["action"] == "view_patient"
    assert records[-1]["user"] == "coordinator@example.org"
    # the application log never carries who looked at which patient
    app_log = (tmp_path / "streamlit.log").read_text()
    assert records[-1]["patient_id"] not in app_log

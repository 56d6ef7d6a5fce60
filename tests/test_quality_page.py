"""The Model quality page for a quality manager: plain names and rounding, every AUROC named with its data
and size, one operating point (the call list at the team's capacity) on every tab, the palette only, the
card without its YAML header. AppTest over the fake warehouse with the shipped model folder, and Debian's
Chromium at 1440 and 390 px (screenshots in artifacts/quality/)."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from playwright import sync_api  # a missing Playwright fails the run, never skips it
from streamlit.testing.v1 import AppTest

from core.warehouse import Warehouse
from serving import figures
from serving import quality as q

ROOT = Path(__file__).resolve().parent.parent
CHAMPION = ROOT / "models" / "champion"
PAGE = "pages/4_Model_quality.py"
sys.path.insert(0, str(ROOT / "tests" / "fixtures" / "app"))
import browser  # noqa: E402
import make_warehouse  # noqa: E402

RAW_WORDS = re.compile(r"\b(None|nan|NaN|brier|ece|auroc_ci|mllib_gbt_[a-z]+)\b")
THREE_DECIMALS = re.compile(r"^\d\.\d{3}$")
ALLOWED_COLOURS = set(figures.PALETTE) | {figures.NEUTRAL, "#999", "#999999"}


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory) -> Path:
    return make_warehouse.build(tmp_path_factory.mktemp("wh_quality"), patients=1500, seed=5)


@pytest.fixture()
def env(monkeypatch, tmp_path, warehouse):
    monkeypatch.setenv("READMIT_WAREHOUSE", str(warehouse))
    monkeypatch.setenv("READMIT_MODEL_DIR", str(CHAMPION))
    monkeypatch.setenv("READMIT_AUDIT_LOG", str(tmp_path / "audit.jsonl"))
    monkeypatch.setenv("READMIT_DATABASE_URL", f"sqlite:///{tmp_path / 'operational.sqlite3'}")
    monkeypatch.delenv("READMIT_IDLE_MINUTES", raising=False)
    return tmp_path


def quality_page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    return at


def texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [i.value for i in at.info] \
        + [s.value for s in at.subheader] + [m.label for m in at.metric] + [str(m.value) for m in at.metric]
    return "\n".join(str(p) for p in parts)


def charts(at: AppTest) -> dict[str, dict]:
    return {c.proto.id.rsplit("-", 1)[-1] if c.proto.id else str(i): json.loads(c.proto.spec)
            for i, c in enumerate(at.get("plotly_chart"))}


# --- pure pieces --------------------------------------------------------------------------------

def test_formatting_rules():
    assert q.number(0.67322) == "0.673" and q.number(None) == q.NOT_AVAILABLE and q.number(float("nan")) == q.NOT_AVAILABLE
    assert q.percent(0.1774) == "17.7%" and q.interval([0.65655, 0.68936]) == "0.657 to 0.689"
    assert q.interval(None) == "" and q.with_interval(0.6732, [0.6566, 0.6894]) == "0.673 (0.657 to 0.689)"
    card = "---\nlicense: cc-by-4.0\ntags:\n- healthcare\n---\n\n# Title\n\nBody"
    assert q.strip_front_matter(card) == "# Title\n\nBody" and q.strip_front_matter("# Title") == "# Title"


def test_comparison_table_is_plain_and_rounded():
    report = json.loads((CHAMPION / "metrics.json").read_text())
    table = q.comparison_table(report["comparison"])
    assert list(table.columns) == ["model", "What it is", "Encounters", "AUROC (95% interval)", "AUPRC", "Brier score",
                                   "Calibration error (ECE)", "Calibration slope"]
    assert table.loc[0, "AUROC (95% interval)"] == "0.673 (0.657 to 0.689)" and table.loc[0, "Encounters"] == "12,767"
    assert all(THREE_DECIMALS.match(v) for v in table["Brier score"]) and "LACE index" in set(table["What it is"])
    partial = q.comparison_table([{"model": "lace", "auroc": 0.61, "n": 100}])
    assert partial.loc[0, "Brier score"] == q.NOT_AVAILABLE and partial.loc[0, "AUROC (95% interval)"] == "0.610"


def test_headline_names_data_and_size():
    info = q.model_info(str(CHAMPION))
    assert info.headline.text == ("AUROC 0.673 (95% interval 0.657 to 0.689) on the 12,767 held-out test "
                                  "encounters in metrics.json")
    assert not info.card_body.startswith("---") and "model-index" not in info.card_body
    assert set(info.figures) == {"roc", "reliability", "subgroup_race", "subgroup_sex", "subgroup_age_band"}


def test_metrics_of_another_model_version_are_called_stale(tmp_path):
    for name in ("config.json", "manifest.json", "metrics.json"):
        (tmp_path / name).write_text((CHAMPION / name).read_text())
    info = q.model_info(str(tmp_path))
    report = json.loads((CHAMPION / "metrics.json").read_text())
    (tmp_path / "metrics.json").write_text(json.dumps({**report, "model_version": info.version}))
    assert q.model_info(str(tmp_path)).stale is None
    (tmp_path / "metrics.json").write_text(json.dumps({**report, "model_version": "readmit-transformer@000000000000"}))
    stale = q.model_info(str(tmp_path)).stale
    assert "readmit-transformer@000000000000" in stale and info.version in stale and "readmit evaluate" in stale


def test_one_operating_point_the_curve_passes_through(warehouse):
    view = q.quality_view(Warehouse(str(warehouse)), 0.2)
    cm = view.confusion
    assert cm["flagged_fraction"] == pytest.approx((cm["tp"] + cm["fp"]) / view.n)
    on_curve = view.capacity_curve[view.capacity_curve["fraction"] == cm["flagged_fraction"]].iloc[0]
    assert on_curve["ppv"] == pytest.approx(cm["precision"]) and on_curve["sensitivity"] == pytest.approx(cm["recall"])
    table = q.subgroup_table(view.subgroups)
    assert list(table.columns)[:3] == ["Group", "Level", "Note"] and not table.isna().any().any()
    assert not RAW_WORDS.search(table.to_string())
    confusion = q.confusion_table(cm)
    assert confusion.loc["Called", "Readmitted within 30 days"].startswith(f"{cm['tp']:,} (")


# --- the page (AppTest) -------------------------------------------------------------------------

def test_every_auroc_is_named_with_its_data_and_size(env):
    at = quality_page()
    shown = texts(at)
    labels = {m.label: m.value for m in at.metric}
    assert labels["AUROC, held-out test set"] == "0.673"
    assert "AUROC 0.673 (95% interval 0.657 to 0.689) on the 12,767 held-out test encounters in metrics.json" in shown
    warehouse_auroc = labels["AUROC, transformer"]
    assert THREE_DECIMALS.match(warehouse_auroc) and THREE_DECIMALS.match(labels["AUROC, LACE index"])
    assert re.search(rf"AUROC {warehouse_auroc} \(95% interval \d\.\d{{3}} to \d\.\d{{3}}\) on the [\d,]+ labelled "
                     r"encounters in this warehouse", shown)
    assert not RAW_WORDS.search(shown)


def test_tables_have_plain_names_no_index_and_no_missing_words(env):
    at = quality_page()
    for frame in at.dataframe:
        table = frame.value
        assert not RAW_WORDS.search(" ".join(map(str, table.columns))), table.columns
        assert not RAW_WORDS.search(table.astype(str).to_string(index=False))
        assert json.loads(frame.proto.columns)["_index"]["hidden"] is True     # no 0, 1, 2 ... column
    comparison = next(f.value for f in at.dataframe if "What it is" in f.value.columns)
    assert {"Brier score", "Calibration error (ECE)"} <= set(comparison.columns)
    assert all(re.fullmatch(r"\d\.\d{3} \(\d\.\d{3} to \d\.\d{3}\)", v) for v in comparison["AUROC (95% interval)"])


def test_confusion_matrix_and_capacity_chart_show_the_same_call_list(env):
    at = quality_page()
    metrics = {m.label: m.value for m in at.metric}
    counts = at.table[0].value
    called, readmitted = counts.loc["Called", "Total"], counts.loc["Total", "Readmitted within 30 days"]
    tp = int(counts.loc["Called", "Readmitted within 30 days"].split(" ")[0].replace(",", ""))
    n_called, n_readmitted = (int(v.split(" ")[0].replace(",", "")) for v in (called, readmitted))
    assert metrics["PPV"] == q.percent(tp / n_called) and metrics["Sensitivity"] == q.percent(tp / n_readmitted)
    capacity = next(spec for spec in charts(at).values()
                    if any(trace.get("legendgroup") == "point" for trace in spec["data"]))
    point = [trace for trace in capacity["data"] if trace.get("legendgroup") == "point"]
    assert [t["text"][0] for t in point] == [metrics["PPV"], metrics["Sensitivity"]]
    assert point[0]["x"][0] == pytest.approx(100 * n_called / int(counts.loc["Total", "Total"].split(" ")[0].replace(",", "")))
    shown = texts(at)
    calls = re.search(r"At (\d+) calls a day", shown).group(1)
    assert f"{calls} calls a day (risk ≥" in point[0]["name"]
    cut_off = re.search(r"risk of (\d+\.\d%) or more", shown).group(1)
    assert shown.count(f"risk of {cut_off} or more ({calls} calls a day)") >= 2   # capacity and subgroup tabs


def test_palette_only_and_no_red_beside_green(env):
    at = quality_page()
    for spec in charts(at).values():
        for trace in spec["data"]:
            for colour in (trace.get("line", {}).get("color"), trace.get("marker", {}).get("color")):
                assert colour is None or colour in ALLOWED_COLOURS, (trace.get("name"), colour)
    source = (ROOT / PAGE).read_text()
    assert "#FFF1D6" not in source and "st.success" not in source and "figures.HIGHLIGHT" in source


def test_card_tab_shows_the_card_without_its_yaml_header(env):
    at = quality_page()
    card = next(m.value for m in at.markdown if "readmit-transformer: 30-day" in m.value)
    assert card.startswith("# readmit-transformer") and "license: cc-by-4.0" not in card
    assert "## ONC HTI-1 source attributes" in card


def test_folder_without_metrics_says_so(env, monkeypatch):
    folder = env / "model"
    folder.mkdir()
    (folder / "README.md").write_text("---\nlicense: cc-by-4.0\n---\n# Model card\n\nIntended use: calls.")
    monkeypatch.setenv("READMIT_MODEL_DIR", str(folder))
    at = quality_page()
    assert "readmit evaluate" in texts(at) and "AUROC, held-out test set" not in {m.label for m in at.metric}
    assert any(m.value.startswith("# Model card") for m in at.markdown)


# --- Chromium -----------------------------------------------------------------------------------

OVERFLOW = """() => {
  const main = document.querySelector('[data-testid="stMain"]');
  return {scrollWidth: document.documentElement.scrollWidth, width: window.innerWidth,
          text: main.innerText, height: main.scrollHeight};
}"""


@pytest.mark.browser
def test_page_in_chromium_at_desktop_and_phone_width(warehouse, tmp_path):
    if not Path(browser.CHROMIUM).exists():
        pytest.fail("Chromium missing: apt-get install chromium (make test does it)")
    shots = browser.ROOT / "artifacts" / "quality"
    shots.mkdir(parents=True, exist_ok=True)
    with browser.serve_app(warehouse, log_path=tmp_path / "streamlit.log") as url, \
            sync_api.sync_playwright() as playwright:
        chromium = browser.launch(playwright)
        try:
            for width in (1440, 390):
                page = chromium.new_page(viewport={"width": width, "height": 1000})
                page.set_default_timeout(90_000)
                page.goto(f"{url}/Model_quality")
                browser.wait_app_idle(page, 120_000)
                for tab in ("Discrimination", "Capacity and threshold", "Subgroups"):
                    page.get_by_role("tab", name=tab).click()
                    browser.wait_app_idle(page)
                    drawn = page.evaluate(OVERFLOW)
                    page.set_viewport_size({"width": width, "height": int(drawn["height"]) + 40})
                    page.wait_for_timeout(1500)
                    page.screenshot(path=str(shots / f"model_quality_{width}_{tab.split()[0].lower()}.png"),
                                    full_page=True)
                    page.set_viewport_size({"width": width, "height": 1000})
                    assert drawn["scrollWidth"] <= width, f"the page scrolls sideways at {width} px"
                    assert not RAW_WORDS.search(drawn["text"]), RAW_WORDS.search(drawn["text"])
                page.close()
        finally:
            chromium.close()
    assert (shots / "model_quality_1440_discrimination.png").exists()

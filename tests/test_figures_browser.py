"""The Patient page's contribution waterfall (`serving.figures.contributions_figure`), as a figure and as
Debian's Chromium draws it at a desktop (1440 px) and a phone (390 px) width. Screenshots land in
artifacts/figures/."""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest
from playwright import sync_api  # a missing Playwright fails the run, never skips it

from serving.figures import CONTRIBUTION_TOP, LABEL_WRAP, LOWERS, RAISES, contributions_figure

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "app"
sys.path.insert(0, str(FIXTURES))
import browser  # noqa: E402

ARTIFACTS = browser.ROOT / "artifacts" / "figures"
TEXTS = [  # as serving.patient.contributions words them: some far longer than one line
    ("comorbidities", "Charlson comorbidity index 3 from the diagnosis codes in these records; 6 diagnoses entered "
                      "(reported on the record)", 0.121),
    ("earlier_stays", "No earlier stay in these records", -0.051),
    ("a1c", "HbA1c not measured", 0.0488),
    ("medications", "14 medications during the stay", -0.0392),
    ("diabetes_medications", "Diabetes medications: insulin dose unchanged", 0.0383),
    ("length_of_stay", "Stayed 13 days", 0.0363),
    ("dx_1", "Main diagnosis: heart failure (circulatory system conditions)", -0.0316),
    ("prior_visits", "3 inpatient stays and 0 emergency visits in the year before this admission (reported on the "
                     "record)", 0.0306),
    ("age", "Age 70 years", 0.0269),
    ("discharge", "Discharged home", -0.0061),
    ("admission", "Admitted through the emergency room", 0.0004),
]


def contributions() -> pd.DataFrame:
    rows = [{"feature": f, "label": f.replace("_", " "), "value": text, "text": text, "contribution": c}
            for f, text, c in TEXTS]
    return pd.DataFrame(rows).sort_values("contribution", key=abs, ascending=False).reset_index(drop=True)


def test_waterfall_in_percent_points_top_factors_and_wrapped_labels():
    fig = contributions_figure(contributions(), 0.11)
    trace = fig.data[0]
    assert list(trace.measure) == ["absolute"] + ["relative"] * (CONTRIBUTION_TOP + 1) + ["total"]
    assert trace.x[0] == pytest.approx(11.0) and trace.x[1] == pytest.approx(12.1)
    assert trace.x[-2] == pytest.approx(100 * (0.0269 - 0.0061 + 0.0004))  # all other factors, summed
    labels = [a.text for a in fig.layout.annotations if a.xref == "paper"]
    values = [a.text for a in fig.layout.annotations if a.xref != "paper"]
    assert labels[0] == "Average patient" and labels[-2] == "All other factors (3)" and labels[-1] == "This patient"
    assert all(len(line) <= LABEL_WRAP for label in labels for line in label.split("<br>"))
    assert "<br>" in labels[1]                                            # the long one is wrapped, not cut
    risk = 11.0 + 100 * sum(c for _, _, c in TEXTS)
    assert values[0] == "11.0%" and values[1] == "+12.1 pts" and values[2] == "-5.1 pts"
    assert values[-1] == f"{risk:.1f}%"
    assert trace.increasing.marker.color == RAISES and trace.decreasing.marker.color == LOWERS
    short = contributions_figure(contributions().head(2), 0.11)
    assert short.layout.height < fig.layout.height                       # height follows the rows and lines


def test_waterfall_without_contributions_or_base_risk_still_draws():
    empty = pd.DataFrame(columns=["feature", "label", "value", "text", "contribution"])
    fig = contributions_figure(empty, None)
    assert [a.text for a in fig.layout.annotations if a.xref != "paper"] == ["0.0%", "0.0%"]


MEASURE = """() => {
  const texts = [...document.querySelectorAll('.main-svg text')].filter(t => t.textContent.trim());
  const svg = document.querySelector('.main-svg').getBoundingClientRect();
  const outside = texts.filter(t => { const b = t.getBoundingClientRect();
    return b.left < svg.left - 0.5 || b.right > svg.right + 0.5 || b.left < 0 || b.right > window.innerWidth; });
  const plot = document.querySelector('.nsewdrag').getBoundingClientRect();
  return {texts: texts.map(t => t.textContent), outside: outside.map(t => t.textContent),
          plotWidth: plot.width, viewport: window.innerWidth};
}"""


@pytest.mark.browser
@pytest.mark.parametrize("width", [1440, 390])
def test_waterfall_is_readable_in_chromium(tmp_path, width):
    if not Path(browser.CHROMIUM).exists():
        pytest.fail("Chromium missing: apt-get install chromium (make test does it)")
    page_file = tmp_path / "waterfall.html"
    page_file.write_text(contributions_figure(contributions(), 0.11).to_html(include_plotlyjs=True, full_html=True))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        chromium = browser.launch(playwright)
        try:
            page = chromium.new_page(viewport={"width": width, "height": 900})
            page.goto(page_file.as_uri())
            page.wait_for_selector(".main-svg .nsewdrag")
            page.screenshot(path=str(ARTIFACTS / f"contributions_{width}.png"), full_page=True)
            drawn = page.evaluate(MEASURE)
        finally:
            chromium.close()
    assert not [t for t in drawn["texts"] if "…" in t or "..." in t], "a label was truncated"
    assert drawn["outside"] == [], f"text drawn outside the chart: {drawn['outside']}"
    assert drawn["plotWidth"] >= 0.4 * drawn["viewport"], drawn
    for expected in ("+12.1 pts", "-5.1 pts", "11.0%", "All other factors (3)", "HbA1c not measured"):
        assert expected in drawn["texts"]

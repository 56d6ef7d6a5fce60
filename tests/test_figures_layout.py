"""Layout of the dashboard's figures that broke at phone width or wasted their axis, checked on the figure
objects (no browser): the risk histogram's x range follows the data, the hospital chart's labels fit a
390 px screen and its legend and "1.0" label stay off the points; the Patient page's diagnoses table does
not repeat the code in its description."""
from __future__ import annotations

import pandas as pd
import pytest

from core.hospitals import MEASURE_LABELS
from serving import figures
from serving import hospitals as H
from serving.patient import _diagnoses


def _histogram(counts: list[int], bins: int = 20) -> pd.DataFrame:
    counts = counts + [0] * (bins - len(counts))
    return pd.DataFrame({"bin_start": [i / bins for i in range(bins)], "bin_end": [(i + 1) / bins for i in range(bins)],
                         "count": counts})


def test_histogram_x_range_follows_the_data():
    hist = _histogram([2_100, 6_400, 4_900, 2_300, 900, 300, 40])   # every risk under 35%
    fig = figures.risk_histogram_figure(hist, None)
    low, high = fig.layout.xaxis.range
    assert low == 0 and 35 <= high <= 40                             # not 0-100: the data, plus a margin
    bar = fig.data[0]
    assert list(bar.x[:3]) == pytest.approx([2.5, 7.5, 12.5])       # bin centres in percent
    assert list(bar.width[:3]) == pytest.approx([4.5, 4.5, 4.5])     # each bar 90% of its own 5-point bin
    assert fig.layout.yaxis.tickformat == ",d"                       # 6,400 not 6400 / 6.4k


def test_histogram_range_includes_threshold_and_high_risks():
    hist = _histogram([0, 0, 0, 0, 10, 20, 30])                      # risks 20-35%
    low, high = figures.risk_histogram_figure(hist, 0.5).layout.xaxis.range
    assert 10 < low < 20 and 50 < high < 60                          # a threshold above the data stays visible
    full = _histogram([1] * 20)
    assert figures.risk_histogram_figure(full, None).layout.xaxis.range == (0, 100)
    empty = _histogram([0] * 20)
    assert figures.risk_histogram_figure(empty, None).layout.xaxis.range == (0, 100)


def _benchmark() -> pd.DataFrame:
    measures = ["READM-30-AMI-HRRP", "READM-30-COPD-HRRP", "READM-30-CABG-HRRP", "READM-30-HIP-KNEE-HRRP"]
    return pd.DataFrame({"measure": measures, "measure_label": [MEASURE_LABELS[m] for m in measures],
                         "measure_short": [H.MEASURE_SHORT[m] for m in measures],
                         "ratio FY2025": [1.02, None, 0.97, 1.1], "ratio FY2024": [1.0, 0.99, None, 1.05],
                         "state median": [1.0, 1.01, 0.99, 1.0], "national median": [1.0, 1.0, 1.0, 1.0]})


def test_hospital_ratio_figure_fits_a_phone():
    bench = _benchmark()
    fig = figures.hospital_ratio_figure(bench, 2025, 2024)
    legend = fig.layout.legend
    assert legend.orientation == "h" and legend.y < 0 and legend.yanchor == "top"   # below the plot
    assert not fig.layout.annotations                                               # no "1.0" label on the points
    assert "1.0 = as expected" in fig.layout.xaxis.title.text
    assert [s.x0 for s in fig.layout.shapes] == [1.0]
    labels = list(fig.data[0].y)
    for label in labels:                                        # every line of every label fits ~18 characters
        assert all(len(line) <= figures.RATIO_LABEL_WRAP for line in label.split("<br>"))
    assert "COPD" in labels and not any("Chronic obstructive" in label for label in labels)
    assert list(fig.data[0].customdata) == bench["measure_label"].tolist()   # the full name is in the hover
    assert "%{customdata}" in fig.data[0].hovertemplate
    assert [t.name for t in fig.data] == ["this hospital FY2025", "state median", "national median",
                                          "this hospital FY2024"]


def test_hospital_ratio_figure_wraps_long_labels_without_short_names():
    bench = _benchmark().drop(columns=["measure_short"])
    fig = figures.hospital_ratio_figure(bench, 2025, None)
    assert len(fig.data) == 3
    for label in fig.data[0].y:
        assert all(len(line) <= figures.RATIO_LABEL_WRAP for line in label.split("<br>"))
    assert any("<br>" in label for label in fig.data[0].y)


def test_diagnoses_description_does_not_repeat_the_code():
    table = _diagnoses({"icd_version": 9, "diagnoses": ["428.0", "V57", "999.99"]})
    assert table["code"].tolist() == ["428.0", "V57", "999.99"]
    described = dict(zip(table["code"], table["description"]))
    for code, description in described.items():
        assert code not in description and not description.endswith(")")
    assert described["428.0"].lower().startswith("congestive heart failure")
    assert described["999.99"] == "Unlisted code"

"""The model card (`models.card`): current with the folder's files, headline equal to metrics.json, and every
TRIPOD+AI and ONC HTI-1 section present and filled."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from models.card import (
    HTI1_SECTIONS,
    INDEPENDENT_SET_RESULT,
    TRIPOD_SECTIONS,
    render_card,
)

CHAMPION = Path(__file__).resolve().parent.parent / "models" / "champion"
HEADLINE = re.compile(r"^\*\*Headline\*\*: .*?AUROC (\d\.\d{3}).*?AUPRC (\d\.\d{3}), Brier score (\d\.\d{3}), "
                      r"ECE (\d\.\d{3})\.$", re.MULTILINE)
MISSING_WORDS = re.compile(r"\b(None|nan|NaN|null)\b")


def headline(card: str) -> dict[str, float]:
    found = HEADLINE.search(card)
    assert found, "the card has no headline line"
    return dict(zip(("auroc", "auprc", "brier", "ece"), map(float, found.groups())))


def sections(card: str) -> dict[str, str]:
    """Heading text -> body up to the next heading of any level (code blocks are never headings here)."""
    body = card.split("\n---\n", 1)[1]
    parts = re.split(r"^#{1,6} (.+)$", body, flags=re.MULTILINE)
    return {title.strip(): text.strip() for title, text in zip(parts[1::2], parts[2::2])}


def transformer_overall(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())["models"]["transformer"]["overall"]


@pytest.fixture()
def copy(tmp_path) -> Path:
    """The champion's JSON files (the card's sources) in a scratch folder."""
    folder = tmp_path / "model"
    folder.mkdir()
    for path in CHAMPION.glob("*.json"):
        shutil.copy(path, folder / path.name)
    return folder


def test_champion_card_is_the_rendering_of_its_folder():
    assert (CHAMPION / "README.md").read_text() == render_card(CHAMPION), \
        "models/champion/README.md is stale: python -c \"from models.card import write_card; write_card('models/champion')\""


def test_champion_card_headline_equals_metrics_json():
    card, overall = (CHAMPION / "README.md").read_text(), transformer_overall(CHAMPION)
    assert headline(card) == {key: round(overall[key], 3) for key in ("auroc", "auprc", "brier", "ece")}
    row = next(line for line in card.splitlines() if line.startswith("| transformer |"))
    assert f"{overall['auroc']:.3f} ({overall['auroc_ci'][0]:.3f}–{overall['auroc_ci'][1]:.3f})" in row
    index = yaml.safe_load(card.split("---\n")[1])["model-index"][0]["results"][0]["metrics"]
    assert {m["type"]: m["value"] for m in index} == {k: round(overall[k], 4) for k in ("auroc", "auprc", "brier", "ece")}


def test_a_changed_metrics_json_changes_the_headline(copy):
    report = json.loads((copy / "metrics.json").read_text())
    report["models"]["transformer"]["overall"].update(auroc=0.7004, ece=0.0213)
    (copy / "metrics.json").write_text(json.dumps(report))
    assert headline(render_card(copy))["auroc"] == 0.700 and headline(render_card(copy))["ece"] == 0.021
    assert headline(render_card(copy)) != headline((CHAMPION / "README.md").read_text())


@pytest.mark.parametrize("title", TRIPOD_SECTIONS + HTI1_SECTIONS)
def test_tripod_ai_and_hti1_sections_are_present_and_filled(title):
    found = sections((CHAMPION / "README.md").read_text())
    assert title in found, f"no section '{title}'"
    assert len(found[title]) > 40, f"section '{title}' is empty"
    assert not MISSING_WORDS.search(found[title]), f"section '{title}': {MISSING_WORDS.search(found[title])}"


def test_no_section_is_empty_and_no_missing_value_is_printed():
    card = (CHAMPION / "README.md").read_text()
    assert all(body for body in sections(card).values())
    assert not MISSING_WORDS.search(card.split("\n---\n", 1)[1])


def test_card_states_the_independent_set_protocol_and_its_result():
    independent = sections((CHAMPION / "README.md").read_text())["Independent-set evaluation protocol"]
    assert "readmit score" in independent and "EVALUATION.md" in independent
    r = INDEPENDENT_SET_RESULT
    assert f"AUROC {r['auroc']:.3f}" in independent and f"ECE {r['ece']:.3f}" in independent
    assert "12,767 evaluated" in independent


def test_independent_result_is_shown_only_for_the_weights_it_was_measured_with(copy):
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"]["model.safetensors"]["sha256"] = "0" * 64
    (copy / "manifest.json").write_text(json.dumps(manifest))
    independent = sections(render_card(copy))["Independent-set evaluation protocol"]
    assert "not yet measured for these weights" in independent and "AUROC 0.673" not in independent


def test_card_without_metrics_json_says_so_and_keeps_every_section(copy):
    (copy / "metrics.json").unlink()
    card = render_card(copy)
    assert "no `metrics.json` in this folder yet" in card and "readmit evaluate" in card
    found = sections(card)
    for title in TRIPOD_SECTIONS + HTI1_SECTIONS:
        assert found.get(title), f"section '{title}' is empty without metrics.json"
    assert not MISSING_WORDS.search(card.split("\n---\n", 1)[1])


def test_card_discloses_demographic_inputs_and_no_external_validation():
    found = sections((CHAMPION / "README.md").read_text())
    inputs = json.loads((CHAMPION / "config.json").read_text())["categorical_feature_names"]
    assert "race" in inputs and "race" in found["Fairness"] and "payer" in found["Fairness"]
    assert found["External validation process"].startswith("No external validation so far")
    thresholds = json.loads((CHAMPION / "thresholds.json").read_text())
    assert f"{thresholds['capacity'][0]['risk_cutoff']:.4f}" in found["Thresholds and their rationale"]

"""`readmit etl --scenario drift|stable` (synthetic only) carries the generator's scenario to the Spark
workers, through the environment they inherit (core.synthetic.SCENARIO_VARIABLE)."""
from __future__ import annotations

import os

import etl.pipeline
from cli.main import main
from core import synthetic


def test_scenario_reaches_the_etl_through_the_workers_environment(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv(synthetic.SCENARIO_VARIABLE, "stable")  # recorded: the CLI's change is undone after
    seen = {}

    def run_etl(options):  # the ETL itself is tested in test_etl_pipeline.py; here only what it is given
        seen["scenario"] = os.environ.get(synthetic.SCENARIO_VARIABLE)
        seen["resolved"] = synthetic.scenario_or_default()
        return {"version": "v", "source": options.source, "tables": {}}

    monkeypatch.setattr(etl.pipeline, "run_etl", run_etl)
    args = ["etl", "--source", "synthetic", "--rows", "10", "--warehouse", str(tmp_path / "w")]
    assert main(args + ["--scenario", "drift"]) == 0
    assert seen == {"scenario": "drift", "resolved": "drift"}
    assert main(args + ["--scenario", "stable"]) == 0
    assert seen["resolved"] == "stable"


def test_scenario_is_refused_for_other_sources(tmp_path, capsys):
    assert main(["etl", "--source", "diabetes130", "--input", "x.csv", "--scenario", "drift",
                 "--warehouse", str(tmp_path / "w")]) == 2
    assert "--scenario applies to --source synthetic only" in capsys.readouterr().err

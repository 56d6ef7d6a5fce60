"""Warehouse versions: completeness, clean-up, predictions that match their encounters, SIGKILLs."""
from __future__ import annotations

import json
import multiprocessing
import os
import random
import subprocess
import sys
import time
from collections import Counter
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Optional

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_etl_crash import etl_args, kill_group, start, versions

from cli.main import main
from core.config import DEFAULT_MODEL_DIR
from core.predictions import write_predictions
from core.warehouse import (
    MANIFEST_FILE,
    Warehouse,
    WarehouseError,
    is_complete,
    prune_versions,
    read_pointer,
    scores_problem,
    switch_tables,
    update_pointer,
    versions_to_delete,
    write_pointer,
    writing,
)

# --- the clean-up rule ------------------------------------------------------------------------------------

COMPLETE = {"v1", "v2", "v3", "v4", "v5"}


def test_old_complete_versions_go_the_pointer_version_and_the_newest_stay():
    assert versions_to_delete(sorted(COMPLETE), "v1", COMPLETE, keep=3) == ["v2"]
    assert versions_to_delete(sorted(COMPLETE), "v5", COMPLETE, keep=3) == ["v1", "v2"]
    # keep 0 still keeps the newest complete version: a run may not have switched the pointer to it yet
    assert versions_to_delete(sorted(COMPLETE), "v2", COMPLETE, keep=0) == ["v1", "v3", "v4"]


def test_leftovers_go_only_while_no_writer_runs():
    entries = ["v1", "v2", "v3", ".v4.abc.tmp"]  # v2 empty, v3 partial (no manifest), a staging folder
    complete = {"v1"}
    assert versions_to_delete(entries, "v1", complete, writers_idle=False) == []
    assert versions_to_delete(entries, "v1", complete, writers_idle=True) == [".v4.abc.tmp", "v2", "v3"]
    # a pointer naming a folder without a manifest (written by hand, say) is never deleted
    assert versions_to_delete(["v9"], "v9", set(), writers_idle=True) == []


def test_a_staging_folder_is_never_complete_even_with_its_manifest():
    entries = ["v1", ".v2.abc.tmp"]
    assert versions_to_delete(entries, "v1", {"v1", ".v2.abc.tmp"}, keep=1, writers_idle=True) == [".v2.abc.tmp"]
    assert versions_to_delete(entries, None, {"v1", ".v2.abc.tmp"}, keep=0, writers_idle=False) == []


def test_killed_runs_leftovers_go_and_the_last_good_version_stays():
    """The tester's case: v1 good, three killed runs left v2 (empty) to v4 (partial), then v5 completed."""
    entries = ["v1", "v2", "v3", "v4", "v5"]
    assert versions_to_delete(entries, "v5", {"v1", "v5"}, keep=3, writers_idle=True) == ["v2", "v3", "v4"]


def _folder(root: Path, table: str, version: str, manifest: dict | None = None) -> Path:
    folder = root / "tables" / table / version
    folder.mkdir(parents=True)
    if manifest is not None:
        (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    return folder


def test_prune_skips_leftovers_while_a_writer_holds_the_lock(tmp_path):
    for version in ("v1", "v2", "v3", "v4"):
        _folder(tmp_path, "encounters", version, {})
    _folder(tmp_path, "encounters", "v5")                  # a run writing right now (or killed)
    _folder(tmp_path, "encounters", ".v6.abc.tmp", {})     # a staging folder
    write_pointer(tmp_path, {"tables": {"encounters": "v4"}})
    with writing(tmp_path):
        deleted = prune_versions(tmp_path)
    assert [Path(p).name for p in deleted] == ["v1"]
    assert prune_versions(tmp_path, keep=3) and versions(tmp_path) == {f"encounters/{v}" for v in ("v2", "v3", "v4")}


# --- predictions must match their encounters --------------------------------------------------------------

def test_a_new_encounters_version_invalidates_the_predictions():
    pointer = {"tables": {"encounters": "e1", "features": "e1", "predictions": "p1", "hospitals": "h1"}}
    switch_tables(pointer, {"hospitals": "h2"})  # other tables: the predictions stay
    assert pointer["tables"]["predictions"] == "p1" and "invalidated" not in pointer
    switch_tables(pointer, {"encounters": "e2", "features": "e2"})
    assert "predictions" not in pointer["tables"] and pointer["invalidated"] == {"predictions": "p1"}
    problem = scores_problem(pointer, {}, "W")
    assert problem == "Scores are out of date: the encounters changed (version e2): run `readmit score --warehouse W`."
    switch_tables(pointer, {"predictions": "p2"})
    assert pointer["tables"]["predictions"] == "p2" and "invalidated" not in pointer


def test_scores_problem_judges_the_recorded_encounters_version():
    pointer = {"tables": {"encounters": "e2", "predictions": "p1"}}
    assert scores_problem(pointer, {"encounters_version": "e2"}, "W") is None
    assert scores_problem(pointer, {}, "W") is None  # written before versions were recorded: not judged
    assert scores_problem({"tables": {"predictions": "p1"}}, {"encounters_version": "e1"}, "W") is None
    assert scores_problem(pointer, {"encounters_version": "e1"}, "W") == (
        "Scores are out of date: they were computed from encounters version e1, the warehouse now holds "
        "version e2: run `readmit score --warehouse W`.")


def _encounters(root: Path, version: str, patients: list[str], publish: bool = True) -> None:
    """Encounters E1 and E2 of these patients as a new version, published as the ETL publishes."""
    folder = _folder(root, "encounters", version, {"table": "encounters", "version": version})
    frame = pd.DataFrame({"encounter_id": ["E1", "E2"], "patient_id": patients})
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), folder / "part-0.parquet")
    if publish:
        update_pointer(root, lambda pointer: switch_tables(pointer, {"encounters": version}))


PREDICTIONS = pd.DataFrame({"encounter_id": ["E1", "E2"], "patient_id": ["P1", "P2"], "risk": [0.1, 0.9],
                            "eligible": [True, True]})
JOINED = "SELECT e.patient_id, p.risk FROM predictions p JOIN encounters e USING (encounter_id) ORDER BY 1"


def test_reader_refuses_predictions_scored_on_other_encounters(tmp_path):
    _encounters(tmp_path, "e1", ["P1", "P2"])
    write_predictions(tmp_path, PREDICTIONS, encounters_version="e1")
    warehouse = Warehouse(str(tmp_path))
    assert not warehouse.predictions_stale
    assert warehouse.query(JOINED)["risk"].tolist() == [0.1, 0.9]
    # A pointer switched by an older tool: new encounters, where E1 belongs to another patient, old scores.
    _encounters(tmp_path, "e2", ["P2", "P1"], publish=False)
    pointer = read_pointer(tmp_path)
    write_pointer(tmp_path, {**pointer, "tables": {**pointer["tables"], "encounters": "e2"}})
    assert warehouse.predictions_stale
    assert warehouse.predictions_problem.startswith("Scores are out of date: they were computed from encounters "
                                                    "version e1")
    for sql in (JOINED, "SELECT count(*) FROM predictions"):
        with pytest.raises(WarehouseError, match="Scores are out of date"):
            warehouse.query(sql)
    with pytest.raises(WarehouseError, match="Scores are out of date"):
        warehouse.table_path("predictions")
    assert warehouse.query("SELECT count(*) AS n FROM encounters")["n"].iloc[0] == 2  # scoring can still read


def test_predictions_are_published_only_on_the_encounters_they_were_scored_on(tmp_path):
    _encounters(tmp_path, "e1", ["P1", "P2"])
    pinned = Warehouse(str(tmp_path)).pinned()          # what a scorer reads
    _encounters(tmp_path, "e2", ["P2", "P1"])           # an ETL run publishes meanwhile
    assert pinned.current_tables()["encounters"] == "e1"
    with pytest.raises(WarehouseError, match="changed while scoring"):
        write_predictions(tmp_path, PREDICTIONS, encounters_version=pinned.current_tables()["encounters"])
    assert "predictions" not in read_pointer(tmp_path)["tables"]
    version = write_predictions(tmp_path, PREDICTIONS, encounters_version="e2")
    assert Warehouse(str(tmp_path)).manifest("predictions")["encounters_version"] == "e2"
    assert read_pointer(tmp_path)["tables"]["predictions"] == version


# --- SIGKILLs at random points of ETL and scoring runs ----------------------------------------------------

ROWS = "300"
SCORE = ["score", "--no-explain", "--model", str(DEFAULT_MODEL_DIR), "--warehouse"]
# `readmit score` spends ~5 s importing torch before its writes; children of a warm fork server run the
# same entry point (`cli.main.main`) without that, so seventeen kills cost seconds, not minutes.
FORK_SERVER = multiprocessing.get_context("forkserver")
PRELOAD = ["cli.main", "cli.score_commands", "core.intake", "core.predictions", "serving.scoring", __name__]


def _log(root: Path) -> Path:
    return root.with_name("score.log")


def _score(root: str) -> None:
    """`readmit score --warehouse ROOT` in a fork-server child, its output appended to `_log`."""
    log = os.open(_log(Path(root)), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(log, 1)
    os.dup2(log, 2)
    sys.exit(main([*SCORE, root]))


def _start(kind: str, root: Path, seed: int) -> subprocess.Popen | BaseProcess:
    if kind == "score":
        process = FORK_SERVER.Process(target=_score, args=(str(root),))
        process.start()
        return process
    # a different seed each run: the same encounter ids, mostly other patients (stale joins would show)
    return start(*etl_args(root, "--source", "synthetic", "--rows", ROWS, "--seed", str(seed)))


def _failed(kind: str, process: subprocess.Popen | BaseProcess, root: Path) -> str:
    tail = _log(root).read_text()[-1500:] if kind == "score" and _log(root).exists() else ""
    return f"`readmit {kind}` failed (exit {_ended(process)}) {tail}"


def _ended(process: subprocess.Popen | BaseProcess) -> Optional[int]:
    """Exit status so far: None while it runs, -9 once SIGKILLed."""
    return process.poll() if isinstance(process, subprocess.Popen) else process.exitcode


def _kill(process: subprocess.Popen | BaseProcess) -> None:
    if isinstance(process, subprocess.Popen):
        kill_group(process)  # the CLI and its Spark JVM
    else:
        process.kill()
        process.join()


def _writing(kind: str, root: Path, seed: int) -> subprocess.Popen | BaseProcess:
    """Start a run; return once its first folder has appeared under tables/."""
    before = versions(root)
    process = _start(kind, root, seed)
    while not versions(root) - before:
        assert _ended(process) is None, f"before writing: {_failed(kind, process, root)}"
        time.sleep(0.005)
    return process


def _write_seconds(kind: str, root: Path, seed: int = 0) -> float:
    """Run to the end; the seconds from its first write to its exit."""
    process = _writing(kind, root, seed)
    started = time.monotonic()
    while _ended(process) is None:
        time.sleep(0.005)
    assert _ended(process) == 0, _failed(kind, process, root)
    return time.monotonic() - started


def _assert_consistent(root: Path, context: str) -> None:
    """Every pointer names a complete version; the predictions match the encounters the pointer names."""
    warehouse = Warehouse(str(root)).pinned()
    pointer = warehouse.pointer()
    named = {f"tables/{t}/{v}" for t, v in pointer["tables"].items()} | {f"preprocessing/{pointer['preprocessing']}"}
    assert all(is_complete(root / path) for path in named), f"{context}: {pointer}"
    if "predictions" not in pointer["tables"]:
        assert warehouse.predictions_problem.startswith("Scores are out of date"), context
        return
    assert warehouse.manifest("predictions")["encounters_version"] == pointer["tables"]["encounters"], context
    unmatched = warehouse.query("SELECT count(*) AS n FROM predictions p ANTI JOIN encounters e "
                                "USING (encounter_id, patient_id)")["n"].iloc[0]
    assert unmatched == 0, f"{context}: {unmatched} predictions of another patient"


@pytest.mark.spark
@pytest.mark.slow
def test_sigkills_never_leave_a_pointer_to_an_incomplete_or_mismatched_version(tmp_path, monkeypatch):
    """20 SIGKILLs (3 of ETL runs, 17 of scoring runs), each at a seeded random time after the run's
    first write, drawn within the write phase measured on a complete run of its kind: before that an
    ETL run only starts Spark and transforms, a scoring run only reads."""
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no tqdm lock left behind by killed children
    FORK_SERVER.set_forkserver_preload(PRELOAD)
    root = tmp_path / "wh"
    phase = {"etl": _write_seconds("etl", root), "score": _write_seconds("score", root)}
    _assert_consistent(root, "after the first complete runs")
    rng, outcomes = random.Random(9), Counter()
    for kill in range(20):
        kind = "etl" if kill % 7 == 3 else "score"  # ETL: kills 3, 10 and 17
        if kind == "score" and "predictions" not in read_pointer(root)["tables"]:
            _write_seconds("score", root)  # an ETL run published new encounters: score them
        process = _writing(kind, root, seed=kill + 1)
        delay = rng.uniform(0, phase[kind])
        time.sleep(delay)
        ended = _ended(process)
        assert ended in (None, 0), _failed(kind, process, root)
        outcomes[f"{kind} {'finished' if ended == 0 else 'killed mid-write'}"] += 1
        _kill(process)
        _assert_consistent(root, f"after SIGKILL {kill}, {delay:.2f} s into the writes of `readmit {kind}`")
    print(f"{dict(outcomes)}; write phases: ETL {phase['etl']:.1f} s, scoring {phase['score']:.2f} s")
    prune_versions(root)  # no writer now: the killed runs' leftovers go
    assert all(is_complete(root / "tables" / entry) and not Path(entry).name.startswith(".")
               for entry in versions(root)), versions(root)
    _assert_consistent(root, "after clean-up")

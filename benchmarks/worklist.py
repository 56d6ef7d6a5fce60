"""The dashboard's worklist and Patient view at a million patients, each figure beside its target and its peer.

    .venv/bin/python benchmarks/worklist.py [--patients 1000000] [--days 1095] [--repeat 5] [--model models/champion]

The warehouse is fake (`tests/fixtures/app/make_warehouse.py`: PATIENTS patients, 1.8 stays each, discharged
over DAYS days, scored as the model's version), built once and kept under /tmp. Server-side time only (the
time inside the serving functions the pages call, not the browser's drawing):
(a) the first build of the day's list: `WorklistIndex` + `window_rows` + outreach statuses + `build_day_list`
    (what the first Worklist or Home view after a new warehouse version or a new date waits for);
(b) a filter change and (c) a page change on that list (`page_of`): target < 0.3 s;
(d) the replayed PPV for a capacity (`replay_discharges` once per date, `capacity_result` per capacity);
(e) the first Patient view after start, in a fresh Python process: imports, warm-up (the model and the
    ICD-9 titles, as the Home page does), then `resolve_encounter` + `patient_detail` with its stored
    explanation: target < 3 s for the view after the warm-up;
(f) the Worklist page's whole script (Streamlit's AppTest, no browser) after Home: the first view, then a
    filter change and a page change: target < 0.3 s.
Peer: the same answer straight in DuckDB SQL on the Parquet files (one query, no index, no pandas
between); the ratio is ours / peer. The machine's 2 cores are shared: the load average is printed
beside the figures, and each per-change figure is the median of REPEAT runs.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "fixtures" / "app"))

import duckdb  # noqa: E402
import make_warehouse  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from core.warehouse import Warehouse  # noqa: E402
from serving import outreach, worklist  # noqa: E402
from serving.database import engine_for, migrate  # noqa: E402
from serving.scoring import ScoringService  # noqa: E402

WINDOW = 30
CALLS = 25
PAGE_SIZE = worklist.DEFAULT_PAGE_SIZE
FILTERS = [worklist.WorklistFilters(), worklist.WorklistFilters(sexes=("Female",)),
           worklist.WorklistFilters(tiers=("High", "Very high")),
           worklist.WorklistFilters(sexes=("Male",), age_bands=("[70-80)",), payers=("MC",)),
           worklist.WorklistFilters(call_list_only=True)]


def load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def line(name: str, ours: float, peer: float | None = None, target: float | None = None) -> None:
    peer_text = f"peer {peer:7.3f} s  ratio {ours / peer:5.2f}" if peer else " " * 28
    verdict = f"target < {target:g} s {'OK' if ours < target else 'MISSED'}" if target else ""
    print(f"{name:<46} {ours:7.3f} s   {peer_text}   {verdict:<18} load {load()}", flush=True)


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def median_time(fn, repeat: int) -> float:
    return statistics.median(timed(fn)[0] for _ in range(repeat))


def warehouse(patients: int, days: int, model_version: str) -> Path:
    """The cached fake warehouse for these settings, built when missing (a few minutes at a million)."""
    root = Path(tempfile.gettempdir()) / f"readmit-bench-wh-{patients}-{days}-{model_version.replace('@', '-')}"
    if not (root / "CURRENT.json").exists():
        print(f"building a {patients:,}-patient warehouse in {root} ...", flush=True)
        seconds, _ = timed(lambda: make_warehouse.build(root, patients, seed=13, days=days,
                                                        model_version=model_version))
        print(f"built in {seconds:.0f} s", flush=True)
    return root


class Peer:
    """The worklist's answers straight from the Parquet files in one DuckDB query each."""

    def __init__(self, wh: Warehouse):
        self.con = duckdb.connect(":memory:")
        for table in ("encounters", "predictions", "features"):
            self.con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{wh.table_path(table)}/*.parquet')")

    def open_list(self, as_of: dt.date, where: str = "", params: tuple = (), limit: int = PAGE_SIZE,
                  offset: int = 0) -> list:
        """One page of the open list: latest discharge per patient in the window, not readmitted, eligible,
        scored, ranked by risk (outreach statuses left out: the peer has no database)."""
        hi = dt.datetime.combine(as_of + dt.timedelta(days=1), dt.time())
        lo = hi - dt.timedelta(days=WINDOW)
        return self.con.execute(
            "WITH w AS (SELECT e.*, p.risk, p.risk_tier, p.reason_1, f.principal_group, row_number() OVER "
            "(PARTITION BY e.patient_id ORDER BY e.discharge_time DESC, e.encounter_id DESC) AS recency "
            "FROM encounters e LEFT JOIN predictions p USING (encounter_id) LEFT JOIN features f USING (encounter_id) "
            "WHERE e.discharge_time >= ? AND e.discharge_time < ?) "
            "SELECT * FROM w WHERE recency = 1 AND eligible AND risk IS NOT NULL AND NOT EXISTS (SELECT 1 FROM "
            "encounters a WHERE a.patient_id = w.patient_id AND a.admit_time > w.discharge_time AND a.admit_time < ?)"
            f"{where} ORDER BY risk DESC, discharge_time DESC, encounter_id LIMIT ? OFFSET ?",
            [lo, hi, hi, *params, limit, offset]).fetchall()

    def patient(self, encounter_id: str) -> list:
        found = [self.con.execute(f"SELECT * FROM {table} WHERE encounter_id = ?", [encounter_id]).fetchall()
                 for table in ("encounters", "predictions", "features")]
        patient_id = found[0][0][0]
        found.append(self.con.execute("SELECT e.encounter_id, p.risk FROM encounters e LEFT JOIN predictions p "
                                      "USING (encounter_id) WHERE e.patient_id = ?", [patient_id]).fetchall())
        return found


PATIENT_VIEW = """
import json, sys, time
started = time.perf_counter()
from core import icd
from core.warehouse import Warehouse
from serving import patient
from serving.scoring import ScoringService
imported = time.perf_counter()
service = ScoringService.load(sys.argv[2])
icd.titles(9)
warmed = time.perf_counter()
wh = Warehouse(sys.argv[1])
encounter_id = patient.resolve_encounter(wh, sys.argv[3])
detail = patient.patient_detail(wh, encounter_id)
live = patient.needs_live_explanation(detail.prediction, service.model_version)
explained = patient.live_explanation(service, wh, encounter_id).contributions if live else detail.contributions
assert not explained.empty
done = time.perf_counter()
print(json.dumps({"import": imported - started, "warm_up": warmed - imported, "view": done - warmed,
                  "recomputed": live, "cpu": time.process_time()}))
"""


def first_patient_view(root: Path, model: str, encounter_id: str) -> dict:
    """Import, warm-up and one Patient view in a fresh process (the phases timed inside it)."""
    out = subprocess.run([sys.executable, "-c", PATIENT_VIEW, str(root), model, encounter_id], cwd=REPO,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_page(at: AppTest) -> tuple[float, float]:
    """Wall and CPU seconds of one run of the page script (AppTest runs it in a thread of this process)."""
    cpu = time.process_time()
    wall, _ = timed(at.run)
    return wall, time.process_time() - cpu


def page_script(root: Path, model: str, folder: str, repeat: int) -> tuple[float, tuple, tuple]:
    """The Worklist page's whole script run by Streamlit's AppTest (server side, no browser): the first
    view after Home, then the median wall and CPU time of REPEAT filter changes and of REPEAT page changes."""
    os.environ.update(READMIT_WAREHOUSE=str(root), READMIT_MODEL_DIR=model,
                      READMIT_DATABASE_URL=f"sqlite:///{folder}/app.sqlite3",
                      READMIT_AUDIT_LOG=f"{folder}/audit.jsonl")
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=600)
    at.run()
    at.switch_page("pages/1_Worklist.py")
    first, _ = timed(at.run)
    filters, pages = [], []
    for i in range(repeat):
        at.multiselect(key="sex").set_value(["Female"] if i % 2 == 0 else ["Male"])
        filters.append(run_page(at))
        at.button(key="wl_next").click()
        pages.append(run_page(at))
        assert not at.exception, at.exception
    return first, tuple(map(statistics.median, zip(*filters))), tuple(map(statistics.median, zip(*pages)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patients", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=1095, help="the span of the discharge dates")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--model", default=str(REPO / "models" / "champion"))
    args = parser.parse_args()

    model_version = ScoringService.load(args.model).model_version
    root = warehouse(args.patients, args.days, model_version)
    wh = Warehouse(str(root))
    peer = Peer(wh)
    with tempfile.TemporaryDirectory() as folder:
        engine = engine_for(f"sqlite:///{folder}/ops.sqlite3")
        migrate(engine)

        def build_day() -> tuple[worklist.WorklistIndex, worklist.DayList]:
            index = worklist.WorklistIndex(wh)
            as_of = index.latest_discharge
            rows = worklist.window_rows(index, as_of, WINDOW, worklist.empty_rows())
            events = outreach.histories(engine, worklist.encounter_keys(rows))
            return index, worklist.build_day_list(rows, events, as_of, WINDOW, CALLS)

        seconds, (index, day) = timed(build_day)
        as_of = day.as_of
        print(f"{index.rows:,} encounters, as of {as_of}: {len(day.open):,} open and {len(day.handled):,} handled "
              f"patients in the {WINDOW}-day window", flush=True)
        line("(a) first build of the day's list", seconds, timed(lambda: peer.open_list(as_of))[0])

        filter_ours = median_time(lambda: [worklist.page_of(day.open, f, 1) for f in FILTERS], args.repeat) / len(FILTERS)
        filter_peer = statistics.median(
            timed(lambda: peer.open_list(as_of, " AND sex = ?", ("Female",)))[0] for _ in range(args.repeat))
        line("(b) filter change (page_of, 5 filter sets)", filter_ours, filter_peer, 0.3)
        pages = range(1, 41, 8)
        page_ours = median_time(lambda: [worklist.page_of(day.open, FILTERS[1], p) for p in pages],
                                args.repeat) / len(pages)
        page_peer = statistics.median(timed(lambda: peer.open_list(as_of, " AND sex = ?", ("Female",),
                                                                   offset=20 * PAGE_SIZE))[0]
                                      for _ in range(args.repeat))
        line("(c) page change (page_of, pages 1 to 33)", page_ours, page_peer, 0.3)

        days = worklist.replay_days(index, as_of)
        read, discharges = timed(lambda: worklist.replay_discharges(index, days[0], days[-1], WINDOW))
        line(f"(d) replay: read {len(discharges):,} past discharges", read)
        line("(d) replay: PPV for one capacity", median_time(
            lambda: worklist.capacity_result(discharges, days, WINDOW, CALLS), args.repeat))

        first, filter_page, next_page = page_script(root, args.model, folder, args.repeat)
        line("(f) Worklist page script after Home, first view", first)
        line(f"(f) page script, filter change (CPU {filter_page[1]:.3f} s)", filter_page[0], filter_peer, 0.3)
        line(f"(f) page script, page change (CPU {next_page[1]:.3f} s)", next_page[0], page_peer, 0.3)

    encounter_id = str(day.open["encounter_id"].iloc[0])
    view = first_patient_view(root, args.model, encounter_id)
    peer_view = median_time(lambda: peer.patient(encounter_id), args.repeat)
    print(f"(e) fresh process: imports {view['import']:.2f} s, warm-up {view['warm_up']:.2f} s, CPU time in all "
          f"{view['cpu']:.2f} s; explanation {'recomputed' if view['recomputed'] else 'stored'}", flush=True)
    line("(e) first Patient view after the warm-up", view["view"], peer_view, 3.0)
    line("(e) the same, from process start", view["import"] + view["warm_up"] + view["view"])


if __name__ == "__main__":
    main()

"""Cached access to core for the pages: `st.cache_resource` for connections and the model,
`st.cache_data` for query results. Cache keys include the warehouse pointer, so a new ETL or
scoring run is picked up without restarting the app."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

import pandas as pd
import streamlit as st

from core import spreadsheet
from core.config import Settings
from core.warehouse import POINTER_FILE, Warehouse, local_path
from serving import home
from serving import hospitals as hospital_queries
from serving import patient as patient_queries
from serving import quality as quality_queries
from serving import worklist as worklist_queries
from serving.scoring import ScoringService

log = logging.getLogger("readmit.app")


def settings() -> Settings:
    """Read on every run (cheap): the environment is the configuration."""
    return Settings()


def warehouse_root() -> str:
    return settings().warehouse


def pointer_version(root: Optional[str] = None) -> str:
    """Changes whenever CURRENT.json is replaced (its mtime); part of every cache key."""
    path = local_path(root or warehouse_root()) / POINTER_FILE
    try:
        return str(os.stat(path).st_mtime_ns)
    except OSError:
        return "missing"


@st.cache_resource(show_spinner=False)
def _warehouse(root: str, version: str) -> Warehouse:
    return Warehouse(root)


def warehouse() -> Warehouse:
    root = warehouse_root()
    return _warehouse(root, pointer_version(root))


@st.cache_data(ttl=60, show_spinner=False)
def _status(root: str, version: str) -> home.DataStatus:
    return home.data_status(root)


def status() -> home.DataStatus:
    root = warehouse_root()
    return _status(root, pointer_version(root))


def _key() -> tuple[str, str]:
    root = warehouse_root()
    return root, pointer_version(root)


@st.cache_data(ttl=600, show_spinner=False)
def _summary(root: str, version: str) -> home.CohortSummary:
    return home.cohort_summary(Warehouse(root))


def summary() -> home.CohortSummary:
    return _summary(*_key())


@st.cache_data(ttl=600, show_spinner=False)
def _options(root: str, version: str) -> dict:
    return worklist_queries.filter_options(Warehouse(root))


def options() -> dict:
    return _options(*_key())


@st.cache_data(ttl=600, show_spinner=False)
def _labelled(root: str, version: str) -> pd.DataFrame:
    return quality_queries.labelled_scores(Warehouse(root))


@st.cache_data(ttl=600, show_spinner=False)
def _suggested(root: str, version: str) -> int:
    return worklist_queries.suggested_capacity(Warehouse(root))


def calls_per_day() -> int:
    """The capacity this session works with: what the user set on the Worklist, else a suggestion."""
    if "capacity_calls" not in st.session_state:
        st.session_state["capacity_calls"] = _suggested(*_key())
    return int(st.session_state["capacity_calls"])


@st.cache_data(ttl=600, show_spinner=False)
def _capacity(root: str, version: str, calls: int) -> worklist_queries.CapacityResult:
    return worklist_queries.capacity_tradeoff(Warehouse(root), calls, _labelled(root, version))


def capacity(calls: int) -> worklist_queries.CapacityResult:
    return _capacity(*_key(), int(calls))


@st.cache_resource(show_spinner="Preparing the worklist…", max_entries=2)
def _index(root: str, version: str) -> worklist_queries.WorklistIndex:
    return worklist_queries.WorklistIndex(Warehouse(root))


@st.cache_data(ttl=300, show_spinner=False, max_entries=200)
def _worklist(root: str, version: str, filters: worklist_queries.WorklistFilters, page: int, page_size: int,
              threshold: Optional[float]) -> worklist_queries.WorklistPage:
    return worklist_queries.worklist(_index(root, version), filters, page, page_size, threshold)


def worklist(filters: worklist_queries.WorklistFilters, page: int, page_size: int,
             threshold: Optional[float]) -> worklist_queries.WorklistPage:
    return _worklist(*_key(), filters, page, page_size, threshold)


@st.cache_data(ttl=300, show_spinner=False, max_entries=20)
def _export(root: str, version: str, filters: worklist_queries.WorklistFilters, threshold: Optional[float]) -> bytes:
    return spreadsheet.safe_csv(worklist_queries.worklist_export(_index(root, version), filters, threshold=threshold))


def export_csv(filters: worklist_queries.WorklistFilters, threshold: Optional[float]) -> bytes:
    return _export(*_key(), filters, threshold)


@st.cache_data(ttl=600, show_spinner=False)
def _quality(root: str, version: str, threshold: float):
    return quality_queries.quality_view(Warehouse(root), threshold)


def quality(threshold: float):
    return _quality(*_key(), float(threshold))


@st.cache_data(ttl=600, show_spinner=False)
def model_info(model_dir: str) -> quality_queries.ModelInfo:
    return quality_queries.model_info(model_dir)


@st.cache_data(ttl=600, show_spinner=False)
def _hospitals(root: str, version: str) -> pd.DataFrame:
    return hospital_queries.hospital_options(Warehouse(root))


def hospitals() -> pd.DataFrame:
    return _hospitals(*_key())


@st.cache_data(ttl=600, show_spinner=False)
def _benchmark(root: str, version: str, facility_id: str):
    return hospital_queries.hospital_benchmark(Warehouse(root), facility_id)


def benchmark(facility_id: str):
    return _benchmark(*_key(), facility_id)


@st.cache_resource(show_spinner="Loading the model…")
def scoring_service(model_dir: str):
    """The model, loaded once per process (never trained here)."""
    return ScoringService.load(model_dir)


def loaded_model():
    """The configured model's cached ScoringService, or None when no model folder is configured
    (no config.json) or it cannot be loaded (logged, without patient data)."""
    model_dir = settings().model_dir
    if not (Path(model_dir) / "config.json").exists():
        return None
    try:
        return scoring_service(model_dir)
    except Exception:
        log.exception("model could not be loaded from %s", model_dir)
        return None


@st.cache_data(ttl=3600, show_spinner=False, max_entries=500)
def _live_explanation(root: str, version: str, model_dir: str, model_version: str, encounter_id: str,
                      _service) -> Optional[patient_queries.LiveExplanation]:
    return patient_queries.live_explanation(_service, Warehouse(root), encounter_id)


def live_explanation(encounter_id: str, service) -> Optional[patient_queries.LiveExplanation]:
    """Sampled Shapley explanation of one encounter (`ScoringService.explain_one`), cached per encounter,
    warehouse version and model version."""
    return _live_explanation(*_key(), str(getattr(service, "model_dir", None) or settings().model_dir),
                             str(service.model_version), str(encounter_id), service)

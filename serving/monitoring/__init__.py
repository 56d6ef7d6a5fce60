"""Monitoring: the report `readmit monitor` writes and the Monitoring page shows, from the prediction log.

    report = monitoring_report(engine, as_of=dt.date(2026, 11, 28), model_dir="models/champion")
    report["alerts"]    # [{"check", "subject", "severity", "message", "period"}], act first
    any_act(report)     # `readmit monitor` exits 3 then

Period by period (weeks or months of discharge dates; docs/monitoring.md says why each threshold):
- volume, invalid rows, the score distribution and score PSI against a reference;
- drift of every model input against the reference: PSI over the reference's bins (quantile bins and a
  missing bin for numbers; levels, "other" and missing for categories) with a chi-squared test on the
  same bins, Benjamini-Hochberg across the inputs of a period (`core.monitoring.drift_severity`), and
  the share of inputs that drift;
- realised performance once every outcome of the period has matured (discharge + 30 days on or before
  `as_of`), estimated performance (confidence-based, `core.monitoring.estimated_performance`) always;
- fairness over the last matured periods, and service health from the API.

Each logged encounter counts once: its latest logged prediction (of `model_version` when given).

The reference is a profile of aggregates (`build_reference`, no cell under 20 rows): the model folder
ships one made from its validation split (`monitoring_reference.json`; it changes no score, so the
manifest does not cover it), and `START:END` makes one from the log's own discharges in that window.

Recalibration under the change plan (`recalibrate`) and promotion (`promote`) live here too: both
change which calibrated model serves, and both are checked against the same outcomes.

Modules (this package re-exports their public names):
- `constants`: thresholds and sizes (docs/monitoring.md says why);
- `reference`: reference profiles, bins, the model folder's reference, `--reference START:END`;
- `rows`: the log matched to outcomes, periods, call lists;
- `drift`: input and score drift per period;
- `report`: `monitoring_report` / `build_report`, performance, fairness, service health;
- `alerting`: severities and sentences (`alerts`, `any_act`);
- `lifecycle`: recalibration, promotion, which model serves;
- `render`: readings, text and HTML reports, the page's alert summary.
"""
from serving.monitoring.alerting import FAIRNESS_ALERTS, alerts, any_act
from serving.monitoring.constants import (
    AUROC_DROP,
    DATASET_DRIFT,
    ERROR_RATE,
    ESTIMATED_AUROC,
    ESTIMATED_RATE,
    FAIRNESS_PERIODS,
    INVALID_SHARE,
    MATURITY_DAYS,
    MIN_CELL,
    MIN_FILLED_SHARE,
    MIN_LEVEL_SHARE,
    MIN_PERIOD_ROWS,
    MISSING,
    MONITORED,
    N_BOOT,
    OTHER,
    P95_SECONDS,
    PERIODS,
    PROMOTION_FILE,
    QUANTILE_SAMPLE,
    QUANTILES,
    RECALIBRATION_ECE,
    RECALIBRATION_MIN_POSITIVES,
    RECALIBRATION_MIN_ROWS,
    REFERENCE_FILE,
    REFERENCE_FORMAT,
    UNKNOWN_SHARE,
    VOLUME_RATIO,
)
from serving.monitoring.drift import PeriodSample, chi_squared_p, drift_cells, wasserstein_from_quantiles
from serving.monitoring.lifecycle import (
    CHANGE_PLAN,
    calibration_summary,
    promote,
    promoted_model_dir,
    promotion_file,
    promotion_record,
    recalibrate,
    recalibration_rows,
    serving_model_dir,
)
from serving.monitoring.reference import (
    Reference,
    bin_index,
    build_reference,
    categorical_profile,
    is_monitorable,
    load_model_reference,
    model_reference_from_warehouse,
    numeric_profile,
    parse_window,
    reference_counts,
    reference_path,
    resolve_reference,
    risk_profile,
    save_model_reference,
    window_reference,
)
from serving.monitoring.render import CHECK_ORDER, alert_summary, log_state, readings, render_html, render_text
from serving.monitoring.report import FAIRNESS_GROUPS, build_report, monitoring_report, parse_api_metrics, service_health
from serving.monitoring.rows import (
    assign_periods,
    flagged_encounters,
    load_call_lists,
    load_monitoring_rows,
    period_id,
    period_label,
)

__all__ = [
    'REFERENCE_FILE', 'REFERENCE_FORMAT', 'PERIODS', 'MATURITY_DAYS', 'MIN_PERIOD_ROWS', 'MIN_CELL',
    'MIN_LEVEL_SHARE', 'MIN_FILLED_SHARE', 'QUANTILES', 'QUANTILE_SAMPLE', 'MONITORED', 'OTHER', 'MISSING',
    'DATASET_DRIFT', 'ESTIMATED_AUROC', 'ESTIMATED_RATE', 'INVALID_SHARE', 'UNKNOWN_SHARE', 'VOLUME_RATIO',
    'AUROC_DROP', 'FAIRNESS_PERIODS', 'ERROR_RATE', 'P95_SECONDS', 'N_BOOT', 'RECALIBRATION_MIN_ROWS',
    'RECALIBRATION_MIN_POSITIVES', 'RECALIBRATION_ECE', 'PROMOTION_FILE', 'numeric_profile',
    'categorical_profile', 'risk_profile', 'build_reference', 'reference_path', 'save_model_reference',
    'load_model_reference', 'model_reference_from_warehouse', 'bin_index', 'reference_counts',
    'is_monitorable', 'Reference', 'parse_window', 'window_reference', 'resolve_reference',
    'load_monitoring_rows', 'assign_periods', 'period_id', 'period_label', 'load_call_lists',
    'flagged_encounters', 'chi_squared_p', 'wasserstein_from_quantiles', 'drift_cells', 'PeriodSample',
    'monitoring_report', 'build_report', 'FAIRNESS_GROUPS', 'parse_api_metrics', 'service_health', 'alerts',
    'FAIRNESS_ALERTS', 'any_act', 'CHANGE_PLAN', 'recalibration_rows', 'calibration_summary', 'recalibrate',
    'promotion_file', 'promotion_record', 'promote', 'promoted_model_dir', 'serving_model_dir', 'readings',
    'render_text', 'render_html', 'log_state', 'CHECK_ORDER', 'alert_summary']

"""The demo sink: a synthetic credit-scoring model's prediction log with planted changes.

:func:`write_demo` writes, under ``directory``::

    predictions/date=YYYY-MM-DD/hour=HH/part-0.parquet   hourly, by prediction time
    labels/date=YYYY-MM-DD/hour=HH/part-0.parquet        hourly, by label *arrival* time
    reference.parquet                                    20,000 rows of the unplanted process

covering ``[floor_hour(now) - days, floor_hour(now) + hours_ahead)`` — the data runs a few
hours past ``now`` so that a daemon started now keeps seeing a full one-hour window.

The process is stationary until ``decay_start``; three changes are then planted, each on an
hour boundary relative to ``h = floor_hour(now)`` and each recorded in the returned
:class:`DemoManifest`:

=======================  ==========  =================================================================
change                   from        what
=======================  ==========  =================================================================
accuracy decay           ``h - 24h``  concept drift: the *true* default probability depends on other
                                      features (savings, revolving balance, loan-to-value), so labels
                                      change while features do not; on labelled rows the model's
                                      accuracy falls from about 0.81 to 0.69 and its ROC AUC from
                                      0.85 to 0.59 (true default rate stays about 25 %).
bias                     ``h - 12h``  the model's logit for ``sex == "F"`` is raised by 1.0; the
                                      selection rate (``predicted_label == 1``) of F exceeds that of M
                                      by about 0.19 (before: 0 up to sampling noise). Features are
                                      unchanged; the score distribution moves (prediction drift).
feature drift            ``h - 6h``   ``income`` +1 sd (log space), ``debt_to_income`` +1 sd (log
                                      space), ``credit_score`` -1 sd (60 points), and the ``region``
                                      mix reversed (north 30 % → 10 %, central 10 % → 30 %).
                                      On one hour of 2,000 rows against the reference: KS D ≈
                                      0.37–0.41 and PSI (10 deciles) ≈ 0.93–0.96 for the three, PSI ≈
                                      0.55 for region; every other feature D < 0.045, PSI < 0.015
                                      (the largest of seventeen passes those in ~2 % of hours).
                                      The score moves too (about 19 % → 45 % predicted positive).
=======================  ==========  =================================================================

Every feature is drawn from its own random stream and the planted changes are transforms of
those draws (a shift of a standard-normal latent, another category table for the same uniform),
so every unplanted column is *bit-for-bit* what it would have been without the change: drift
cannot leak from one feature to another. The 20 numeric features are mutually independent; the
sensitive attribute ``sex`` is independent of everything, ``age_band`` is ``age`` banded.

Labels: 90 % of predictions get one, ``delay = min(Exponential(mean 12 h), 3 d)`` after the
prediction; the label is written to the partition of its arrival hour, and labels arriving at or
after the data end are not written (they have not arrived yet).

Everything is a deterministic function of ``seed`` and ``now``; each hour has its own seed
(``[seed, hour since the epoch]``), so a given hour's rows do not depend on ``days``.

>>> import tempfile
>>> from datetime import datetime, timezone
>>> with tempfile.TemporaryDirectory() as d:
...     m = write_demo(directory=Path(d), now=datetime(2026, 3, 1, 12, 30, tzinfo=timezone.utc),
...                    days=2, hours_ahead=1, rows_per_hour=100, reference_rows=500)
...     sorted(p.name for p in Path(d).iterdir())
['labels', 'predictions', 'reference.parquet']
>>> m.start.isoformat(), m.drift_start.isoformat(), m.rows
('2026-02-27T12:00:00+00:00', '2026-03-01T06:00:00+00:00', 4900)
>>> m.drifted_numeric, m.drifted_categorical, (m.bias_attribute, m.bias_group)
(('income', 'debt_to_income', 'credit_score'), ('region',), ('sex', 'F'))
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

__all__ = [
    "CATEGORICAL_FEATURES",
    "DemoManifest",
    "NUMERIC_FEATURES",
    "SENSITIVE_ATTRIBUTES",
    "write_demo",
]

# --------------------------------------------------------------------------- the process

NUMERIC_FEATURES: tuple[str, ...] = (
    "income", "age", "loan_amount", "credit_score", "debt_to_income",
    "num_open_accounts", "months_employed", "utilization", "num_late_payments", "num_credit_inquiries",
    "loan_term_months", "interest_rate", "years_at_address", "num_dependents", "savings_balance",
    "monthly_expenses", "credit_history_years", "num_credit_cards", "revolving_balance", "loan_to_value",
)

#: category -> (values, probabilities) of the unplanted process
_CATEGORIES: dict[str, tuple[tuple[str, ...], tuple[float, ...]]] = {
    "region": (("north", "south", "east", "west", "central"), (0.30, 0.25, 0.20, 0.15, 0.10)),
    "employment_type": (("salaried", "self_employed", "contract", "unemployed", "retired"),
                        (0.62, 0.14, 0.10, 0.06, 0.08)),
    "home_ownership": (("rent", "mortgage", "own", "other"), (0.38, 0.40, 0.19, 0.03)),
    "loan_purpose": (("debt_consolidation", "home_improvement", "car", "education", "medical", "business", "other"),
                     (0.35, 0.15, 0.18, 0.08, 0.06, 0.08, 0.10)),
    "education": (("high_school", "bachelor", "master", "doctorate", "other"), (0.35, 0.38, 0.17, 0.03, 0.07)),
}
CATEGORICAL_FEATURES: tuple[str, ...] = tuple(_CATEGORIES)
SENSITIVE_ATTRIBUTES: tuple[str, ...] = ("sex", "age_band")

_DRIFTED_NUMERIC = ("income", "debt_to_income", "credit_score")
_DRIFTED_CATEGORICAL = ("region",)
#: the region mix after the planted drift (same categories, reversed weights)
_REGION_DRIFTED = (0.10, 0.15, 0.20, 0.25, 0.30)
#: planted feature shift, in reference standard deviations of the latent normal
_DRIFT_SD = 1.0
#: added to the model's logit for the disadvantaged group after ``bias_start``
_BIAS_LOGIT = 1.0
_BIAS_ATTRIBUTE, _BIAS_GROUP = "sex", "F"

_AGE_BANDS = ("18-30", "31-50", "51+")
_LABEL_RATE = 0.90
_LABEL_MEAN_DELAY_S = 12 * 3600.0
_LABEL_MAX_DELAY_S = 3 * 24 * 3600.0

# planted times, relative to floor_hour(now)
_DECAY_BEFORE = timedelta(hours=24)
_BIAS_BEFORE = timedelta(hours=12)
_DRIFT_BEFORE = timedelta(hours=6)

# logistic models (intercepts tuned for ~20 % predicted positive and ~26 % true default rate)
_MODEL_INTERCEPT = -2.15
_DECAY_INTERCEPT = -1.85
_EMPLOYMENT_EFFECT = np.array([0.0, 0.2, 0.35, 0.9, 0.1])
_PURPOSE_EFFECT = np.array([0.2, -0.1, -0.2, 0.1, 0.3, 0.35, 0.0])

_STREAMS = (*NUMERIC_FEATURES, *CATEGORICAL_FEATURES, "sex", "ts", "outcome", "labelled", "delay")
_US = 1_000_000
_HOUR_US = 3600 * _US
_TS = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True, kw_only=True)
class DemoManifest:
    """Where the demo sink is and what was planted in it, when (all times UTC, aware)."""

    directory: Path
    #: first prediction partition start
    start: datetime
    #: last partition end (exclusive)
    end: datetime
    #: planted feature drift begins here (``floor_hour(now) - 6h``)
    drift_start: datetime
    drifted_numeric: tuple[str, ...]
    drifted_categorical: tuple[str, ...]
    #: the model's scores for ``bias_attribute == bias_group`` are pushed up from here (``- 12h``)
    bias_start: datetime
    bias_attribute: str
    bias_group: str
    #: concept drift (the true default probability changes) from here (``- 24h``)
    decay_start: datetime
    #: predictions written
    rows: int

    def describe(self) -> str:
        """A few human-readable lines on what is planted when (for the ``demo`` command)."""
        fmt = "%Y-%m-%d %H:%M UTC"
        return "\n".join([
            f"demo sink {self.directory}: {self.rows} predictions, {self.start:{fmt}} to {self.end:{fmt}}",
            f"  accuracy decay (concept drift) from {self.decay_start:{fmt}}",
            f"  bias against {self.bias_attribute}={self.bias_group} from {self.bias_start:{fmt}}",
            f"  feature drift in {', '.join(self.drifted_numeric + self.drifted_categorical)}"
            f" from {self.drift_start:{fmt}}",
        ])

    @property
    def predictions(self) -> Path:
        return self.directory / "predictions"

    @property
    def labels(self) -> Path:
        return self.directory / "labels"

    @property
    def reference(self) -> Path:
        return self.directory / "reference.parquet"


@dataclass(frozen=True)
class _Regime:
    drift: bool = False
    bias: bool = False
    decay: bool = False


def _floor_hour(t: datetime) -> datetime:
    t = t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
    return t.replace(minute=0, second=0, microsecond=0)


def _rngs(entropy: list[int]) -> dict[str, np.random.Generator]:
    """One independent generator per column (so a change in one never moves another's draws)."""
    children = np.random.SeedSequence(entropy).spawn(len(_STREAMS))
    return {name: np.random.default_rng(ss) for name, ss in zip(_STREAMS, children, strict=True)}


def _categorical(u: np.ndarray, probs: tuple[float, ...]) -> np.ndarray:
    cum = np.cumsum(probs)
    return np.minimum(np.searchsorted(cum / cum[-1], u, side="right"), len(probs) - 1)


def _draw(rng: Mapping[str, np.random.Generator], n: int, regime: _Regime) -> dict[str, Any]:
    """``n`` rows of features, codes and model/truth quantities (no timestamps) under ``regime``."""
    s = _DRIFT_SD if regime.drift else 0.0
    r = rng
    # every column below draws from its own stream: a planted change moves no other column's draws
    x: dict[str, np.ndarray] = {}
    # planted: transforms of a standard-normal latent (same draws with or without the shift)
    x["income"] = np.round(np.exp(10.9 + 0.5 * (r["income"].standard_normal(n) + s)), 2)
    x["debt_to_income"] = np.exp(np.log(0.3) + 0.35 * (r["debt_to_income"].standard_normal(n) + s))
    x["credit_score"] = np.clip(np.round(690.0 + 60.0 * (r["credit_score"].standard_normal(n) - s)), 300, 850)
    # unplanted
    x["age"] = np.clip(np.round(r["age"].normal(42.0, 13.0, n)), 18, 85)
    x["loan_amount"] = np.round(np.exp(np.log(15_000.0) + 0.6 * r["loan_amount"].standard_normal(n)), -1)
    x["num_open_accounts"] = r["num_open_accounts"].poisson(6.0, n).astype(np.float64)
    x["months_employed"] = np.round(np.minimum(r["months_employed"].exponential(60.0, n), 480.0))
    x["utilization"] = r["utilization"].beta(2.0, 5.0, n)
    x["num_late_payments"] = r["num_late_payments"].poisson(0.4, n).astype(np.float64)
    x["num_credit_inquiries"] = r["num_credit_inquiries"].poisson(1.2, n).astype(np.float64)
    x["loan_term_months"] = r["loan_term_months"].choice(
        np.array([12.0, 24.0, 36.0, 48.0, 60.0]), size=n, p=[0.10, 0.20, 0.35, 0.15, 0.20])
    x["interest_rate"] = np.clip(r["interest_rate"].normal(0.11, 0.035, n), 0.02, 0.36)
    x["years_at_address"] = np.round(r["years_at_address"].exponential(5.0, n), 1)
    x["num_dependents"] = np.minimum(r["num_dependents"].poisson(1.0, n), 8).astype(np.float64)
    x["savings_balance"] = np.round(np.exp(8.0 + 1.2 * r["savings_balance"].standard_normal(n)), 2)
    x["monthly_expenses"] = np.round(np.exp(np.log(2_500.0) + 0.4 * r["monthly_expenses"].standard_normal(n)), 2)
    x["credit_history_years"] = np.round(r["credit_history_years"].gamma(4.0, 3.5, n), 1)
    x["num_credit_cards"] = r["num_credit_cards"].poisson(3.0, n).astype(np.float64)
    x["revolving_balance"] = np.round(np.exp(np.log(8_000.0) + 0.9 * r["revolving_balance"].standard_normal(n)), 2)
    x["loan_to_value"] = r["loan_to_value"].beta(5.0, 3.0, n)

    # categoricals: one uniform per row mapped through the category table; the planted region
    # drift maps the *same* uniforms through another table
    codes: dict[str, np.ndarray] = {}
    for c, (_, probs) in _CATEGORIES.items():
        u = r[c].random(n)
        codes[c] = _categorical(u, _REGION_DRIFTED if (c == "region" and regime.drift) else probs)
    female = r["sex"].random(n) < 0.5
    codes["sex"] = female.astype(np.int64)  # index into ("M", "F")
    codes["age_band"] = np.searchsorted(np.array([30.5, 50.5]), x["age"])  # index into _AGE_BANDS

    # the deployed model (fit on the unplanted process: calibrated until decay_start)
    core = (
        -0.9 * (np.log(x["income"]) - 10.9) / 0.5
        + 0.8 * (np.log(x["debt_to_income"]) - np.log(0.3)) / 0.35
        - 1.0 * (x["credit_score"] - 690.0) / 60.0
        + 0.5 * (x["utilization"] - 2.0 / 7.0) / 0.16
        + 0.5 * x["num_late_payments"]
        + 0.15 * x["num_credit_inquiries"]
        - 0.3 * (x["months_employed"] - 60.0) / 60.0
        + 0.3 * (np.log(x["loan_amount"]) - np.log(15_000.0)) / 0.6
        + 0.3 * (x["interest_rate"] - 0.11) / 0.035
        + _EMPLOYMENT_EFFECT[codes["employment_type"]]
        + _PURPOSE_EFFECT[codes["loan_purpose"]]
    )
    fair_logit = _MODEL_INTERCEPT + core
    model_logit = fair_logit + _BIAS_LOGIT * female if regime.bias else fair_logit
    if regime.decay:  # concept drift: other drivers of default, the model's ones much weaker
        true_logit = (
            _DECAY_INTERCEPT + 0.25 * core
            - 1.1 * (np.log(x["savings_balance"]) - 8.0) / 1.2
            + 0.9 * (np.log(x["revolving_balance"]) - np.log(8_000.0)) / 0.9
            + 0.8 * (x["loan_to_value"] - 0.625) / 0.161
        )
    else:
        true_logit = fair_logit  # the truth never depends on sex
    score = 1.0 / (1.0 + np.exp(-model_logit))
    p_true = 1.0 / (1.0 + np.exp(-true_logit))
    delay_s = np.minimum(r["delay"].exponential(_LABEL_MEAN_DELAY_S, n), _LABEL_MAX_DELAY_S)
    return {
        "features": x,
        "codes": codes,
        "score": score,
        "predicted_label": (score >= 0.5).astype(np.int64),
        "label": (r["outcome"].random(n) < p_true).astype(np.int64),
        "labelled": r["labelled"].random(n) < _LABEL_RATE,
        "delay_us": np.maximum(np.round(delay_s * _US).astype(np.int64), 1),
        "offset_us": np.sort(r["ts"].integers(0, _HOUR_US, n)),
    }


_LEVELS: dict[str, tuple[str, ...]] = {
    **{c: values for c, (values, _) in _CATEGORIES.items()},
    "sex": ("M", "F"),
    "age_band": _AGE_BANDS,
}


def _ids(prefix: str, n: int) -> pa.Array:
    """``prefix-000000``, ``prefix-000001``, … built in Arrow (no Python loop over rows)."""
    width = max(6, len(str(max(n - 1, 0))))
    digits = pc.utf8_lpad(pc.cast(pa.array(np.arange(n, dtype=np.int64)), pa.string()), width=width, padding="0")
    return pc.binary_join_element_wise(pa.scalar(f"{prefix}-"), digits, "")


def _prediction_table(draw: Mapping[str, Any], ids: pa.Array, ts_us: np.ndarray) -> pa.Table:
    feats: Mapping[str, np.ndarray] = draw["features"]
    codes: Mapping[str, np.ndarray] = draw["codes"]
    cols: dict[str, pa.Array] = {"prediction_id": ids, "ts": pa.array(ts_us, type=pa.int64()).cast(_TS)}
    cols |= {name: pa.array(feats[name], type=pa.float64()) for name in NUMERIC_FEATURES}
    cols |= {c: pc.take(pa.array(_LEVELS[c], type=pa.string()), pa.array(codes[c]))
             for c in (*CATEGORICAL_FEATURES, *SENSITIVE_ATTRIBUTES)}
    cols["score"] = pa.array(draw["score"], type=pa.float64())
    cols["predicted_label"] = pa.array(draw["predicted_label"], type=pa.int64())
    return pa.table(cols)


def _us(t: datetime) -> int:
    return (t - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def _partition(root: Path, hour_us: int) -> Path:
    t = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=hour_us)
    return root / f"date={t:%Y-%m-%d}" / f"hour={t:%H}" / "part-0.parquet"


def _write(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="snappy")


def _clear(root: Path) -> None:
    """Remove the partition files a previous demo wrote under ``root`` (and nothing else)."""
    if not root.is_dir():
        return
    for f in root.glob("date=*/hour=*/part-0.parquet"):
        f.unlink()
    for d in sorted(root.glob("date=*/hour=*"), reverse=True) + sorted(root.glob("date=*"), reverse=True):
        if d.is_dir() and not any(d.iterdir()):
            d.rmdir()


def _check(name: str, value: object, minimum: int) -> int:
    try:
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        number = None
    if isinstance(value, bool) or number is None or number < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return number


def write_demo(*, directory: Path, now: datetime, days: int = 4, hours_ahead: int = 6,
               rows_per_hour: int = 2000, seed: int = 7, reference_rows: int = 20_000) -> DemoManifest:
    """Write the demo sink under ``directory`` and return what was planted where.

    ``now`` (UTC if naive) anchors everything: with ``h = floor_hour(now)`` the predictions cover
    ``[h - days, h + hours_ahead)``, ``rows_per_hour`` per hourly partition; accuracy decay
    starts at ``h - 24h``, bias at ``h - 12h`` and feature drift at ``h - 6h`` (see the module
    docstring for the magnitudes). ``reference_rows`` rows of the unplanted process, with their
    labels, go to ``reference.parquet``. Partition files left by an earlier demo in
    ``predictions/`` and ``labels/`` are replaced. The output is a deterministic function of
    ``seed`` and ``now``.
    """
    days = _check("days", days, 1)
    hours_ahead = _check("hours_ahead", hours_ahead, 0)
    rows_per_hour = _check("rows_per_hour", rows_per_hour, 1)
    reference_rows = _check("reference_rows", reference_rows, 1)
    seed = _check("seed", seed, 0)
    directory = Path(directory)
    h = _floor_hour(now)
    start, end = h - timedelta(days=days), h + timedelta(hours=hours_ahead)
    decay_start, bias_start, drift_start = h - _DECAY_BEFORE, h - _BIAS_BEFORE, h - _DRIFT_BEFORE
    predictions, labels = directory / "predictions", directory / "labels"
    _clear(predictions)
    _clear(labels)

    label_parts: list[tuple[pa.Array, np.ndarray, np.ndarray]] = []
    t, rows = start, 0
    while t < end:
        regime = _Regime(drift=t >= drift_start, bias=t >= bias_start, decay=t >= decay_start)
        hour_us = _us(t)
        draw = _draw(_rngs([seed, 1, (hour_us // _HOUR_US) & 0xFFFF_FFFF_FFFF_FFFF]), rows_per_hour, regime)
        ts_us = hour_us + draw["offset_us"]
        ids = _ids(f"{t:%Y%m%d%H}", rows_per_hour)
        _write(_prediction_table(draw, ids, ts_us), _partition(predictions, hour_us))
        keep = draw["labelled"] & (ts_us + draw["delay_us"] < _us(end))
        label_parts.append((ids.filter(pa.array(keep)), draw["label"][keep], (ts_us + draw["delay_us"])[keep]))
        rows += rows_per_hour
        t += timedelta(hours=1)

    # labels, partitioned by arrival hour
    ids = pa.concat_arrays([p[0] for p in label_parts])
    label = np.concatenate([p[1] for p in label_parts])
    arrival = np.concatenate([p[2] for p in label_parts])
    order = np.argsort(arrival, kind="stable")
    ids, label, arrival = ids.take(pa.array(order)), label[order], arrival[order]
    hours = arrival // _HOUR_US
    bounds = np.flatnonzero(np.diff(hours)) + 1
    for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, hours.size], strict=True):
        if hi > lo:
            table = pa.table({"prediction_id": ids[lo:hi], "label": pa.array(label[lo:hi], type=pa.int64()),
                              "ts": pa.array(arrival[lo:hi], type=pa.int64()).cast(_TS)})
            _write(table, _partition(labels, int(hours[lo]) * _HOUR_US))

    # the reference: a separate draw of the unplanted process, stamped over the day before start
    ref = _draw(_rngs([seed, 2]), reference_rows, _Regime())
    ref_ts = _us(start - timedelta(days=1)) + np.sort(
        np.random.default_rng([seed, 3]).integers(0, 24 * _HOUR_US, reference_rows))
    table = _prediction_table(ref, _ids("ref", reference_rows), ref_ts)
    directory.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.append_column("label", pa.array(ref["label"], type=pa.int64())),
                   directory / "reference.parquet", compression="snappy")

    return DemoManifest(
        directory=directory, start=start, end=end,
        drift_start=drift_start, drifted_numeric=_DRIFTED_NUMERIC, drifted_categorical=_DRIFTED_CATEGORICAL,
        bias_start=bias_start, bias_attribute=_BIAS_ATTRIBUTE, bias_group=_BIAS_GROUP,
        decay_start=decay_start, rows=rows,
    )

"""The demo sink: layout, schema, label timing, determinism, and the planted changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from scipy import stats

from monitor.config import load_config
from monitor.demo_data import (
    CATEGORICAL_FEATURES,
    NUMERIC_FEATURES,
    SENSITIVE_ATTRIBUTES,
    DemoManifest,
    write_demo,
)

NOW = datetime(2026, 3, 1, 12, 37, 5, tzinfo=UTC)
HOUR = datetime(2026, 3, 1, 12, tzinfo=UTC)
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
TS = pa.timestamp("us", tz="UTC")
PREDICTION_SCHEMA = pa.schema(
    [("prediction_id", pa.string()), ("ts", TS)]
    + [(f, pa.float64()) for f in NUMERIC_FEATURES]
    + [(c, pa.string()) for c in (*CATEGORICAL_FEATURES, *SENSITIVE_ATTRIBUTES)]
    + [("score", pa.float64()), ("predicted_label", pa.int64())]
)
LABEL_SCHEMA = pa.schema([("prediction_id", pa.string()), ("label", pa.int64()), ("ts", TS)])
PLANTED = ("income", "debt_to_income", "credit_score")
UNPLANTED = tuple(f for f in NUMERIC_FEATURES if f not in PLANTED)


# --------------------------------------------------------------------------- fixtures and helpers

class Demo:
    """The default-sized demo (4 days x 24 h x 2000 rows), read back once."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.manifest = write_demo(directory=directory, now=NOW)
        self.pred = ds.dataset(directory / "predictions", format="parquet").to_table()
        self.labels = ds.dataset(directory / "labels", format="parquet").to_table()
        self.ref = pq.read_table(directory / "reference.parquet")
        self.ts = _us(self.pred["ts"])
        # labels joined onto predictions (-1: no label written)
        pos = pc.index_in(self.pred["prediction_id"], value_set=self.labels["prediction_id"].combine_chunks())
        found = np.asarray(pos.is_valid())
        idx = np.asarray(pos.fill_null(0))
        self.label = np.where(found, np.asarray(self.labels["label"])[idx], -1)
        self.arrival = np.where(found, _us(self.labels["ts"])[idx], -1)

    def rows(self, start: datetime, end: datetime) -> np.ndarray:
        return (self.ts >= _us_of(start)) & (self.ts < _us_of(end))

    def column(self, name: str, mask: np.ndarray) -> np.ndarray:
        return np.asarray(self.pred[name])[mask]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    return Demo(tmp_path_factory.mktemp("demo"))


def _us(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return np.asarray(column.cast(pa.int64()))


def _us_of(t: datetime) -> int:
    return (t - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def _partition_start(path: Path) -> datetime:
    date, hour = path.parent.parent.name, path.parent.name
    assert date.startswith("date=") and hour.startswith("hour=") and len(hour) == len("hour=HH"), path
    return datetime.fromisoformat(date[5:]).replace(tzinfo=UTC) + timedelta(hours=int(hour[5:]))


def _psi(reference: np.ndarray, current: np.ndarray) -> float:
    """PSI on 10 reference-quantile bins (ties merged), proportions floored at 1e-4."""
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, 11)[1:-1]))
    p = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=edges.size + 1) / reference.size
    q = np.bincount(np.searchsorted(edges, current, side="right"), minlength=edges.size + 1) / current.size
    p, q = np.maximum(p, 1e-4), np.maximum(q, 1e-4)
    return float(np.sum((q - p) * np.log(q / p)))


def _mix(values: np.ndarray, levels: np.ndarray) -> np.ndarray:
    return np.array([(values == v).mean() for v in levels])


def _auc(y: np.ndarray, score: np.ndarray) -> float:
    ranks = stats.rankdata(score)
    n1 = int(y.sum())
    return float((ranks[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * (y.size - n1)))


def _files(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*.parquet"))}


# --------------------------------------------------------------------------- manifest, layout, schema

def test_manifest_places_the_planted_changes_relative_to_now(demo: Demo) -> None:
    m = demo.manifest
    assert isinstance(m, DemoManifest)
    assert m.directory == demo.dir
    assert m.start == HOUR - timedelta(days=4) and m.end == HOUR + timedelta(hours=6)
    assert m.decay_start == HOUR - timedelta(hours=24)
    assert m.bias_start == HOUR - timedelta(hours=12)
    assert m.drift_start == HOUR - timedelta(hours=6)
    assert m.start < m.decay_start < m.bias_start < m.drift_start < NOW < m.end
    assert all(t.utcoffset() == timedelta(0) for t in (m.start, m.end, m.drift_start, m.bias_start, m.decay_start))
    assert m.drifted_numeric == PLANTED and m.drifted_categorical == ("region",)
    assert (m.bias_attribute, m.bias_group) == ("sex", "F")
    assert m.rows == (4 * 24 + 6) * 2000 == demo.pred.num_rows
    assert "sex=F" in m.describe()


def test_prediction_partitions_are_hourly_and_cover_the_range(demo: Demo) -> None:
    m = demo.manifest
    files = sorted((demo.dir / "predictions").rglob("*.parquet"))
    assert all(f.name == "part-0.parquet" for f in files)
    starts = [_partition_start(f) for f in files]
    hours = int((m.end - m.start) / timedelta(hours=1))
    assert starts == [m.start + timedelta(hours=i) for i in range(hours)]
    for f, start in zip(files[:: 17], starts[:: 17], strict=True):
        table = pq.read_table(f)
        assert table.schema.equals(PREDICTION_SCHEMA), f
        assert table.num_rows == 2000
        ts = _us(table["ts"])
        assert ts.min() >= _us_of(start) and ts.max() < _us_of(start + timedelta(hours=1))
        assert np.all(np.diff(ts) >= 0)
        # spread across the hour, not bunched
        assert np.ptp(ts) > 0.95 * 3600e6


def test_prediction_columns_have_the_designed_types_and_values(demo: Demo) -> None:
    pred = demo.pred
    assert pred.schema.equals(PREDICTION_SCHEMA)
    assert pc.count_distinct(pred["prediction_id"]).as_py() == pred.num_rows
    assert set(SENSITIVE_ATTRIBUTES).isdisjoint((*NUMERIC_FEATURES, *CATEGORICAL_FEATURES))
    assert set(pc.unique(pred["sex"]).to_pylist()) == {"M", "F"}
    assert set(pc.unique(pred["age_band"]).to_pylist()) == {"18-30", "31-50", "51+"}
    for name in NUMERIC_FEATURES:
        assert np.isfinite(np.asarray(pred[name])).all(), name
    score = np.asarray(pred["score"])
    assert ((score > 0) & (score < 1)).all()
    np.testing.assert_array_equal(np.asarray(pred["predicted_label"]), (score >= 0.5).astype(np.int64))
    # realistic marginals
    stationary = demo.rows(demo.manifest.start, demo.manifest.decay_start)
    assert 15_000 < np.median(demo.column("income", stationary)) < 120_000
    assert 18 <= demo.column("age", stationary).min() and demo.column("age", stationary).max() <= 85
    assert 300 <= demo.column("credit_score", stationary).min() and demo.column("credit_score", stationary).max() <= 850
    assert 0.0 <= demo.column("utilization", stationary).min() and demo.column("utilization", stationary).max() <= 1.0
    assert 0.15 <= demo.column("predicted_label", stationary).mean() <= 0.30


def test_reference_has_the_prediction_columns_and_labels(demo: Demo) -> None:
    ref = demo.ref
    assert ref.schema.equals(PREDICTION_SCHEMA.append(pa.field("label", pa.int64())))
    assert ref.num_rows == 20_000
    assert pc.count_distinct(ref["prediction_id"]).as_py() == ref.num_rows
    assert not pc.any(pc.is_in(ref["prediction_id"], value_set=demo.pred["prediction_id"].combine_chunks())).as_py()
    assert _us(ref["ts"]).max() < _us_of(demo.manifest.start)
    assert set(np.unique(np.asarray(ref["label"]))) == {0, 1}


# --------------------------------------------------------------------------- labels

def test_label_partitions_follow_arrival_time(demo: Demo) -> None:
    m = demo.manifest
    files = sorted((demo.dir / "labels").rglob("*.parquet"))
    assert len(files) > 90
    for f in files[:: 11]:
        table = pq.read_table(f)
        assert table.schema.equals(LABEL_SCHEMA), f
        start = _partition_start(f)
        ts = _us(table["ts"])
        assert ts.min() >= _us_of(start) and ts.max() < _us_of(start + timedelta(hours=1))
    arrival = _us(demo.labels["ts"])
    assert arrival.min() >= _us_of(m.start) and arrival.max() < _us_of(m.end)
    assert set(np.unique(np.asarray(demo.labels["label"]))) == {0, 1}


def test_labels_arrive_after_their_prediction_within_max_delay(demo: Demo) -> None:
    ids = demo.labels["prediction_id"]
    assert pc.count_distinct(ids).as_py() == len(ids)
    assert pc.all(pc.is_in(ids, value_set=demo.pred["prediction_id"].combine_chunks())).as_py()
    has = demo.arrival >= 0
    assert has.sum() == demo.labels.num_rows
    delay = demo.arrival[has] - demo.ts[has]
    assert delay.min() >= 0
    assert delay.max() <= 3 * 24 * 3600 * 10**6
    # settled predictions (all labels in): Exponential(mean 12 h) capped at 3 d
    settled = demo.rows(demo.manifest.start, demo.manifest.end - timedelta(days=3))[has]
    hours = delay[settled] / 3600e6
    assert hours.mean() == pytest.approx(12, abs=0.5)
    assert np.median(hours) == pytest.approx(12 * np.log(2), abs=0.5)


def test_about_ninety_percent_of_predictions_get_a_label_eventually(demo: Demo) -> None:
    m = demo.manifest
    settled = demo.rows(m.start, m.end - timedelta(days=3))  # every label of these has arrived
    assert settled.sum() > 50_000
    assert 0.88 < (demo.label[settled] >= 0).mean() < 0.92
    recent = demo.rows(m.end - timedelta(hours=2), m.end)  # most labels still to come
    assert (demo.label[recent] >= 0).mean() < 0.2


# --------------------------------------------------------------------------- determinism

def test_same_seed_and_now_give_identical_files(tmp_path: Path) -> None:
    kwargs = dict(now=NOW, days=1, hours_ahead=1, rows_per_hour=100, reference_rows=300)
    a = write_demo(directory=tmp_path / "a", **kwargs)
    b = write_demo(directory=tmp_path / "b", **kwargs)
    c = write_demo(directory=tmp_path / "c", seed=8, **kwargs)
    assert a.rows == b.rows == c.rows
    fa, fb, fc = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert len(fa) > 40 and fa == fb
    assert fa.keys() >= {"reference.parquet"} and fa["reference.parquet"] != fc["reference.parquet"]
    assert fa["predictions/date=2026-02-28/hour=15/part-0.parquet"] != \
        fc["predictions/date=2026-02-28/hour=15/part-0.parquet"]


def test_a_naive_now_is_utc_and_rewriting_replaces_the_old_partitions(tmp_path: Path) -> None:
    kwargs = dict(days=1, hours_ahead=1, rows_per_hour=20, reference_rows=50)
    old = write_demo(directory=tmp_path, now=NOW - timedelta(days=3), **kwargs)
    new = write_demo(directory=tmp_path, now=NOW.replace(tzinfo=None), **kwargs)
    assert new.start == HOUR - timedelta(days=1) and new.start > old.end
    table = ds.dataset(tmp_path / "predictions", format="parquet").to_table()
    assert table.num_rows == new.rows
    assert _us(table["ts"]).min() >= _us_of(new.start)
    assert sorted(p.name for p in (tmp_path / "predictions").iterdir()) == ["date=2026-02-28", "date=2026-03-01"]


@pytest.mark.parametrize("bad", [{"days": 0}, {"rows_per_hour": 0}, {"hours_ahead": -1}, {"days": 1.5},
                                 {"seed": True}])
def test_bad_arguments_are_refused(tmp_path: Path, bad: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=rf"{next(iter(bad))} must be an integer >= \d+, got"):
        write_demo(directory=tmp_path, now=NOW, **bad)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- planted feature drift

def test_planted_numeric_features_drift_by_the_designed_amount(demo: Demo) -> None:
    m = demo.manifest
    hour = demo.rows(m.drift_start + timedelta(hours=3), m.drift_start + timedelta(hours=4))
    before = demo.rows(m.drift_start - timedelta(hours=1), m.drift_start)
    assert hour.sum() == before.sum() == 2000
    for name in PLANTED:
        ref, cur = np.asarray(demo.ref[name]), demo.column(name, hour)
        d = stats.ks_2samp(ref, cur).statistic
        assert d > 0.3, (name, d)  # designed: 1 sd shift -> D ~ 0.38
        assert _psi(ref, cur) > 0.5, name
        # the hour before the drift is unchanged
        assert stats.ks_2samp(ref, demo.column(name, before)).statistic < 0.06, name
    # direction and size: +1 sd of log income (0.5), +1 sd of log DTI (0.35), -1 sd of credit score (60)
    ref_log_inc = np.log(np.asarray(demo.ref["income"]))
    assert np.median(np.log(demo.column("income", hour))) - np.median(ref_log_inc) == pytest.approx(0.5, abs=0.08)
    ref_log_dti = np.log(np.asarray(demo.ref["debt_to_income"]))
    assert np.median(np.log(demo.column("debt_to_income", hour))) - np.median(ref_log_dti) == \
        pytest.approx(0.35, abs=0.06)
    shift = demo.column("credit_score", hour).mean() - np.asarray(demo.ref["credit_score"]).mean()
    assert shift == pytest.approx(-60, abs=8)


def test_unplanted_numeric_features_do_not_drift(demo: Demo) -> None:
    m = demo.manifest
    for offset in (1, 5):  # one hour well after the drift, one just before now
        hour = demo.rows(m.drift_start + timedelta(hours=offset), m.drift_start + timedelta(hours=offset + 1))
        for name in UNPLANTED:
            ref, cur = np.asarray(demo.ref[name]), demo.column(name, hour)
            res = stats.ks_2samp(ref, cur)
            assert res.statistic < 0.06 and res.pvalue > 0.001, (name, offset, res)
            assert _psi(ref, cur) < 0.05, (name, offset)


def test_drift_does_not_touch_any_other_column(tmp_path: Path) -> None:
    """Rewrite with ``now`` 6 h later: the hours just before ``now`` differ only by the feature drift."""
    kwargs = dict(days=1, hours_ahead=0, rows_per_hour=300, reference_rows=50)
    drifted = write_demo(directory=tmp_path / "a", now=NOW, **kwargs)
    write_demo(directory=tmp_path / "b", now=NOW + timedelta(hours=6), **kwargs)
    # in both runs the hour [h-2h, h-1h) is under decay and bias; only run "a" has drift there
    part = (HOUR - timedelta(hours=2)).strftime("date=%Y-%m-%d/hour=%H/part-0.parquet")
    assert HOUR - timedelta(hours=2) >= drifted.drift_start
    a = pq.read_table(tmp_path / "a" / "predictions" / part)
    b = pq.read_table(tmp_path / "b" / "predictions" / part)
    for name in PREDICTION_SCHEMA.names:
        same = a[name].equals(b[name])
        changed = name in (*PLANTED, "region", "score", "predicted_label")
        assert same != changed, name


def test_region_mix_changes_and_other_categoricals_do_not(demo: Demo) -> None:
    m = demo.manifest
    hour = demo.rows(m.drift_start + timedelta(hours=2), m.drift_start + timedelta(hours=3))
    for name in CATEGORICAL_FEATURES:
        levels = np.unique(np.asarray(demo.ref[name]))
        ref, cur = _mix(np.asarray(demo.ref[name]), levels), _mix(demo.column(name, hour), levels)
        tv = 0.5 * np.abs(ref - cur).sum()
        if name == "region":
            assert tv > 0.25, tv  # designed: 0.35
        else:
            assert tv < 0.06, (name, tv)


# --------------------------------------------------------------------------- bias and accuracy decay

def _selection_gap(demo: Demo, start: datetime, end: datetime) -> float:
    rows = demo.rows(start, end)
    sex, pred = demo.column("sex", rows), demo.column("predicted_label", rows)
    return float(pred[sex == "F"].mean() - pred[sex == "M"].mean())


def test_bias_opens_a_selection_rate_gap_by_sex(demo: Demo) -> None:
    m = demo.manifest
    assert abs(_selection_gap(demo, m.start, m.bias_start)) < 0.05
    assert abs(_selection_gap(demo, m.bias_start - timedelta(hours=2), m.bias_start)) < 0.05
    assert _selection_gap(demo, m.bias_start, m.drift_start) > 0.1
    assert _selection_gap(demo, m.bias_start, m.bias_start + timedelta(hours=1)) > 0.1
    assert _selection_gap(demo, m.drift_start, m.end) > 0.1
    # the truth does not depend on sex
    rows = demo.rows(m.bias_start, m.end) & (demo.label >= 0)
    sex = demo.column("sex", rows)
    assert abs(demo.label[rows][sex == "F"].mean() - demo.label[rows][sex == "M"].mean()) < 0.03


def test_accuracy_decays_after_decay_start(demo: Demo) -> None:
    m = demo.manifest

    def quality(start: datetime, end: datetime) -> tuple[float, float]:
        rows = demo.rows(start, end) & (demo.label >= 0)
        y, pred, score = demo.label[rows], demo.column("predicted_label", rows), demo.column("score", rows)
        return float((y == pred).mean()), _auc(y, score)

    acc_before, auc_before = quality(m.start, m.decay_start)
    acc_after, auc_after = quality(m.decay_start, m.bias_start)  # decay alone, before the bias
    assert acc_before > 0.78 and auc_before > 0.8
    assert acc_after < acc_before - 0.08
    assert auc_after < 0.7
    # the reference is the unplanted process: it scores like the stationary period
    ref_y, ref_pred = np.asarray(demo.ref["label"]), np.asarray(demo.ref["predicted_label"])
    assert (ref_y == ref_pred).mean() == pytest.approx(acc_before, abs=0.02)
    assert _auc(ref_y, np.asarray(demo.ref["score"])) == pytest.approx(auc_before, abs=0.02)


def test_reference_is_free_of_planted_changes(demo: Demo) -> None:
    m = demo.manifest
    stationary = demo.rows(m.start, m.decay_start)
    for name in NUMERIC_FEATURES:
        d = stats.ks_2samp(np.asarray(demo.ref[name]), demo.column(name, stationary)).statistic
        assert d < 0.03, name
    region = np.asarray(demo.ref["region"])
    assert (region == "north").mean() == pytest.approx(0.30, abs=0.02)
    ref_sex, ref_pred = np.asarray(demo.ref["sex"]), np.asarray(demo.ref["predicted_label"])
    assert abs(ref_pred[ref_sex == "F"].mean() - ref_pred[ref_sex == "M"].mean()) < 0.03


# --------------------------------------------------------------------------- configuration

def test_demo_config_is_valid_and_matches_the_data(tmp_path: Path) -> None:
    cfg = load_config(CONFIG, base_dir=tmp_path)
    assert cfg.server.listen == "127.0.0.1:9108"
    assert cfg.state_path == (tmp_path / "state").resolve()
    (model,) = cfg.models
    assert model.name == "credit-default"
    assert model.window == timedelta(hours=1) and model.schedule.every == timedelta(seconds=30)
    assert tuple(model.features.numeric) == NUMERIC_FEATURES
    assert tuple(model.features.categorical) == CATEGORICAL_FEATURES
    assert tuple(model.sensitive) == SENSITIVE_ATTRIBUTES
    assert cfg.resolve(model.predictions.path) == str((tmp_path / "predictions").resolve())
    assert model.ground_truth is not None
    assert cfg.resolve(model.ground_truth.path) == str((tmp_path / "labels").resolve())
    assert model.ground_truth.max_delay == timedelta(days=3)
    assert model.reference.path is not None
    assert cfg.resolve(model.reference.path) == str((tmp_path / "reference.parquet").resolve())
    columns = set(PREDICTION_SCHEMA.names)
    p = model.predictions
    assert {p.id, p.timestamp, p.prediction, p.score} <= columns
    assert {d.type for d in model.detectors} == {"psi", "ks"}

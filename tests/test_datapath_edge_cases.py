"""Data path and configuration edge cases a review reproduced (each failed before its fix): detector features
of a kind the detector does not score, late files in a reference range, sensitive columns read only for a
detector that reads them, and columns given two clashing roles.

Each test writes real Parquet files with pyarrow into ``tmp_path`` and runs the real CLI in process
(``monitor.cli.main``).
"""

from __future__ import annotations

import io
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from monitor.cli import main

AT = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def _table(start: datetime, n: int = 400, *, shift: float = 0.0, seed: int = 0) -> pa.Table:
    """``n`` predictions one second apart from ``start``: id, ts, x (numeric), age (float), c, pred."""
    rng = np.random.default_rng(seed)
    return pa.table({
        "id": [f"r{i}" for i in range(n)],
        "ts": pa.array([start + timedelta(seconds=i) for i in range(n)], pa.timestamp("us", tz="UTC")),
        "x": rng.normal(shift, 1.0, n),
        "age": rng.uniform(18, 80, n),
        "c": rng.choice(["a", "b", "c"], n),
        "pred": rng.integers(0, 2, n),
    })


def _config(tmp_path: Path, *, reference: dict[str, Any], features: dict[str, list[str]] | None = None,
            detectors: list[dict[str, Any]] | None = None, **model: Any) -> Path:
    m = {
        "name": "m",
        "schedule": {"every": "5m"},
        "window": "1h",
        "predictions": {"path": "preds", "id": "id", "timestamp": "ts", "prediction": "pred"},
        "features": features or {"numeric": ["x"]},
        "reference": reference,
        "detectors": detectors or [{"type": "psi"}],
    } | model
    path = tmp_path / "atalaia.yaml"
    path.write_text(yaml.safe_dump({"state_dir": "state", "models": [m]}))
    return path


def _check(config: Path, at: datetime = AT) -> tuple[int, list[dict[str, Any]]]:
    out = io.StringIO()
    code = main(["check", "--config", str(config), "--at", at.isoformat(), "--format", "json"], stdout=out)
    return code, [json.loads(line) for line in out.getvalue().splitlines()]


def _validate(config: Path) -> int:
    return main(["validate", "--config", str(config)], stdout=io.StringIO())


def _set_mtime(path: Path, t: datetime) -> None:
    ns = int(t.timestamp()) * 10**9
    os.utime(path, ns=(ns, ns))


def _sink(tmp_path: Path, *, shift: float = 0.0) -> None:
    """A flat sink with 400 rows in the window ``[AT - 1h, AT)``, and a path reference of 400 rows."""
    (tmp_path / "preds").mkdir()
    pq.write_table(_table(AT - timedelta(minutes=30), shift=shift, seed=1), tmp_path / "preds" / "w.parquet")
    pq.write_table(_table(AT - timedelta(days=3), seed=2), tmp_path / "ref.parquet")
    _set_mtime(tmp_path / "preds" / "w.parquet", AT)


# --------------------------------------------------------------------------- 1. detector features of the wrong kind


def test_detector_features_of_a_kind_the_detector_does_not_apply_to_are_a_configuration_error(tmp_path: Path) -> None:
    """``ks`` (numeric only) on a categorical feature and ``chi2`` (categorical only) on a numeric one:
    `validate` says ok and `check` silently prints *no finding at all* for them and exits 0 ("all ok"),
    although x is shifted by 3 sd — the user believes x is monitored and it is not.  Naming a feature
    a detector cannot score must be a configuration problem with its path (exit 2)."""
    _sink(tmp_path, shift=3.0)
    config = _config(tmp_path, reference={"path": "ref.parquet"},
                     features={"numeric": ["x"], "categorical": ["c"]},
                     detectors=[{"type": "ks", "features": ["c"]}, {"type": "chi2", "features": ["x"]}])
    code, findings = _check(config)
    assert (code, _validate(config)) == (2, 2), \
        f"check exited {code} with {len(findings)} findings; a detector asked to score a feature it cannot score"


# --------------------------------------------------------------------------- 2. stale reference cache (flat sink)


def test_fixed_range_reference_is_rebuilt_when_a_file_with_rows_in_the_range_arrives_later(tmp_path: Path) -> None:
    """A fixed ``{start, end}`` reference on a flat (unpartitioned) sink.  The first check runs before the
    range's data has landed: the reference is empty and is cached.  Then a file holding 400 rows of the
    range is written (backfill, a late writer: its mtime is after ``end``, as every file written now is).
    The cache key leaves out unpartitioned files written after ``end``, so the empty reference is reused
    for good: a warm check still reports n_reference 0 / insufficient_data, while a cold check (state dir
    removed) reports n_reference 400 — the same check gives two different finding sets."""
    _sink(tmp_path)
    ref_start, ref_end = AT - timedelta(days=3), AT - timedelta(days=2)
    config = _config(tmp_path, reference={"start": ref_start.isoformat(), "end": ref_end.isoformat()})
    _, before = _check(config)
    assert {f["n_reference"] for f in before} == {0}
    backfill = tmp_path / "preds" / "backfill.parquet"
    pq.write_table(_table(ref_start + timedelta(hours=1), seed=3), backfill)
    _set_mtime(backfill, ref_end + timedelta(days=1))  # written after the range's end (any file written now is)
    _, warm = _check(config)
    import shutil
    shutil.rmtree(tmp_path / "state")
    _, cold = _check(config)
    assert {f["n_reference"] for f in cold} == {400}
    assert {f["n_reference"] for f in warm} == {400}, "the cached (empty) reference was reused after new reference data"


def test_fixed_range_reference_is_rebuilt_when_a_late_file_is_replaced(tmp_path: Path) -> None:
    """The same key gap, with data that changes: a reference file written after the range's end (its
    mtime is after ``end``) is replaced by a corrected one with different values.  The warm check keeps
    the profile of the old file, so its findings differ from a cold check's."""
    _sink(tmp_path)
    ref_start, ref_end = AT - timedelta(days=3), AT - timedelta(days=2)
    late = tmp_path / "preds" / "late.parquet"
    pq.write_table(_table(ref_start, seed=3, shift=5.0), late)     # the range's data, wrong (shifted by 5 sd)
    _set_mtime(late, ref_end + timedelta(hours=1))
    config = _config(tmp_path, reference={"start": ref_start.isoformat(), "end": ref_end.isoformat()})
    _check(config)
    pq.write_table(_table(ref_start, n=500, seed=3), late)         # corrected: 500 rows, unshifted
    _set_mtime(late, ref_end + timedelta(hours=2))
    _, warm = _check(config)
    import shutil
    shutil.rmtree(tmp_path / "state")
    _, cold = _check(config)
    key = lambda fs: sorted((f["detector"], f["target"], f["status"], f["n_reference"], round(f["value"], 9))  # noqa: E731
                            for f in fs)
    assert {f["n_reference"] for f in cold} == {500}
    assert key(warm) == key(cold)


def test_fixed_range_reference_on_daily_partitions_sees_late_rows_of_the_partition_holding_its_end(
        tmp_path: Path) -> None:
    """Daily hive partitions (``date=YYYY-MM-DD``) and a fixed range ending at noon.  The partition of
    that day holds the range's end, so the cache key leaves all of its files out.  A late file with 400
    rows of that morning lands in it after the first check: the warm check keeps the reference without
    them (n_reference 400), a cold one has them (800)."""
    (tmp_path / "preds").mkdir()
    ref_start, ref_end = AT - timedelta(days=2, hours=12), AT - timedelta(days=2)   # 2026-11-25 00:00 .. 12:00
    day = tmp_path / "preds" / f"date={ref_start:%Y-%m-%d}"
    day.mkdir()
    pq.write_table(_table(ref_start + timedelta(hours=1), seed=2), day / "a.parquet")
    now = tmp_path / "preds" / f"date={AT:%Y-%m-%d}"
    now.mkdir()
    pq.write_table(_table(AT - timedelta(minutes=30), seed=1), now / "w.parquet")
    config = _config(tmp_path, reference={"start": ref_start.isoformat(), "end": ref_end.isoformat()})
    _check(config)
    pq.write_table(_table(ref_start + timedelta(hours=5), seed=3), day / "late.parquet")
    _, warm = _check(config)
    import shutil
    shutil.rmtree(tmp_path / "state")
    _, cold = _check(config)
    assert {f["n_reference"] for f in cold} == {800}
    assert {f["n_reference"] for f in warm} == {800}


# --------------------------------------------------------------------------- 3. sensitive columns and batch detectors


def test_a_numeric_feature_also_listed_as_sensitive_is_still_read_with_multivariate(tmp_path: Path) -> None:
    """``age`` is a (float) numeric feature and also a sensitive attribute.  With a detector that uses
    batches (``multivariate``) the evaluator asks the files for every sensitive column as *categorical*,
    which overrides age's numeric kind: every file — reference and window — is then skipped as
    ``retyped_column`` and every finding is insufficient_data with 0 rows (exit 2), though the data is
    fine and multivariate reads only numeric columns."""
    _sink(tmp_path)
    config = _config(tmp_path, reference={"path": "ref.parquet"}, features={"numeric": ["x", "age"]},
                     sensitive=["age"], detectors=[{"type": "psi"}, {"type": "multivariate"}])
    assert _validate(config) == 0
    code, findings = _check(config)
    assert {f["n_current"] for f in findings} == {400}
    # multivariate calibrates on the held-out half of the reference rows
    assert {(f["detector"], f["n_reference"]) for f in findings} == {("psi", 400), ("multivariate", 200)}
    assert code in (0, 1)


def test_sensitive_columns_are_not_required_of_a_reference_file_by_drift_detectors(tmp_path: Path) -> None:
    """The reference file holds the prediction columns (README: "prediction columns (+ label, if any)"),
    not the sensitive attributes.  No shipped detector reads sensitive columns (fairness is not built,
    ``multivariate`` declares ``batch_fields = {"numeric"}``), yet with ``multivariate`` configured the
    evaluator requires them of every file: the reference file is skipped as ``missing_column``, the
    reference has 0 rows, and every finding is insufficient_data (exit 2) — on every run, since a
    partial reference is never cached."""
    (tmp_path / "preds").mkdir()
    window = _table(AT - timedelta(minutes=30), seed=1).append_column("sex", pa.array(["F", "M"] * 200))
    pq.write_table(window, tmp_path / "preds" / "w.parquet")
    pq.write_table(_table(AT - timedelta(days=3), seed=2), tmp_path / "ref.parquet")  # no "sex"
    config = _config(tmp_path, reference={"path": "ref.parquet"}, features={"numeric": ["x", "age"]},
                     sensitive=["sex"], detectors=[{"type": "psi"}, {"type": "multivariate"}])
    code, findings = _check(config)
    assert {(f["detector"], f["n_reference"]) for f in findings} == {("psi", 400), ("multivariate", 200)}
    assert code in (0, 1)


# --------------------------------------------------------------------------- 4. role clashes pass validate


@pytest.mark.parametrize("clash", ["timestamp_as_feature", "class_prediction_as_numeric_feature"])
def test_a_column_given_two_clashing_roles_is_a_configuration_error(tmp_path: Path, clash: str) -> None:
    """The timestamp column listed as a numeric feature, or the predicted class (classification) also
    listed as a numeric feature: `validate` says ok (exit 0), but the evaluator reads the column under
    one kind only and rejects it in *every* file (``retyped_column``), so every run has 0 rows and
    every finding is insufficient_data.  `validate` must report the clash with its path (exit 2)."""
    _sink(tmp_path)
    if clash == "timestamp_as_feature":
        config = _config(tmp_path, reference={"path": "ref.parquet"}, features={"numeric": ["x", "ts"]})
    else:
        config = _config(tmp_path, reference={"path": "ref.parquet"}, features={"numeric": ["x", "pred"]})
    assert _validate(config) == 2


def test_an_integer_category_written_as_float_with_missing_values_is_the_same_category(tmp_path: Path) -> None:
    """pandas writes an integer column that has a missing value as float64 with NaN.  A categorical feature
    whose reference file holds int64 codes and whose window file holds the same codes as float64 was a
    retyped column (the file skipped), and counted directly its codes were the categories "1.0", "2.0"…:
    every value unseen, chi2 and total variation alerting on no change."""
    rng = np.random.default_rng(4)
    (tmp_path / "preds").mkdir()
    plan = rng.integers(1, 4, 400)
    ref = _table(AT - timedelta(days=3), seed=2).append_column("plan", pa.array(plan))
    codes = rng.permutation(plan).astype(np.float64)  # the same codes: no change
    codes[::40] = np.nan  # 10 missing
    as_float = _table(AT - timedelta(minutes=30), seed=1).append_column("plan", pa.array(codes))
    pq.write_table(ref, tmp_path / "ref.parquet")
    pq.write_table(as_float, tmp_path / "preds" / "w.parquet")
    _set_mtime(tmp_path / "preds" / "w.parquet", AT)
    config = _config(tmp_path, reference={"path": "ref.parquet"}, features={"categorical": ["plan"]},
                     detectors=[{"type": "chi2"}, {"type": "total_variation"}, {"type": "data_quality"}])
    code, findings = _check(config)
    by = {(f["detector"], f["statistic"]): f for f in findings if f["target"] == "plan"}
    assert by[("chi2", "cohens_w")]["status"] == "ok" and by[("chi2", "cohens_w")]["n_current"] == 390
    assert "unseen" not in (by[("chi2", "cohens_w")]["note"] or "")
    assert by[("total_variation", "total_variation")]["status"] == "ok"
    assert by[("data_quality", "unseen_rate")]["value"] == 0.0
    assert by[("data_quality", "missing_rate")]["value"] == pytest.approx(10 / 400)
    # the same window written as int64 with nulls gives the same findings
    ints = as_float.set_column(as_float.schema.get_field_index("plan"), "plan",
                               pa.array([None if np.isnan(v) else int(v) for v in codes], pa.int64()))
    pq.write_table(ints, tmp_path / "preds" / "w.parquet")
    _set_mtime(tmp_path / "preds" / "w.parquet", AT + timedelta(seconds=1))
    code2, again = _check(config, AT + timedelta(seconds=2))
    assert code2 == code
    assert [(f["detector"], f["statistic"], f["value"]) for f in again] == \
        [(f["detector"], f["statistic"], f["value"]) for f in findings]


def test_check_exits_2_when_every_finding_is_insufficient_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                              ) -> None:
    """A 50-row reference (psi's min_rows is 100) compared nothing, yet check exited 0, "all ok"."""
    (tmp_path / "preds").mkdir()
    pq.write_table(_table(AT - timedelta(minutes=30), seed=1), tmp_path / "preds" / "w.parquet")
    pq.write_table(_table(AT - timedelta(days=3), n=50, seed=2), tmp_path / "ref.parquet")
    _set_mtime(tmp_path / "preds" / "w.parquet", AT)
    code, findings = _check(_config(tmp_path, reference={"path": "ref.parquet"}))
    assert {f["status"] for f in findings} == {"insufficient_data"}
    assert code == 2
    assert "nothing was compared: every finding is insufficient_data (50 reference and 400 window rows" \
        in capsys.readouterr().err
    # one comparable finding is enough for the usual exit codes
    pq.write_table(_table(AT - timedelta(days=3), n=400, seed=2), tmp_path / "ref.parquet")
    code, findings = _check(_config(tmp_path, reference={"path": "ref.parquet"}), AT + timedelta(seconds=1))
    assert code in (0, 1) and "ok" in {f["status"] for f in findings}


def test_the_table_prints_names_with_brackets_as_they_are(tmp_path: Path) -> None:
    """rich read "dist[km]" as markup (printed "dist") and "x[/]" as a closing tag (MarkupError: no findings)."""
    (tmp_path / "preds").mkdir()
    for name, seed in (("preds/w.parquet", 1), ("ref.parquet", 2)):
        t = _table(AT - (timedelta(minutes=30) if seed == 1 else timedelta(days=3)), seed=seed)
        t = t.append_column("dist[km]", t.column("x")).append_column("x[/]", t.column("age"))
        pq.write_table(t, tmp_path / name)
    _set_mtime(tmp_path / "preds" / "w.parquet", AT)
    config = _config(tmp_path, reference={"path": "ref.parquet"}, features={"numeric": ["dist[km]", "x[/]"]})
    out = io.StringIO()
    code = main(["check", "--config", str(config), "--at", AT.isoformat(), "--format", "table"], stdout=out)
    assert code in (0, 1)
    text = out.getvalue()
    assert "dist[km]" in text and "x[/]" in text


def test_a_class_written_as_booleans_is_the_class_written_as_0_and_1(tmp_path: Path) -> None:
    """A reference holding the predicted class as int 0/1 and a window file holding it as bool: the window's
    values were the unseen categories "True" and "False" (psi, chi2 and unseen_rate alerting on no change)."""
    (tmp_path / "preds").mkdir()
    ref = _table(AT - timedelta(days=3), seed=2)
    window = _table(AT - timedelta(minutes=30), seed=2)  # the same rows: no change
    window = window.set_column(window.schema.get_field_index("pred"), "pred",
                               pa.array(window.column("pred").to_numpy().astype(bool)))
    pq.write_table(ref, tmp_path / "ref.parquet")
    pq.write_table(window, tmp_path / "preds" / "w.parquet")
    _set_mtime(tmp_path / "preds" / "w.parquet", AT)
    code, findings = _check(_config(tmp_path, reference={"path": "ref.parquet"},
                                    detectors=[{"type": "psi"}, {"type": "chi2"}, {"type": "data_quality"}]))
    pred = [f for f in findings if f["target"] == "pred"]
    assert {f["detector"] for f in pred} == {"psi", "chi2", "data_quality"}
    assert {f["status"] for f in pred} == {"ok"}, pred
    assert code == 0


def test_check_says_which_files_it_left_out_as_still_being_written(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A footerless file modified within in_progress_grace is left for a later run, which a one-shot check
    does not have: its rows were lost without a word, and for a reference the warning said it "has no rows"."""
    _sink(tmp_path)
    late = tmp_path / "preds" / "late.parquet"
    pq.write_table(_table(AT - timedelta(minutes=20), n=300, seed=3), late)
    late.write_bytes(late.read_bytes()[:-200])  # no footer yet
    _set_mtime(late, AT - timedelta(minutes=1))
    config = _config(tmp_path, reference={"path": "ref.parquet"}, predictions={
        "path": "preds", "id": "id", "timestamp": "ts", "prediction": "pred", "in_progress_grace": "36500d"})
    code, findings = _check(config)
    err = capsys.readouterr().err
    assert {f["n_current"] for f in findings} == {400}
    assert f"left out 1 file(s) still being written (no footer yet, modified within in_progress_grace): {late}" \
        in err
    # the reference's only file still being written: "no rows yet", and which file
    ref = tmp_path / "ref.parquet"
    ref.write_bytes(ref.read_bytes()[:-200])
    code, findings = _check(config, AT + timedelta(seconds=1))
    err = capsys.readouterr().err
    assert code == 2
    assert "has no rows yet: 1 file(s) still being written were left out" in err and str(ref) in err

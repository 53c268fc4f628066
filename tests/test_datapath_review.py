"""Data path defects a review of hostile input reproduced (each test failed before its fix):

* one missing or retyped column threw the whole file away, so every other feature, the score and the
  prediction lost its rows too; a reference file lacking one feature left every detector without data;
* a ``latest`` symbolic link to the newest partition (or a link loop) counted its files twice;
* a partition directory ``hour=24`` was taken as the next day's first hour and pruned without a word.

Real Parquet files in ``tmp_path``; the real CLI in process (``monitor.cli.main``).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from monitor.cli import main
from monitor.sources.parquet import partition_range

AT = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def _table(start: datetime, n: int = 400, *, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({
        "id": [f"r{seed}-{i}" for i in range(n)],
        "ts": pa.array([start + timedelta(seconds=i) for i in range(n)], pa.timestamp("us", tz="UTC")),
        "x": rng.normal(0.0, 1.0, n),
        "age": rng.uniform(18, 80, n),
        "c": rng.choice(["a", "b", "c"], n),
        "pred": rng.integers(0, 2, n),
    })


def _config(tmp_path: Path, *, reference: dict[str, Any] | None = None, window: str = "1h") -> Path:
    m = {
        "name": "m", "schedule": {"every": "5m"}, "window": window,
        "predictions": {"path": "preds", "id": "id", "timestamp": "ts", "prediction": "pred"},
        "features": {"numeric": ["x", "age"], "categorical": ["c"]},
        "reference": reference or {"path": "ref.parquet"},
        "detectors": [{"type": "ks"}, {"type": "chi2"}],
    }
    path = tmp_path / "atalaia.yaml"
    path.write_text(yaml.safe_dump({"state_dir": "state", "models": [m]}))
    return path


def _check(config: Path) -> tuple[int, dict[tuple[str, str], dict[str, Any]]]:
    out = io.StringIO()
    code = main(["check", "--config", str(config), "--at", AT.isoformat(), "--format", "json"], stdout=out)
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    return code, {(r["detector"], r["target"]): r for r in rows}


def _write(path: Path, table: pa.Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    ns = int(AT.timestamp()) * 10**9 - 10**12  # written well before the run: not "still being written"
    os.utime(path, ns=(ns, ns))


def test_a_file_without_one_feature_keeps_its_rows_for_every_other_column(tmp_path: Path) -> None:
    _write(tmp_path / "preds" / "a.parquet", _table(AT - timedelta(minutes=50), seed=1))
    _write(tmp_path / "preds" / "b.parquet", _table(AT - timedelta(minutes=30), seed=2).drop_columns(["age"]))
    _write(tmp_path / "ref.parquet", _table(AT - timedelta(days=2), seed=3))

    code, found = _check(_config(tmp_path))

    assert found[("ks", "x")]["n_current"] == 800
    assert found[("chi2", "c")]["n_current"] == 800
    assert found[("chi2", "pred")]["n_current"] == 800
    assert found[("ks", "age")]["n_current"] == 400
    assert code == 2  # the run is partial: a file lacked a column (named on stderr)


def test_a_reference_without_one_feature_still_serves_the_others(tmp_path: Path) -> None:
    _write(tmp_path / "preds" / "a.parquet", _table(AT - timedelta(minutes=50), seed=1))
    _write(tmp_path / "ref.parquet", _table(AT - timedelta(days=2), seed=3).drop_columns(["age"]))

    _, found = _check(_config(tmp_path))

    assert found[("ks", "x")]["n_reference"] == 400 and found[("ks", "x")]["status"] != "insufficient_data"
    assert found[("chi2", "c")]["n_reference"] == 400
    assert found[("ks", "age")]["status"] == "insufficient_data"


def _hourly(tmp_path: Path, hours: int) -> list[Path]:
    dirs = []
    for h in range(hours):
        t = AT - timedelta(hours=hours - h)
        d = tmp_path / "preds" / f"date={t:%Y-%m-%d}" / f"hour={t:%H}"
        _write(d / "part-0.parquet", _table(t, n=100, seed=h))
        dirs.append(d)
    return dirs


def test_a_latest_link_to_a_partition_and_a_link_loop_count_each_file_once(tmp_path: Path) -> None:
    dirs = _hourly(tmp_path, 3)
    (tmp_path / "preds" / "latest").symlink_to(dirs[-1], target_is_directory=True)
    (dirs[0] / "again").symlink_to(tmp_path / "preds", target_is_directory=True)  # a loop
    _write(tmp_path / "ref.parquet", _table(AT - timedelta(days=2), seed=3))

    _, found = _check(_config(tmp_path, window="3h"))

    assert found[("ks", "x")]["n_current"] == 300


def test_an_hour_outside_0_to_23_is_read_with_the_row_filter_not_pruned(tmp_path: Path) -> None:
    assert partition_range({"date": "2026-11-27", "hour": "24"}) is None
    assert partition_range({"date": "2026-11-27", "hour": "-1"}) is None
    assert partition_range({"date": "2026-11-27", "hour": "23"}) is not None
    t = AT - timedelta(minutes=40)  # rows inside the window, in a directory named as no hour of any day
    _write(tmp_path / "preds" / f"date={t:%Y-%m-%d}" / "hour=24" / "part-0.parquet", _table(t, n=100, seed=5))
    _write(tmp_path / "ref.parquet", _table(AT - timedelta(days=2), seed=3))

    _, found = _check(_config(tmp_path))

    assert found[("ks", "x")]["n_current"] == 100


def test_validate_refuses_model_columns_that_clash_and_empty_names_all_at_once(tmp_path: Path) -> None:
    """Before, each of these passed ``validate`` and then broke every run (an Arrow cast error naming
    nothing, or every file skipped as retyped or as lacking the column '')."""
    path = _config(tmp_path)
    doc = yaml.safe_load(path.read_text())
    m = doc["models"][0]
    m["predictions"] |= {"score": "ts", "prediction": "id"}
    m["features"]["numeric"] = ["x", ""]
    doc["models"].append(json.loads(json.dumps(m)) | {"name": "m2"})
    doc["models"][1]["predictions"] |= {"score": "pred", "prediction": "pred", "timestamp": "id"}
    doc["models"][1]["features"]["numeric"] = ["x"]
    path.write_text(yaml.safe_dump(doc))
    err = io.StringIO()

    with contextlib.redirect_stderr(err):
        code = main(["validate", "--config", str(path)], stdout=io.StringIO())

    text = err.getvalue()
    assert code == 2
    for where, what in [
        ("models[0].predictions.score", "must not be the timestamp column, got 'ts'"),
        ("models[0].predictions.prediction", "must not be the id column, got 'id'"),
        ("models[0].features.numeric[1]", "must not be empty"),
        ("models[1].predictions.score", "must not be the prediction column"),
        ("models[1].predictions.id", "must not be the timestamp column"),
    ]:
        assert f"{where}: {what}" in text, (where, text)


def test_notes_show_a_huge_category_name_cut_and_say_why_data_is_insufficient(tmp_path: Path) -> None:
    """A 200 kB category value with newlines was copied whole into about six notes (908 kB of check
    output); an all-null reference column gave insufficient_data with no note at all."""
    blob = "line\n" * 40_000
    ref = _table(AT - timedelta(days=2), seed=3)
    ref = ref.set_column(ref.schema.get_field_index("x"), "x", pa.nulls(ref.num_rows, pa.float64()))
    cur = _table(AT - timedelta(minutes=50), seed=1)
    cur = cur.set_column(cur.schema.get_field_index("c"), "c", pa.array([blob] * 200 + ["a"] * 200))
    _write(tmp_path / "preds" / "a.parquet", cur)
    _write(tmp_path / "ref.parquet", ref)
    config = _config(tmp_path)
    doc = yaml.safe_load(config.read_text())
    doc["models"][0]["detectors"].append({"type": "data_quality"})
    config.write_text(yaml.safe_dump(doc))

    _, found = _check(config)

    notes = [r["note"] or "" for r in found.values()]
    assert max(len(n) for n in notes) < 400, max(notes, key=len)[:200]
    assert any("line\\nline" in n for n in notes)  # escaped, not raw newlines
    assert all("\n" not in n for n in notes)
    ks_x = found[("ks", "x")]
    assert ks_x["status"] == "insufficient_data"
    assert "0 reference and 400 window values, fewer than min_rows 100" in ks_x["note"]


def test_a_feature_written_with_partition_by_is_read_from_its_hive_key(tmp_path: Path) -> None:
    """Spark's ``partitionBy("c")`` keeps the column only in the directory names: every file used to be
    skipped as lacking it (the model blind).  A numeric key is parsed; one that is no number is named."""
    t0 = AT - timedelta(minutes=50)
    for i, c in enumerate(["a", "b", "a"]):
        part = _table(t0 + timedelta(minutes=10 * i), n=100, seed=i).drop_columns(["c", "age"])
        _write(tmp_path / "preds" / f"c={c}" / f"age={30 + i if i < 2 else 'old'}" / "part-0.parquet", part)
    _write(tmp_path / "ref.parquet", _table(AT - timedelta(days=2), seed=3))

    code, found = _check(_config(tmp_path))

    assert found[("chi2", "c")]["n_current"] == 300
    assert found[("chi2", "c")]["note"] is None or "unseen" not in found[("chi2", "c")]["note"]
    assert found[("ks", "age")]["n_current"] == 200  # the third directory's age=old is no number
    assert found[("ks", "x")]["n_current"] == 300
    assert code == 2


def test_an_empty_file_without_columns_is_no_error(tmp_path: Path) -> None:
    """A job that wrote nothing leaves a 0-row file, often with no columns at all: it was reported as lacking
    every column (source errors, a partial run, check exit 2)."""
    _write(tmp_path / "preds" / "a.parquet", _table(AT - timedelta(minutes=50), seed=1))
    _write(tmp_path / "preds" / "empty.parquet", pa.table({}))
    _write(tmp_path / "ref.parquet", _table(AT - timedelta(days=2), seed=3))

    code, found = _check(_config(tmp_path))

    assert found[("ks", "x")]["n_current"] == 400
    assert code != 2


def test_a_reference_short_of_a_column_is_built_once_and_its_error_reported_every_run(tmp_path: Path) -> None:
    """A build with skipped files is never cached (a transient store error must not stand for good); one
    whose files only lack a column is the same build for as long as they are the same files."""
    from monitor.config import load_config
    from monitor.evaluate import Evaluator

    _write(tmp_path / "preds" / "a.parquet", _table(AT - timedelta(minutes=50), seed=1))
    _write(tmp_path / "ref.parquet", _table(AT - timedelta(days=2), seed=3).drop_columns(["age"]))
    cfg = load_config(_config(tmp_path))
    ev = Evaluator(config=cfg, model=cfg.models[0])

    first, second = ev.evaluate(at=AT), ev.evaluate(at=AT)

    assert (first.reference_cached, second.reference_cached) == (False, True)
    for run in (first, second):
        assert [(e.column, e.reason) for e in run.errors] == [("age", "missing_column")]
        assert run.outcome == "partial"


def test_hive_key_values_are_unescaped(tmp_path: Path) -> None:
    """pyarrow's write_to_dataset (and Spark) percent-escape a key's value in the directory name (a/b as
    a%2Fb): read as it stood, a window equal to the reference was all new categories, and alerted."""
    cats = ["a/b", "10:30", "50%", "x y"]
    ref = _table(AT - timedelta(days=2), seed=3)
    ref = ref.set_column(ref.schema.get_field_index("c"), "c",
                         pa.array(np.random.default_rng(3).choice(cats, ref.num_rows)))
    cur = _table(AT - timedelta(minutes=50), seed=1)
    cur = cur.set_column(cur.schema.get_field_index("c"), "c",
                         pa.array(np.random.default_rng(1).choice(cats, cur.num_rows)))
    pq.write_to_dataset(cur, tmp_path / "preds", partition_cols=["c"])
    assert {p.name for p in (tmp_path / "preds").iterdir()} >= {"c=a%2Fb", "c=50%25"}
    for p in (tmp_path / "preds").rglob("*.parquet"):
        os.utime(p, ns=(int(AT.timestamp()) * 10**9 - 10**12,) * 2)
    _write(tmp_path / "ref.parquet", ref)
    config = _config(tmp_path)
    doc = yaml.safe_load(config.read_text())
    doc["models"][0]["detectors"].append({"type": "data_quality"})
    config.write_text(yaml.safe_dump(doc))

    out = io.StringIO()
    code = main(["check", "--config", str(config), "--at", AT.isoformat(), "--format", "json"], stdout=out)
    rows = {(r["detector"], r["target"], r["statistic"]): r for r in map(json.loads, out.getvalue().splitlines())}

    assert rows[("chi2", "c", "cohens_w")]["n_current"] == 400
    assert "unseen" not in (rows[("chi2", "c", "cohens_w")]["note"] or "")
    assert rows[("data_quality", "c", "unseen_rate")]["value"] == 0.0
    assert code == 0


def test_a_file_still_being_written_in_a_reference_short_of_a_column_is_read_or_reported_later(
        tmp_path: Path) -> None:
    """A reference build kept for its lasting errors (a file short of a column) must not keep a file that was
    left as still being written: once its grace is over and its writer has died, it is reported corrupt."""
    from monitor.config import load_config
    from monitor.evaluate import Evaluator

    now = datetime.now(UTC).replace(microsecond=0)
    _write(tmp_path / "preds" / "a.parquet", _table(now - timedelta(minutes=50), seed=1))
    _write(tmp_path / "ref" / "a.parquet", _table(now - timedelta(days=2), seed=2))
    _write(tmp_path / "ref" / "b.parquet", _table(now - timedelta(days=2), seed=3).drop_columns(["age"]))
    whole = (tmp_path / "ref" / "a.parquet").read_bytes()
    (tmp_path / "ref" / "c.parquet").write_bytes(whole[: len(whole) // 2])  # no footer yet, written just now
    config = _config(tmp_path, reference={"path": "ref", "in_progress_grace": "1s"})
    cfg = load_config(config)
    ev = Evaluator(config=cfg, model=cfg.models[0], reuse_partitions=False)

    first = ev.evaluate(at=now)
    time.sleep(1.5)  # the grace passes; c.parquet never changes: its writer died
    second = ev.evaluate(at=now)

    assert sorted((e.reason, Path(e.path or "").name) for e in first.errors) == [("missing_column", "b.parquet")]
    assert sorted((e.reason, Path(e.path or "").name) for e in second.errors) == [
        ("corrupt", "c.parquet"), ("missing_column", "b.parquet")]

"""Structured logs: in JSON every line of a model's run names the model, on whatever thread it was logged,
and a line about a file names the file, column and reason."""

from __future__ import annotations

import contextvars
import io
import json
import logging
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from detectors.errors import SourceError
from monitor.logs import JsonFormatter, add_context, model_context, source_fields
from tests.conftest import hour_dir, model_config, settled
from tests.test_daemon import daemons, floor_hour, wait_metrics, write_config, write_live_sink  # noqa: F401 (a fixture)


def json_lines(records: list[tuple[str, dict[str, Any]]], *, exc: BaseException | None = None) -> list[dict[str, Any]]:
    """Log ``records`` (message, extra) through a JSON handler as the daemon sets it up; the parsed lines."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(add_context)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("atalaia.test-logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        for message, extra in records:
            logger.error(message, extra=extra, exc_info=exc)
    finally:
        logger.removeHandler(handler)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_a_line_logged_in_a_models_run_names_the_model_and_one_elsewhere_does_not() -> None:
    with model_context("fraud"):
        inside = json_lines([("in the run", {}), ("about another", {"model": "churn"})])
    outside = json_lines([("between runs", {})])
    assert [line.get("model") for line in inside] == ["fraud", "churn"]  # an explicit model wins
    assert "model" not in outside[0]
    assert set(outside[0]) == {"time", "level", "logger", "message"}
    assert outside[0]["level"] == "error" and outside[0]["time"].endswith("Z")


def test_threads_started_with_the_runs_context_name_its_model() -> None:
    seen: dict[str, Any] = {}

    def log(key: str) -> None:
        seen[key] = json_lines([(key, {})])[0].get("model")

    with model_context("fraud"):
        copied = threading.Thread(target=contextvars.copy_context().run, args=(log, "copied"))
        plain = threading.Thread(target=log, args=("plain",))  # a new thread starts with an empty context
        for t in (copied, plain):
            t.start()
            t.join()
    assert seen == {"copied": "fraud", "plain": None}


def test_a_source_errors_file_column_and_reason_are_fields_and_odd_values_are_text() -> None:
    err = SourceError("column x1 missing", path="/sink/a.parquet", column="x1", reason="missing_column")
    try:
        raise ValueError("boom")
    except ValueError as exc:
        (line,) = json_lines([("skipped", source_fields(err) | {"at": datetime(2026, 1, 1, tzinfo=UTC)})], exc=exc)
    assert (line["file"], line["column"], line["reason"]) == ("/sink/a.parquet", "x1", "missing_column")
    assert line["at"] == "2026-01-01 00:00:00+00:00"  # not JSON by itself: written as text, never a lost line
    assert "ValueError: boom" in line["exception"]
    assert source_fields(SourceError("gone", reason="missing")) == {"reason": "missing"}


@pytest.mark.e2e
def test_the_daemons_json_lines_name_the_model_the_file_and_the_runs_figures(tmp_path: Path, daemons) -> None:
    h = floor_hour(datetime.now(UTC))
    ref = write_live_sink(tmp_path / "preds", rows_per_hour=300, hour=h)
    corrupt = hour_dir(tmp_path / "preds", h - timedelta(hours=3)) / "part-1.parquet"
    corrupt.write_bytes(b"PAR1 not parquet PAR1")
    settled(corrupt)
    undated = hour_dir(tmp_path / "preds", h - timedelta(hours=2)) / "part-2.parquet"
    pq.write_table(pa.table({
        "id": ["u0", "u1"], "ts": pa.array([h - timedelta(hours=2), None], type=pa.timestamp("us", tz="UTC")),
        "x0": [0.0, 1.0], "x1": [0.0, 1.0], "x2": [1.0, 1.0], "c": ["a", "b"], "score": [0.5, 0.5], "pred": [1, 0],
    }), undated)
    config = write_config(tmp_path, [
        # a 6-hour window: five whole partitions (one with a corrupt file, one with a null timestamp)
        model_config(name="wide", pred_path=str(tmp_path / "preds"), reference=ref, every="1s", window="6h"),
        # a 1-hour window: two edge partitions, neither with a bad file
        model_config(name="narrow", pred_path=str(tmp_path / "preds"), reference=ref, every="1s"),
    ], log={"format": "json", "level": "info"})
    d = daemons(config)
    d.wait_up()
    wait_metrics(d, lambda m: m.runs("wide", "partial") >= 1 and m.runs("narrow", "success") >= 1, timeout=30,
                 what="a run of each model")
    assert d.stop() == 0
    lines = [json.loads(line) for line in d.log().splitlines() if line.strip()]  # every line is JSON
    skipped = [x for x in lines if x.get("file") == str(corrupt) and x["level"] == "error"]
    assert skipped and all(x["model"] == "wide" and x["reason"] == "corrupt" for x in skipped), skipped
    nulls = [x for x in lines if "whose ts is null" in x["message"]]
    assert nulls and all(x["model"] == "wide" and x["file"] == str(undated) and x["column"] == "ts"
                         for x in nulls), nulls
    runs = {x["model"]: x for x in lines if x["message"].startswith("model ") and "rows" in x}
    assert runs["wide"]["outcome"] == "partial" and runs["narrow"]["outcome"] == "success"
    assert runs["narrow"]["rows"] > 0 and runs["wide"]["rows"] >= 5 * 300 and runs["wide"]["findings"] > 0
    assert isinstance(runs["wide"]["duration_seconds"], float)


def test_odd_field_values_never_cost_the_line() -> None:
    import numpy as np

    loop: list[Any] = []
    loop.append(loop)
    a, b, c = json_lines([("odd", {"rows": np.int64(3), "ratio": float("nan"), "level": "mine"}),
                          ("nested nan", {"values": [1.0, float("inf")]}),
                          ("a loop", {"loop": loop})])
    assert (a["rows"], a["ratio"], a["level"], a["extra_level"]) == (3, None, "error", "mine")
    assert b["message"] == "nested nan" and "log_error" in b and b["values"] == "[1.0, inf]"
    assert c["message"] == "a loop" and "log_error" in c and c["level"] == "error"

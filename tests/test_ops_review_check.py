"""``atalaia check`` and the evaluation's messages (each test failed before its fix, found by an operations
review): a reference or a window of no rows taken for "all ok", a missing reference reported as a missing
sink with its folder labelled ``file=``, each skipped file printed twice; then the one-line warning of a
partition store that cannot write, and APScheduler's duplicate messages.

``check`` runs in process through ``main(argv, stdout=)`` on real Parquet files, once as the console script.
"""

from __future__ import annotations

import io
import logging
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import T0, hour_dir, model_config, settled
from detectors.profile import Profile
from monitor.cli import main
from monitor.config import parse_config
from monitor.evaluate import Evaluator
from monitor.logs import setup_logging
from monitor.partition_store import PartitionStore

SHIFTED = T0 + timedelta(hours=44, minutes=20)


def iso(t: Any) -> str:
    return t.isoformat().replace("+00:00", "Z")


def check(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    out = io.StringIO()
    code = main(["check", *map(str, argv)], stdout=out)
    return code, out.getvalue(), capsys.readouterr().err


def config(tmp_path: Path, sink: Path, **model: Any) -> Path:
    model.setdefault("reference", {"start": T0.isoformat(), "end": (T0 + timedelta(hours=24)).isoformat()})
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"state_dir": str(tmp_path / "state"),
                                    "models": [model_config(pred_path=str(sink), **model)]}))
    return path


# --------------------------------------------------------------------------- 4. nothing to compare

def test_check_of_a_reference_with_no_rows_is_not_all_ok(tmp_path: Path, sink: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """A reference range before the sink's data: every finding insufficient_data, exit 0 ("all ok") before."""
    cfg = config(tmp_path, sink, reference={"start": "2020-01-01T00:00:00Z", "end": "2020-01-02T00:00:00Z"})
    code, out, err = check(capsys, "--config", cfg, "--at", iso(SHIFTED), "--format", "json")
    assert code == 2, err
    assert out.strip(), "the findings are still printed"
    lines = [ln for ln in err.splitlines() if "has no rows" in ln]
    assert len(lines) == 1, err
    assert "model m1" in lines[0] and "2020-01-01T00:00:00Z..2020-01-02T00:00:00Z" in lines[0], lines
    assert "reference" in lines[0] and str(sink) in lines[0]


def test_check_of_a_window_with_no_rows_is_not_all_ok(tmp_path: Path, sink: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    at = T0 + timedelta(days=30)
    code, out, err = check(capsys, "--config", config(tmp_path, sink), "--at", iso(at), "--format", "json")
    assert code == 2, err
    (line,) = [ln for ln in err.splitlines() if "has no rows" in ln]
    assert line.startswith("atalaia: model m1: the window ") and iso(at) in line, line
    assert "reference" not in line


def test_check_of_a_window_with_rows_still_exits_0_or_1(tmp_path: Path, sink: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config(tmp_path, sink)
    assert check(capsys, "--config", cfg, "--at", iso(T0 + timedelta(hours=30, minutes=20)))[0] == 0
    assert check(capsys, "--config", cfg, "--at", iso(SHIFTED))[0] == 1


def test_the_daemon_warns_once_about_a_reference_with_no_rows(tmp_path: Path, sink: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    cfg = parse_config({"state_dir": str(tmp_path / "state"), "models": [model_config(
        pred_path=str(sink), reference={"start": "2020-01-01T00:00:00Z", "end": "2020-01-02T00:00:00Z"})]})
    evaluator = Evaluator(config=cfg, model=cfg.models[0])
    caplog.set_level(logging.INFO, logger="atalaia")
    for minutes in (0, 5, 10):
        ev = evaluator.evaluate(at=SHIFTED + timedelta(minutes=minutes))
        assert ev.reference_rows == 0 and ev.outcome == "success"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("model m1: the reference 2020-01-01T00:00:00Z..2020-01-02T00:00:00Z of ")
    assert "has no rows" in warnings[0]


# --------------------------------------------------------------------------- 6. a missing reference

def test_a_missing_reference_file_is_named_as_the_reference(tmp_path: Path, sink: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.parquet"
    code, _, err = check(capsys, "--config", config(tmp_path, sink, reference={"path": str(missing)}),
                         "--at", iso(SHIFTED))
    assert code == 2
    assert f"atalaia: model m1: reference: the sink does not exist (path={missing})" in err.splitlines(), err
    assert "file=" not in err


def test_a_missing_prediction_folder_is_labelled_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gone = tmp_path / "no-such-sink"
    code, _, err = check(capsys, "--config", config(tmp_path, gone, reference={"rolling": "1d"}),
                         "--at", iso(SHIFTED))
    assert code == 2
    assert f"(path={gone})" in err and "file=" not in err, err


# --------------------------------------------------------------------------- 7. skipped files, once

def test_check_prints_each_skipped_file_once(tmp_path: Path, sink: Path) -> None:
    corrupt = hour_dir(sink, SHIFTED - timedelta(minutes=30)) / "part-9.parquet"
    corrupt.write_bytes(b"not parquet" * 300)
    settled(corrupt)
    exe = shutil.which("atalaia")
    cmd = [exe] if exe else [sys.executable, "-m", "monitor.cli"]
    done = subprocess.run([*cmd, "check", "--config", str(config(tmp_path, sink)), "--at", iso(SHIFTED),
                           "--format", "json"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count(str(corrupt)) == 1, done.stderr
    (line,) = [ln for ln in done.stderr.splitlines() if str(corrupt) in ln]
    assert "ERROR" in line and "model m1: skipped unreadable Parquet file" in line, line


# --------------------------------------------------------------------------- 3. one line per sync

def test_a_partition_store_that_cannot_write_logs_one_line_per_sync(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "state" / "partitions"
    blocker.parent.mkdir()
    blocker.write_text("a file where the folder goes")          # every write fails, as on a full disk
    failures: list[int] = []
    store = PartitionStore(blocker / "model=m1", version=1, on_error=lambda: failures.append(1))
    kept = {(("span", i), "ref", ()): Profile(n_rows=i) for i in range(30)}
    caplog.set_level(logging.INFO, logger="atalaia")
    store.sync(kept)
    store.sync(kept)                                             # the next run tries them all again
    lines = [r for r in caplog.records if r.name == "atalaia.partitions"]
    assert len(lines) == 2 and all(r.levelno == logging.WARNING for r in lines), [r.getMessage() for r in lines]
    assert f"cannot store partition profiles in {blocker / 'model=m1'}: 30 of 30 failed" in lines[0].getMessage()
    assert failures == [1, 1]
    blocker.unlink()                                             # room again: no line, no error
    caplog.clear()
    store.sync(kept)
    assert [r for r in caplog.records if r.name == "atalaia.partitions"] == [] and failures == [1, 1]
    assert len(PartitionStore(blocker / "model=m1", version=1).load()) == 30


# --------------------------------------------------------------------------- 8. APScheduler's duplicates

def test_apschedulers_messages_for_dropped_firings_are_filtered_and_its_others_kept(
        capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging(level="info")
    logging.getLogger("apscheduler.scheduler").warning(
        'Execution of job "%s" skipped: maximum number of running instances reached (%d)', "evaluate m1", 1)
    logging.getLogger("apscheduler.executors.default").warning(
        'Run time of job "%s" was missed by %s', "evaluate m1", "0:00:03")
    logging.getLogger("apscheduler.scheduler").warning("Error getting due jobs from job store %r: %s", "x", "y")
    err = capsys.readouterr().err
    assert "Execution of job" not in err and "was missed by" not in err, err
    assert "Error getting due jobs" in err

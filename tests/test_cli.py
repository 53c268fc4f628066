"""The ``atalaia`` command line: help, ``validate`` and ``check`` (exit codes, JSON and table output,
the exact window), in process through ``main(argv, stdout=)`` and once as the installed console script."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import yaml

from conftest import T0, hour_dir, model_config, settled
from detectors.base import Context, Detector, Finding
from detectors.registry import Registry
from monitor.cli import main

FINDING_KEYS = {"model", "detector", "kind", "target", "statistic", "value", "threshold", "p_value", "status",
                "n_reference", "n_current", "window_start", "window_end", "group"}
SHIFTED = T0 + timedelta(hours=44, minutes=20)     # x0 is shifted from T0 + 40h
UNSHIFTED = T0 + timedelta(hours=30, minutes=20)

Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    """``atalaia ARGS`` in process: (exit code, stdout, stderr)."""
    def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        out = io.StringIO()
        code = main([str(a) for a in argv], stdout=out)
        return code, out.getvalue(), capsys.readouterr().err
    return run


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def parse_utc(text: str) -> datetime:
    assert text.endswith("Z"), f"not ISO-8601 UTC with Z: {text!r}"
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def json_findings(stdout: str) -> list[dict[str, Any]]:
    lines = stdout.splitlines()
    assert lines, "no findings printed"
    out = [json.loads(line) for line in lines]
    assert all(isinstance(f, dict) for f in out)
    return out


def by_key(findings: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(f["detector"], f["target"]): f for f in findings}


def rows_in(sink: Path, start: datetime, end: datetime) -> int:
    table = ds.dataset(sink, format="parquet", partitioning="hive").to_table(
        columns=["ts"], filter=(ds.field("ts") >= pa.scalar(start, pa.timestamp("us", tz="UTC")))
        & (ds.field("ts") < pa.scalar(end, pa.timestamp("us", tz="UTC"))))
    return table.num_rows


def write_config(path: Path, **cfg: Any) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


# --------------------------------------------------------------------------- help and validate

def test_help_lists_every_command() -> None:
    exe = shutil.which("atalaia")
    assert exe, "the atalaia console script is not on PATH"
    done = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    for command in ("run", "check", "validate", "demo"):
        assert any(line.split()[:1] == [command] for line in done.stdout.splitlines()), done.stdout


def test_check_help_lists_its_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["check", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--config", "--model", "--at", "--format"):
        assert flag in out


def test_validate_accepts_a_good_config(cli: Cli, config_file: Path) -> None:
    code, out, err = cli("validate", "--config", config_file)
    assert code == 0, err
    assert "ok" in out and "m1" in out
    assert err == ""


def _bad_model(**overrides: Any) -> dict[str, Any]:
    return model_config(pred_path="./preds", reference={"rolling": "7d"}) | overrides


def test_validate_lists_every_problem_at_once(cli: Cli, tmp_path: Path) -> None:
    model = _bad_model(schedule={"every": "5 minutes"},
                       predictions={"path": "./preds", "id": "id", "timestamp": "ts"},
                       detectors=[{"type": "psi", "alert": -1}, {"type": "no-such-detector"}])
    config = write_config(tmp_path / "bad.yaml", server={"listen": "nowhere"}, stat_dir="./typo", models=[model])
    code, out, err = cli("validate", "--config", config)
    assert code == 2
    assert out == ""
    expected = {
        "server.listen": "must be HOST:PORT",
        "stat_dir": "is not a known key",
        "models[0].schedule.every": "must be a duration",
        "models[0].predictions.prediction": "is required",
        "models[0].detectors[0].alert": "must be > 0, got -1",
        "models[0].detectors[1].type": "no-such-detector",
    }
    lines = err.splitlines()
    for path, message in expected.items():
        assert any(line.strip().startswith(f"{path}: ") and message in line for line in lines), (path, err)
    assert f"{len(expected)} configuration problems" in err
    assert str(config) in err


def test_validate_reports_cross_field_problems_together_with_schema_problems(cli: Cli, tmp_path: Path) -> None:
    """An undefined alert route is a problem whether or not the file has other mistakes."""
    good = write_config(tmp_path / "route.yaml", models=[_bad_model(alerts={"routes": ["team-chat"]})])
    code, _, err = cli("validate", "--config", good)
    assert code == 2 and "models[0].alerts.routes[0]: " in err, err

    both = write_config(tmp_path / "both.yaml", server={"listen": "nowhere"},
                        models=[_bad_model(alerts={"routes": ["team-chat"]})])
    code, _, err = cli("validate", "--config", both)
    assert code == 2
    assert "server.listen: " in err
    assert "models[0].alerts.routes[0]: " in err, f"validate must report every problem at once:\n{err}"


def test_validate_a_missing_file_exits_2(cli: Cli, tmp_path: Path) -> None:
    code, _, err = cli("validate", "--config", tmp_path / "nope.yaml")
    assert code == 2 and "nope.yaml" in err


# --------------------------------------------------------------------------- check

def test_check_console_script_flags_the_shifted_feature(config_file: Path, sink: Path) -> None:
    exe = shutil.which("atalaia")
    assert exe
    done = subprocess.run([exe, "check", "--config", str(config_file), "--at", iso(SHIFTED), "--format", "json"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    findings = json_findings(done.stdout)
    for f in findings:
        assert FINDING_KEYS <= set(f), set(f) ^ FINDING_KEYS
        assert f["model"] == "m1" and f["kind"] == "drift" and f["group"] is None
        assert f["status"] in ("ok", "warn", "alert", "insufficient_data")
        assert parse_utc(f["window_end"]) == SHIFTED
        assert parse_utc(f["window_start"]) == SHIFTED - timedelta(hours=1)
    found = by_key(findings)
    n_current = rows_in(sink, SHIFTED - timedelta(hours=1), SHIFTED)
    for detector in ("psi", "ks"):
        x0 = found[(detector, "x0")]
        assert x0["status"] == "alert", x0
        assert x0["value"] > x0["threshold"] > 0
        assert x0["p_value"] is not None and x0["p_value"] < 1e-6
        assert (x0["n_reference"], x0["n_current"]) == (24 * 1000, n_current)
        for target in ("x1", "x2"):
            assert found[(detector, target)]["status"] == "ok", found[(detector, target)]
    assert {f["target"] for f in findings if f["status"] in ("warn", "alert")} == {"x0"}


def test_console_script_leaves_nothing_unwritten_when_it_skips_the_teardown(cli: Cli, config_file: Path,
                                                                             tmp_path: Path) -> None:
    # the command ends with os._exit: output to a file is block-buffered, so an unflushed buffer would be lost
    exe = shutil.which("atalaia")
    assert exe
    out = tmp_path / "findings.jsonl"
    with out.open("w") as fh:
        done = subprocess.run([exe, "check", "--config", str(config_file), "--at", iso(SHIFTED), "--format", "json"],
                              stdout=fh, stderr=subprocess.PIPE, text=True, timeout=120)
    code, expected, _ = cli("check", "--config", config_file, "--at", iso(SHIFTED), "--format", "json")
    assert done.returncode == code == 1, done.stderr
    assert out.read_text() == expected and len(json_findings(expected)) == 10


def test_the_commands_keep_blas_single_threaded(config_file: Path) -> None:
    # atalaia parallelises by column; a threaded BLAS under it busy-waits on the cores the model server needs
    code = ("import json, sys\n"
            "import scipy.special\n"  # numpy and scipy each bring an OpenBLAS
            "from threadpoolctl import threadpool_info\n"
            "from monitor.cli import main\n"
            "before = [p['num_threads'] for p in threadpool_info() if p['user_api'] == 'blas']\n"
            "main(['check', '--config', sys.argv[1], '--at', sys.argv[2], '--format', 'json'])\n"
            "after = [p['num_threads'] for p in threadpool_info() if p['user_api'] == 'blas']\n"
            "print(json.dumps([before, after]))\n")
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    done = subprocess.run([sys.executable, "-c", code, str(config_file), iso(UNSHIFTED)], capture_output=True,
                          text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    before, after = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(before) >= 1 and all(n == 2 for n in before)
    assert after == [1] * len(before)


def test_check_at_an_unshifted_time_exits_0(cli: Cli, config_file: Path) -> None:
    code, out, err = cli("check", "--config", config_file, "--at", iso(UNSHIFTED), "--format", "json")
    assert code == 0, err
    findings = json_findings(out)
    assert {f["status"] for f in findings} == {"ok"}
    assert {"x0", "x1", "x2"} <= {f["target"] for f in findings}


def test_check_window_is_exactly_the_hour_before_at(cli: Cli, config_file: Path, sink: Path) -> None:
    # --at with an offset and a fraction: the window is [at - 1h, at), printed in UTC
    at = datetime(2026, 11, 21, 20, 30, 15, 500000, tzinfo=UTC)
    start = at - timedelta(hours=1)
    inside = rows_in(sink, start, at)
    # rows exactly on the bounds: the start is in, the end is out
    us = timedelta(microseconds=1)
    edges = [start - us, start, at - us, at]
    for t in edges:
        part = hour_dir(sink, t)
        pq.write_table(pa.table({
            "id": [f"edge-{t.isoformat()}"], "ts": pa.array([t], pa.timestamp("us", tz="UTC")),
            "x0": [0.0], "x1": [0.0], "x2": [1.0], "c": ["a"], "score": [0.5], "pred": pa.array([1], pa.int64()),
        }), part / f"edge-{t:%H%M%S%f}.parquet")
    assert rows_in(sink, start, at) == inside + 2

    code, out, err = cli("check", "--config", config_file, "--at", "2026-11-21T21:30:15.5+01:00", "--format", "json")
    assert code in (0, 1), err
    for f in json_findings(out):
        assert parse_utc(f["window_start"]) == start, f
        assert parse_utc(f["window_end"]) == at, f
        if f["target"] in ("x0", "x1", "x2"):
            assert f["n_current"] == inside + 2, f


def test_check_model_flag_selects_one_model(cli: Cli, tmp_path: Path, sink: Path) -> None:
    ref = {"start": iso(T0), "end": iso(T0 + timedelta(hours=24))}
    config = write_config(tmp_path / "two.yaml", state_dir=str(tmp_path / "state"), models=[
        model_config(name="first", pred_path=str(sink), reference=ref),
        model_config(name="second", pred_path=str(sink), reference=ref, detectors=[{"type": "ks"}])])
    code, out, _ = cli("check", "--config", config, "--at", iso(SHIFTED), "--format", "json", "--model", "second")
    assert code == 1
    findings = json_findings(out)
    assert {f["model"] for f in findings} == {"second"}
    assert {f["detector"] for f in findings} == {"ks"}
    code, out, _ = cli("check", "--config", config, "--at", iso(SHIFTED), "--format", "json")
    assert {f["model"] for f in json_findings(out)} == {"first", "second"}


def test_check_unknown_model_exits_2(cli: Cli, config_file: Path) -> None:
    code, out, err = cli("check", "--config", config_file, "--model", "no-such-model", "--at", iso(SHIFTED))
    assert code == 2
    assert out == ""
    assert "no-such-model" in err and "m1" in err


@pytest.mark.parametrize("at", ["yesterday", "2026-13-45T00:00:00Z", ""])
def test_check_bad_at_exits_2(cli: Cli, config_file: Path, at: str) -> None:
    code, out, err = cli("check", "--config", config_file, "--at", at)
    assert code == 2
    assert out == ""
    assert "--at" in err


def test_check_bad_config_exits_2(cli: Cli, tmp_path: Path) -> None:
    config = write_config(tmp_path / "bad.yaml", models=[_bad_model(window="soon")])
    code, _, err = cli("check", "--config", config)
    assert code == 2 and "models[0].window" in err


def test_check_missing_sink_exits_2(cli: Cli, tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yaml", state_dir=str(tmp_path / "state"), models=[
        model_config(pred_path=str(tmp_path / "no-such-sink"), reference={"rolling": "1d"})])
    code, _, err = cli("check", "--config", config, "--at", iso(SHIFTED))
    assert code == 2
    assert "no-such-sink" in err


def test_check_empty_window_is_insufficient_data_and_exits_2(cli: Cli, config_file: Path) -> None:
    """No rows in the window is no "all ok" (exit 0): exit 2, said on stderr, the findings still printed."""
    at = T0 + timedelta(days=30)  # long after the sink ends; the reference is a fixed range
    code, out, err = cli("check", "--config", config_file, "--at", iso(at), "--format", "json")
    assert code == 2, err
    assert "has no rows" in err
    findings = json_findings(out)
    assert {"x0", "x1", "x2"} <= {f["target"] for f in findings}
    for f in findings:
        assert f["status"] == "insufficient_data", f
        assert f["n_current"] == 0 and f["value"] is None
        assert f["n_reference"] > 0


def test_check_corrupt_file_in_the_window_exits_2_naming_it(cli: Cli, config_file: Path, sink: Path) -> None:
    t = SHIFTED - timedelta(minutes=30)
    corrupt = hour_dir(sink, t) / "part-0.parquet"
    corrupt.write_bytes(corrupt.read_bytes()[: len(corrupt.read_bytes()) // 2])  # truncated
    settled(corrupt)  # not a file still being written
    code, out, err = cli("check", "--config", config_file, "--at", iso(SHIFTED), "--format", "json")
    assert code == 2
    assert str(corrupt) in err


def test_check_table_is_readable(cli: Cli, config_file: Path) -> None:
    code, out, err = cli("check", "--config", config_file, "--at", iso(SHIFTED))
    assert code == 1, err
    assert "\x1b[" not in out  # no colour codes when not on a terminal
    lines = out.splitlines()
    header = next(line for line in lines if "detector" in line)
    words = header.replace("┃", " ").replace("|", " ").split()
    for column in ("model", "detector", "target", "status"):
        assert column in words, header
    cols = header.index("detector"), header.index("target"), header.index("status")
    assert cols == tuple(sorted(cols))

    def row(detector: str, target: str) -> str:
        found = [line for line in lines if f" {detector} " in line and f" {target} " in line and " m1 " in line]
        assert len(found) == 1, (detector, target, out)
        return found[0]

    for detector in ("psi", "ks"):
        assert " alert " in row(detector, "x0")
        for target in ("x1", "x2"):
            assert " ok " in row(detector, target)
    assert iso(SHIFTED - timedelta(hours=1)) in out and iso(SHIFTED) in out
    assert "alert" in lines[-1] and "ok" in lines[-1]  # the summary line


def test_check_and_a_daemon_run_never_import_pandas(tmp_path: Path, sink: Path) -> None:
    # pyarrow imports pandas (0.4 s, ~55 MB resident) on its first to_numpy, pa.array or pa.scalar; atalaia
    # never needs it. Every registered detector (ks exact for the per-batch path with the predicted class), a
    # partition with nulls, and a window ending mid-hour (its edge partitions filtered on the timestamp).
    from detectors.registry import Registry

    hour = T0 + timedelta(hours=43)
    n = 200
    pq.write_table(pa.table({
        "id": [f"n{i}" for i in range(n)],
        "ts": pa.array([hour + timedelta(seconds=i) for i in range(n)], type=pa.timestamp("us", tz="UTC")),
        "x0": [None if i % 7 == 0 else float(i) for i in range(n)],
        "x1": [float("nan") if i % 5 == 0 else 0.5 for i in range(n)], "x2": [1.0] * n,
        "c": [None if i % 3 == 0 else "a" for i in range(n)], "score": [0.5] * n,
        "pred": [None if i % 11 == 0 else i % 2 for i in range(n)],
    }), hour_dir(sink, hour) / "part-1.parquet")
    detectors = [{"type": name} for name in Registry().names() if name != "ks"] + [{"type": "ks", "exact": True}]
    config = write_config(tmp_path / "all.yaml", state_dir=str(tmp_path / "state"), models=[model_config(
        pred_path=str(sink), detectors=detectors, reference={
            "start": T0.isoformat(), "end": (T0 + timedelta(hours=24)).isoformat()})])
    code = ("import io, json, sys\n"
            "from datetime import datetime\n"
            "from monitor.cli import main\n"
            "from monitor.config import load_config\n"
            "from monitor.scheduler import Daemon\n"
            "out = io.StringIO()\n"
            "rc = main(['check', '--config', sys.argv[1], '--at', sys.argv[2], '--format', 'json'], stdout=out)\n"
            "after_check = 'pandas' in sys.modules\n"
            "daemon = Daemon(config=load_config(sys.argv[1]))\n"
            "outcome = daemon.run_model('m1', at=datetime.fromisoformat(sys.argv[2].replace('Z', '+00:00')))\n"
            "daemon.shutdown()\n"
            "print(json.dumps({'rc': rc, 'findings': len(out.getvalue().splitlines()), 'outcome': outcome,\n"
            "                  'after_check': after_check, 'after_run': 'pandas' in sys.modules}))\n")
    done = subprocess.run([sys.executable, "-c", code, str(config), iso(SHIFTED)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["rc"] == 1 and report["findings"] > 50 and report["outcome"] == "success", report
    assert not report["after_check"] and not report["after_run"], report


def test_starting_imports_no_heavy_module_a_default_run_does_not_use() -> None:
    # scipy.optimize and scipy.stats cost 0.3-0.5 s and 40 MB at every start: only an exact KS test and
    # data_quality's rare bound (unseen categories among very large pooled counts) load them, when used;
    # pyarrow.compute (0.1 s) only columns with nulls, casts and row filters
    code = ("import json, sys\n"
            "import monitor.cli, monitor.evaluate, monitor.scheduler\n"
            "from detectors.registry import Registry\n"
            "r = Registry()\n"
            "[r.create(n) for n in r.names()]\n"
            "print(json.dumps(sorted(m for m in ('pandas', 'pyarrow.compute', 'scipy.optimize', 'scipy.stats')\n"
            "                         if m in sys.modules)))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


# --------------------------------------------------------------------------- unexpected errors never exit 1

class _BrokenPlugin(Detector):
    """A third-party detector with a bug: summarising the reference raises."""

    name: ClassVar[str] = "broken"
    kind: ClassVar = "drift"
    applies_to = frozenset({"numeric"})

    def summarise(self, reference: Any) -> Any:
        raise RuntimeError("plugin bug while summarising")

    def score(self, summary: Any, current: Any, *, context: Context) -> list[Finding]:
        return []


class _FailingScorePlugin(Detector):
    """A third-party detector with a bug: scoring raises (the evaluation goes on without its findings)."""

    name: ClassVar[str] = "failing"
    kind: ClassVar = "drift"
    applies_to = frozenset({"numeric"})

    def score(self, summary: Any, current: Any, *, context: Context) -> list[Finding]:
        raise RuntimeError("plugin bug while scoring")


class _CrashingPlugin(Detector):
    """A third-party detector whose parameter check itself crashes."""

    name: ClassVar[str] = "crashing"
    kind: ClassVar = "drift"

    @classmethod
    def parameter_problems(cls, params: Any) -> dict[str, str]:
        raise RuntimeError("plugin bug while validating")

    def score(self, summary: Any, current: Any, *, context: Context) -> list[Finding]:
        return []


def test_check_a_timestamp_column_of_floats_exits_2_naming_the_model(cli: Cli, tmp_path: Path, sink: Path) -> None:
    m = model_config(pred_path=str(sink), reference={"start": T0.isoformat(),
                                                     "end": (T0 + timedelta(hours=24)).isoformat()})
    m["predictions"]["timestamp"] = "x0"  # a float column (no longer a feature: a column has one role)
    m["features"]["numeric"] = [f for f in m["features"]["numeric"] if f != "x0"]
    config = write_config(tmp_path / "c.yaml", state_dir=str(tmp_path / "state"), models=[m])
    code, _, err = cli("check", "--config", config, "--at", iso(SHIFTED), "--format", "json")
    assert code == 2, err
    assert any(line.startswith("atalaia: model m1: ") for line in err.splitlines()), err
    assert "Traceback" not in err


def test_check_an_unexpected_error_exits_2_naming_the_model_and_logs_the_traceback_at_debug(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, sink: Path) -> None:
    reference = {"start": T0.isoformat(), "end": (T0 + timedelta(hours=24)).isoformat()}
    registry = Registry(extra={"broken": _BrokenPlugin})
    for level in ("info", "debug"):
        config = write_config(tmp_path / f"{level}.yaml", state_dir=str(tmp_path / "state"), log={"level": level},
                              models=[model_config(pred_path=str(sink), reference=reference,
                                                   detectors=[{"type": "psi"}, {"type": "broken"}])])
        capsys.readouterr()
        code = main(["check", "--config", str(config), "--at", iso(SHIFTED)], stdout=io.StringIO(), registry=registry)
        err = capsys.readouterr().err
        assert code == 2, err
        assert "atalaia: model m1: RuntimeError: plugin bug while summarising" in err.splitlines(), err
        if level == "debug":  # log: {level: debug} shows the traceback behind the message
            assert "Traceback" in err and 'raise RuntimeError("plugin bug while summarising")' in err, err


def test_check_a_failing_detector_exits_2_naming_the_model(cli: Cli, tmp_path: Path, sink: Path) -> None:
    """Findings with a detector missing are incomplete: exit 2, not 1 for the other detector's alert."""
    reference = {"start": T0.isoformat(), "end": (T0 + timedelta(hours=24)).isoformat()}
    config = write_config(tmp_path / "c.yaml", state_dir=str(tmp_path / "state"), models=[model_config(
        pred_path=str(sink), reference=reference, detectors=[{"type": "psi"}, {"type": "failing"}])])
    out = io.StringIO()
    code = main(["check", "--config", str(config), "--at", iso(SHIFTED), "--format", "json"], stdout=out,
                registry=Registry(extra={"failing": _FailingScorePlugin}))
    assert code == 2
    assert any(f["status"] == "alert" for f in json_findings(out.getvalue()))  # psi's findings are printed


def test_any_command_that_crashes_exits_2_not_1(cli: Cli, tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yaml", models=[_bad_model(detectors=[{"type": "crashing"}])])
    out = io.StringIO()
    code = main(["validate", "--config", str(config)], stdout=out, registry=Registry(extra={"crashing": _CrashingPlugin}))
    assert code == 2


def test_a_crash_message_names_the_command_and_the_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yaml", models=[_bad_model(detectors=[{"type": "crashing"}])])
    capsys.readouterr()
    main(["validate", "--config", str(config)], stdout=io.StringIO(), registry=Registry(extra={"crashing": _CrashingPlugin}))
    err = capsys.readouterr().err
    assert err.strip() == "atalaia: validate failed: RuntimeError: plugin bug while validating"


# --------------------------------------------------------------------------- validate warnings, --listen, logs

def test_validate_warns_that_alert_routes_are_not_delivered(cli: Cli, tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yaml", models=[_bad_model(alerts={"for": 2, "routes": ["chat"]})],
                          alerting={"routes": {"chat": {"type": "webhook", "url": "http://127.0.0.1:9/hook"}}})
    code, out, err = cli("validate", "--config", config)
    assert code == 0 and "ok" in out
    (line,) = err.splitlines()
    assert line.startswith("atalaia: warning: alert routes are configured (chat)"), line
    assert "not deliver" in line and "deploy/prometheus" in line and "Alertmanager" in line


@pytest.mark.parametrize(("listen", "needle"), [
    ("localhost", "got 'localhost'"), ("::1:9108", "got '::1:9108'"), ("127.0.0.1:http", "got '127.0.0.1:http'")])
def test_listen_flag_is_checked_like_server_listen(capsys: pytest.CaptureFixture[str], config_file: Path,
                                                   listen: str, needle: str) -> None:
    for command in (["run", "--config", str(config_file)], ["demo", "--no-run"]):
        with pytest.raises(SystemExit) as exit_:
            main([*command, "--listen", listen])
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert "--listen" in err and "must be HOST:PORT" in err and needle in err, err


def test_run_with_a_state_dir_under_a_regular_file_exits_2_naming_it(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    config = write_config(tmp_path / "c.yaml", state_dir=str(tmp_path / "afile" / "state"),
                          models=[_bad_model()])
    for command in ("validate", "run"):
        code, _, err = cli(command, "--config", config, "--listen", "127.0.0.1:0") if command == "run" \
            else cli(command, "--config", config)
        assert code == 2, err
        assert "state_dir" in err and "not a folder" in err, err


def test_text_logs_are_stamped_in_utc_with_z_whatever_the_local_zone() -> None:
    code = ("import logging, time\n"
            "from monitor.logs import setup_logging\n"
            "setup_logging(fmt='text', level='info')\n"
            "print(time.strftime('%z'), flush=True)\n"
            "logging.getLogger('atalaia.test').info('hello')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env=os.environ | {"TZ": "Asia/Kolkata"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "+0530", "the local zone is not set: the test would prove nothing"
    (line,) = done.stderr.splitlines()
    stamp, level, logger, message = line.split(" ", 3)
    assert (level, logger, message) == ("INFO", "atalaia.test:", "hello")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", stamp), stamp
    when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert abs((datetime.now(UTC) - when).total_seconds()) < 60

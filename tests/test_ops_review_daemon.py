"""The daemon under operational faults (each test failed before its fix, found by an operations review):
a crash loop during every first run, a wall clock stepped back, a full state disk, a slow reference
build, each skipped firing logged twice, and undocumented ``*_created`` families.

The subprocess tests run ``python -m monitor.cli run`` on Parquet files under pytest's tmp dir, listen on
127.0.0.1 ports 19200-19299 and stop what they started.  The clock tests build the daemon in process with
injected wall and monotonic clocks (a real scheduler, a real sink, a real HTTP server).
"""

from __future__ import annotations

import logging
import os
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

import test_daemon
from conftest import model_config, write_hourly_sink
from monitor.config import parse_config
from monitor.scheduler import Daemon
from monitor.state import StateStore
from test_daemon import START_TIMEOUT, Metrics, wait_for, wait_metrics
from test_missed_runs import Clock
from test_ops_faults import S3_ENV, SilentStore, hung_s3_config, live_sink, silent_store, write_config  # noqa: F401 (a fixture)

PORTS = range(19200, 19300)
#: a run's outcome in the state store while it is going, and the error it is completed with when its process died
RUNNING, DIED = "running", "daemon died during the run"


def ops_port() -> int:
    """A free 127.0.0.1 port in this suite's range."""
    for port in PORTS:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {PORTS}")


class OpsDaemon(test_daemon.DaemonProcess):
    """``atalaia run`` in a subprocess on a port of :data:`PORTS`; its output is copied to ``log`` through a
    pipe (so a file-size limit on the daemon never reaches its log), ``preexec`` runs in the child."""

    def __init__(self, config: Path, log: Path, *, env: dict[str, str] | None = None,
                 preexec: Callable[[], None] | None = None) -> None:
        import httpx

        self.port = ops_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        self._log = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "monitor.cli", "run", "--config", str(config), "--listen", f"127.0.0.1:{self.port}"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, preexec_fn=preexec)
        self._copier = threading.Thread(target=self._copy, daemon=True)
        self._copier.start()
        self.client = httpx.Client(base_url=self.url, timeout=10.0)

    def _copy(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._log.write(line)
            self._log.flush()

    def kill(self) -> None:
        """SIGKILL (as the OOM killer does), then wait for it."""
        self.proc.kill()
        self.proc.wait(timeout=10)
        self._copier.join(5)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._copier.join(5)
        self.client.close()
        self._log.close()


@pytest.fixture
def ops_daemons(tmp_path: Path) -> Iterator[Callable[..., OpsDaemon]]:
    started: list[OpsDaemon] = []

    def start(config: Path, **kwargs: Any) -> OpsDaemon:
        d = OpsDaemon(config, tmp_path / f"daemon-{len(started)}.log", **kwargs)
        started.append(d)
        return d

    yield start
    for d in started:
        d.close()


def db_runs(state: Path, model: str = "m1") -> list[tuple[str, str | None]]:
    """(outcome, error) of the model's recorded runs, oldest first, read as another process would."""
    db = state / "state.db"
    if not db.exists():
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return con.execute("SELECT outcome, error FROM runs WHERE model = ? ORDER BY id", (model,)).fetchall()
    except sqlite3.OperationalError:  # not created yet
        return []
    finally:
        con.close()


# --------------------------------------------------------------------------- 1. a crash loop

@pytest.mark.e2e
def test_a_daemon_killed_during_every_first_run_shows_missed_runs(tmp_path: Path, ops_daemons,
                                                                  silent_store: SilentStore) -> None:
    """An OOM crash loop: each process is killed during its start-up run (held here on an object store that
    never answers).  Runs were recorded only when they finished, so no process left a trace and each new one
    read ``atalaia_missed_runs`` 1: AtalaiaStale (>= 3) never fired.  Each run is now recorded as it starts;
    the next process completes one left ``running`` as an error and counts from it."""
    config = hung_s3_config(tmp_path, silent_store, every="1h", timeout="10m")
    state = tmp_path / "state"
    env = os.environ | S3_ENV
    for life in (1, 2):
        d = ops_daemons(config, env=env)
        d.wait_up()
        wait_for(lambda: [o for o, _ in db_runs(state)].count(RUNNING) == 1, timeout=START_TIMEOUT,
                 what=f"process {life}'s start-up run to be recorded as running", daemon=d)
        d.kill()
        if life == 2:
            assert "the daemon died during it" in d.log() and " WARNING " in d.log(), d.tail()
    assert db_runs(state) == [("error", DIED), (RUNNING, None)]

    third = ops_daemons(config, env=env)
    third.wait_up()
    m = third.metrics()
    # the two dead processes' start-up runs and this one's (hourly: no firing came due in between)
    assert m.get("atalaia_missed_runs", model="m1") == 3, m.text
    # the second process's run, completed as error by this one, is in this one's error count
    assert m.get("atalaia_runs_total", model="m1", outcome="error") == 1, m.text
    # its own start-up run is recorded when APScheduler fires it, which may come after /healthz answers
    wait_for(lambda: [o for o, _ in db_runs(state)] == ["error", "error", RUNNING], timeout=START_TIMEOUT,
             what="the third process's start-up run to be recorded as running", daemon=third)


# --------------------------------------------------------------------------- 2. a wall clock stepped back

class Monotonic:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def small_sink(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("clock") / "preds"
    reference = live_sink(root, rows_per_hour=100, hours_before=30)
    return root, reference


def missed(daemon: Daemon, model: str = "m1") -> float:
    text = generate_latest(daemon.metrics_registry).decode()
    return Metrics(text).get("atalaia_missed_runs", model=model)  # type: ignore[return-value]


def test_missed_runs_count_on_when_the_wall_clock_is_set_back_below_the_last_success(
        tmp_path: Path, small_sink: tuple[Path, dict[str, str]]) -> None:
    """Runs due meanwhile were counted in (last success, now] of the wall clock: empty once the clock went
    back before the success, so the gauge read 0 for the size of the step while no run happened."""
    root, reference = small_sink
    now = datetime.now(UTC).replace(microsecond=0)
    clock, mono = Clock(now), Monotonic()
    config = parse_config({"state_dir": str(tmp_path / "state"),
                           "models": [model_config(pred_path=str(root), reference=reference, every="5m")]})
    daemon = Daemon(config=config, clock=clock, monotonic=mono)
    try:
        assert daemon.run_model("m1") == "success"
        assert missed(daemon) == 0
        clock.t = now - timedelta(minutes=10)       # stepped back 10 minutes
        mono.t += 6 * 60                             # six minutes on: the 5-minute run came due
        assert missed(daemon) == 1
        mono.t += 5 * 60
        assert missed(daemon) == 2
        clock.t = now + timedelta(minutes=11, seconds=30)  # the wall clock catches up: no count twice
        assert missed(daemon) == 2
    finally:
        daemon.shutdown()


def test_a_watchdog_on_the_monotonic_clock_fires_a_stalled_schedule_and_warns_once(
        tmp_path: Path, small_sink: tuple[Path, dict[str, str]], caplog: pytest.LogCaptureFixture) -> None:
    """APScheduler waits for the wall-clock due time: a wall clock stepped back by an hour holds every run for
    an hour.  Here the schedule is hourly and the monotonic clock is moved an hour and a bit on, which is what
    the daemon sees after such a step (its next due time an hour away by the wall clock).  The watchdog logs
    one WARNING and fires the job at once."""
    root, reference = small_sink
    mono = Monotonic()
    config = parse_config({"state_dir": str(tmp_path / "state"),
                           "models": [model_config(pred_path=str(root), reference=reference, every="1h")]})
    daemon = Daemon(config=config, monotonic=mono, listen=f"127.0.0.1:{ops_port()}")

    def successes() -> float:
        return Metrics(generate_latest(daemon.metrics_registry).decode()).get(
            "atalaia_runs_total", model="m1", outcome="success") or 0.0

    caplog.set_level(logging.INFO, logger="atalaia")
    daemon.start()
    try:
        wait_for(lambda: successes() == 1, timeout=60, what="the start-up run")
        assert daemon.check_stalled() == []                    # on schedule: nothing to do
        mono.t += 3600 + 30                                    # within the grace (60 s past the hour)
        assert daemon.check_stalled() == []
        mono.t += 31
        wait_for(lambda: successes() == 2, timeout=30, what="the watchdog to fire the stalled job")
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "no run has started" in r.message]
        assert len(warnings) == 1, [r.message for r in warnings]
        assert "model m1" in warnings[0].getMessage() and "wall clock" in warnings[0].getMessage()
        time.sleep(WATCHDOG_SLACK)
        assert successes() == 2, "fired once, then back on schedule"
        job = daemon.scheduler.get_job("m1")
        assert job.next_run_time - datetime.now(UTC) > timedelta(minutes=59)
    finally:
        daemon.shutdown()


#: a few watchdog periods
WATCHDOG_SLACK = 3.0


def test_the_watchdog_leaves_runs_that_wait_for_a_busy_executor_alone(
        tmp_path: Path, small_sink: tuple[Path, dict[str, str]], caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """12 models whose runs take a while against APScheduler's 10 executor threads: two start-up runs wait
    their turn.  The watchdog took them as stalled (5 s after start), "ran them now", and that firing was
    then dropped as a second instance: a WARNING and a skipped run each, with nothing wrong.  A submitted
    run counts as fired."""
    from monitor import evaluate as evaluate_module

    root, reference = small_sink
    real = evaluate_module.Evaluator.evaluate

    def slow(self, **kwargs):  # type: ignore[no-untyped-def]
        time.sleep(7.0)
        return real(self, **kwargs)

    monkeypatch.setattr(evaluate_module.Evaluator, "evaluate", slow)
    models = [model_config(pred_path=str(root), reference=reference, every="1h") | {"name": f"m{i}"}
              for i in range(12)]
    daemon = Daemon(config=parse_config({"state_dir": str(tmp_path / "state"), "models": models}),
                    listen=f"127.0.0.1:{ops_port()}")
    caplog.set_level(logging.INFO, logger="atalaia")
    daemon.start()
    try:
        time.sleep(6.5)  # past the watchdog's 5 s start-up grace, before the first runs end
        assert daemon.check_stalled() == []
    finally:
        daemon.shutdown()
    assert not [r.getMessage() for r in caplog.records if "no run has started" in r.getMessage()]
    skipped = Metrics(generate_latest(daemon.metrics_registry).decode())
    assert all((skipped.get("atalaia_runs_total", model=f"m{i}", outcome="skipped") or 0) == 0 for i in range(12))


# --------------------------------------------------------------------------- 3. a full state disk

def _file_size_limit(limit: int) -> Callable[[], None]:
    def apply() -> None:  # in the child: writes past ``limit`` bytes fail with EFBIG, as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.mark.e2e
def test_a_full_state_disk_logs_one_line_per_sync_and_counts_state_errors(tmp_path: Path, ops_daemons) -> None:
    """Files of the state dir cannot grow past 48 KiB (a real EFBIG from the kernel, as ENOSPC on a full
    disk): every partition profile (about 65 KB) fails, and the SQLite WAL soon does.  This logged one
    WARNING per partition file (19 a run here, up to 48) and no metric said so."""
    preds = tmp_path / "preds"
    reference = live_sink(preds, rows_per_hour=500, hours_before=30)
    state = tmp_path / "state"
    config = write_config(tmp_path / "atalaia.yaml", state, [model_config(
        pred_path=str(preds), reference=reference, every="1s", window="20h")])
    StateStore.in_dir(state).close()  # the database itself (40 KB) was made while the disk had room
    d = ops_daemons(config, preexec=_file_size_limit(48 * 1024))
    d.wait_up()
    m = wait_metrics(d, lambda m: m.get("atalaia_state_errors_total", model="m1", store="partitions") >= 2
                     and m.get("atalaia_state_errors_total", model="m1", store="state_db") >= 1,
                     timeout=60, what="state errors of both stores")
    runs = sum(m.runs("m1", o) for o in ("success", "partial", "error", "timeout"))
    assert d.stop() == 0
    log = d.log().splitlines()
    store_lines = [ln for ln in log if "partition profile" in ln and "cannot store" in ln]
    assert store_lines, d.tail()
    assert len(store_lines) <= runs + 1, "one line per sync, not one per partition file"
    partitions = state / "partitions" / "model=m1"
    for line in store_lines:
        assert " WARNING " in line and f"in {partitions}" in line, line
        assert " of " in line and "File too large" in line, line
    assert any("could not record the run" in ln for ln in log), d.tail()


@pytest.mark.e2e
def test_the_exposition_has_state_error_counters_at_zero_and_no_created_families(tmp_path: Path,
                                                                                 ops_daemons) -> None:
    preds = tmp_path / "preds"
    reference = live_sink(preds, rows_per_hour=100, hours_before=30)
    config = write_config(tmp_path / "atalaia.yaml", tmp_path / "state", [model_config(
        pred_path=str(preds), reference=reference, every="1h")])
    d = ops_daemons(config)
    d.wait_up()
    m = wait_metrics(d, lambda m: m.runs("m1", "success") >= 1, timeout=60, what="a first run")
    body = m.text
    for store in ("state_db", "partitions"):
        assert m.get("atalaia_state_errors_total", model="m1", store=store) == 0.0, body
    assert "# TYPE atalaia_state_errors_total counter" in body
    assert "# HELP atalaia_state_errors_total " in body
    created = [ln for ln in body.splitlines() if "_created" in ln]
    assert created == [], created
    promtool = shutil.which("promtool")
    if promtool:
        done = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
    assert d.stop() == 0


# --------------------------------------------------------------------------- 5. a slow reference build

@pytest.mark.e2e
def test_a_slow_reference_build_is_a_timeout_of_its_run_not_a_hung_source(tmp_path: Path, ops_daemons) -> None:
    """A 3M-row reference takes 2-4 seconds to build, longer than the run's 1.2 s timeout.  It was
    reported as a hung source (``source_errors_total{reason="timeout"}``, naming a window file that was never
    slow).  The run now ends as a timeout logged as the reference build's; the build is kept, and the next
    run succeeds on it."""
    preds = tmp_path / "preds"
    h = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    ref_start = h - timedelta(hours=30)
    write_hourly_sink(preds, start=ref_start, hours=24, rows_per_hour=125_000, id_prefix="r")
    write_hourly_sink(preds, start=ref_start + timedelta(hours=24), hours=8, rows_per_hour=200, seed=1)
    reference = {"start": ref_start.isoformat(), "end": (ref_start + timedelta(hours=24)).isoformat()}
    # the build (3M rows, 2-4 s) outlasts the timeout; the window's reads (a few small files) stay well
    # inside it even on a busy machine
    config = write_config(tmp_path / "atalaia.yaml", tmp_path / "state", [model_config(
        pred_path=str(preds), reference=reference, every="3s", timeout="1200ms")])
    d = ops_daemons(config)
    d.wait_up()
    m = wait_metrics(d, lambda m: m.runs("m1", "timeout") >= 1 and m.runs("m1", "success") >= 1, timeout=90,
                     what="the start-up run's timeout, then a success on the kept reference")
    assert d.stop() == 0
    log = d.log()
    assert m.get("atalaia_source_errors_total", model="m1", reason="timeout") == 0, log
    lines = [ln for ln in log.splitlines() if " ERROR " in ln and ("timeout" in ln or "did not finish" in ln)]
    assert lines, d.tail()
    for line in lines:  # ready after the deadline, or still being built when the run was abandoned
        assert "reference profile" in line and "source hung" not in line and "file=" not in line, line
    assert "the source did not finish" not in log


# --------------------------------------------------------------------------- 8. skipped firings logged once

@pytest.mark.e2e
def test_each_skipped_firing_is_logged_once_at_warning(tmp_path: Path, ops_daemons,
                                                       silent_store: SilentStore) -> None:
    """A run held on a hung store and a 1-second schedule: APScheduler drops a firing every second.  Each was
    logged twice, APScheduler's WARNING and the daemon's INFO."""
    config = hung_s3_config(tmp_path, silent_store, every="1s", timeout="20s")
    d = ops_daemons(config, env=os.environ | S3_ENV)
    d.wait_up()
    wait_metrics(d, lambda m: m.runs("m1", "skipped") >= 3, timeout=START_TIMEOUT, what="three skipped firings")
    d.kill()
    log = d.log().splitlines()
    assert not [ln for ln in log if "apscheduler" in ln], "\n".join(log[-20:])
    ours = [ln for ln in log if "run skipped: the previous run is still going" in ln]
    assert len(ours) >= 3 and all(" WARNING atalaia.daemon: model m1: " in ln for ln in ours), ours
    assert not [ln for ln in log if "skipped" in ln and ln not in ours]



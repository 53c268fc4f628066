"""``atalaia_missed_runs{model}``: the scheduled runs of a model due since its last success.

The daemon is built with an injected clock and its runs are made by calling ``run_model`` (no
scheduler), on a real Parquet sink; a run fails when the sink is moved away. The value is read from
the daemon's registry, as a scrape would. Then: a restart on the same state dir (the count goes on,
runs due while the daemon was down included), the cap, and a real ``atalaia run`` subprocess whose
``/metrics`` exposes the gauge with the right value and passes ``promtool check metrics``.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from conftest import model_config, write_hourly_sink
from monitor.config import parse_config
from monitor.cron import crontab_trigger
from monitor.exporter import MISSED_RUNS_CAP, MissedRuns
from monitor.scheduler import Daemon
from monitor.state import RunRecord, StateStore
from test_daemon import Metrics, daemons, wait_metrics, write_config, write_live_sink  # noqa: F401 (a fixture)

#: the sink's first hour (a Thursday) and the reference day; runs are evaluated from Friday on
SINK_START = datetime(2026, 11, 26, tzinfo=UTC)
SINK_HOURS = 6 * 24
MON = datetime(2026, 11, 30, tzinfo=UTC)
TUE = MON + timedelta(days=1)
OFFICE = "*/15 9-17 * * 1-5"


@pytest.fixture(scope="module")
def sink(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Thursday 2026-11-26 to Wednesday 2026-12-02, 100 predictions an hour."""
    root = tmp_path_factory.mktemp("missed-runs") / "preds"
    write_hourly_sink(root, start=SINK_START, hours=SINK_HOURS, rows_per_hour=100)
    return root


class Clock:
    def __init__(self, t: datetime) -> None:
        self.t = t

    def __call__(self) -> datetime:
        return self.t


class Harness:
    """A daemon on the sink with an injected clock; the sink can be moved away to make runs fail."""

    def __init__(self, *, sink: Path, state: Path, models: list[dict[str, Any]], clock: Clock) -> None:
        self.sink, self.clock = sink, clock
        self.config = parse_config({"state_dir": str(state), "models": models})
        self.daemon = Daemon(config=self.config, clock=clock)
        self.closed = False

    def missed(self, model: str, at: datetime | None = None) -> float:
        """The value of ``atalaia_missed_runs{model}`` in a scrape at ``at`` (default: the clock's time)."""
        if at is not None:
            self.clock.t = at
        text = generate_latest(self.daemon.metrics_registry).decode()
        values = [s.value for fam in text_string_to_metric_families(text) for s in fam.samples
                  if s.name == "atalaia_missed_runs" and s.labels == {"model": model}]
        assert len(values) == 1, values
        return values[0]

    def run(self, model: str, at: datetime, *, ok: bool = True) -> str:
        """A run of ``model`` at ``at``, which ends at ``at`` (the clock does not move during it)."""
        self.clock.t = at
        away = self.sink.with_name("preds-away")
        if not ok:
            self.sink.rename(away)
        try:
            outcome = self.daemon.run_model(model)
        finally:
            if not ok:
                away.rename(self.sink)
        assert (outcome in ("success", "partial")) == ok, outcome
        return outcome

    def close(self) -> None:
        """Stop the daemon (the state dir's lock is released, as at a real stop)."""
        if not self.closed:
            self.closed = True
            self.daemon.shutdown()


def every(name: str, sink: Path, period: str) -> dict[str, Any]:
    return model_config(name=name, pred_path=str(sink), every=period, reference={
        "start": SINK_START.isoformat(), "end": (SINK_START + timedelta(days=1)).isoformat()})


def cron(name: str, sink: Path, expression: str) -> dict[str, Any]:
    return every(name, sink, "5m") | {"schedule": {"cron": expression}}


@pytest.fixture
def harness(tmp_path: Path, sink: Path) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(models: list[dict[str, Any]], start: datetime, state: str = "state") -> Harness:
        h = Harness(sink=sink, state=tmp_path / state, models=models, clock=Clock(start))
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


def minutes(t: datetime, m: float) -> datetime:
    return t + timedelta(minutes=m)


# --------------------------------------------------------------------------- one daemon

def test_every_5m_counts_the_runs_due_since_the_last_success(harness: Callable[..., Harness], sink: Path) -> None:
    start = MON + timedelta(hours=10)
    h = harness([every("five", sink, "5m")], start)
    # the start-up run is due at once: counted until it succeeds
    assert h.missed("five") == 1
    h.run("five", start)
    assert h.missed("five") == 0
    assert h.missed("five", minutes(start, 4.99)) == 0
    assert h.missed("five", minutes(start, 5)) == 1           # due at 10:05 (counted while it runs)
    h.run("five", minutes(start, 5), ok=False)
    assert h.missed("five") == 1                              # a failure does not reset it
    assert h.missed("five", minutes(start, 10)) == 2
    h.run("five", minutes(start, 10), ok=False)
    assert h.missed("five", minutes(start, 14.99)) == 2
    assert h.missed("five", minutes(start, 15)) == 3          # AtalaiaStale goes pending here
    assert h.missed("five", minutes(start, 19)) == 3          # the 10:15 run is hung: still 3
    # the 10:20 run succeeds, 20 s after it was due
    h.clock.t = minutes(start, 20)
    assert h.missed("five") == 4
    h.clock.t = minutes(start, 20 + 1 / 3)
    assert h.daemon.run_model("five", at=minutes(start, 20)) == "success"
    assert h.missed("five") == 0
    assert h.missed("five", minutes(start, 25)) == 1
    # the gauge beside the interval gauge, labelled by model alone
    text = generate_latest(h.daemon.metrics_registry).decode()
    assert "# TYPE atalaia_missed_runs gauge" in text
    assert 'atalaia_missed_runs{model="five"} 1.0' in text.splitlines()


def test_a_business_hours_cron_counts_its_firings_not_its_nights(harness: Callable[..., Harness],
                                                                sink: Path) -> None:
    """``*/15 9-17 * * 1-5``: the interval gauge reads 63h15m (the weekend), so a rule on the age of the
    last success waited days; the count is 0 all night and 3 at Tuesday 09:30 when every run fails."""
    start = MON + timedelta(hours=17, minutes=40)
    h = harness([cron("office", sink, OFFICE)], start)
    smp = generate_latest(h.daemon.metrics_registry).decode()
    assert 'atalaia_schedule_interval_seconds{model="office"} 227700.0' in smp.splitlines()
    assert h.missed("office") == 1                            # the start-up run at 17:40
    h.run("office", start)
    assert h.missed("office") == 0
    assert h.missed("office", MON + timedelta(hours=17, minutes=45)) == 1
    h.run("office", MON + timedelta(hours=17, minutes=45, seconds=10))
    for night in (MON + timedelta(hours=18), MON + timedelta(hours=23, minutes=59), TUE + timedelta(hours=3),
                  TUE + timedelta(hours=8, minutes=59, seconds=59)):
        assert h.missed("office", night) == 0, night
    tue_9 = TUE + timedelta(hours=9)
    assert h.missed("office", tue_9) == 1
    h.run("office", tue_9, ok=False)
    assert h.missed("office", minutes(tue_9, 15)) == 2
    h.run("office", minutes(tue_9, 15), ok=False)
    assert h.missed("office", minutes(tue_9, 29.99)) == 2
    assert h.missed("office", minutes(tue_9, 30)) == 3        # the third: pending, firing at 09:35
    assert h.missed("office", TUE + timedelta(hours=17, minutes=45)) == 36


def test_a_weekend_counts_nothing_until_monday(harness: Callable[..., Harness], sink: Path) -> None:
    friday = MON - timedelta(days=3)
    h = harness([cron("office", sink, OFFICE)], friday + timedelta(hours=17, minutes=45))
    h.run("office", friday + timedelta(hours=17, minutes=45))
    assert h.missed("office", friday + timedelta(days=1, hours=12)) == 0
    assert h.missed("office", MON + timedelta(hours=8, minutes=59)) == 0
    assert h.missed("office", MON + timedelta(hours=9)) == 1


# --------------------------------------------------------------------------- restarts

def test_a_restart_goes_on_counting_from_the_restored_success(harness: Callable[..., Harness], sink: Path) -> None:
    """Runs due while the daemon was down count as missed: 10:05, 10:10 and 10:15 after a success at
    10:00 and a stop at 10:02, plus the restarted daemon's own start-up run at 10:20."""
    start = MON + timedelta(hours=10)
    first = harness([every("five", sink, "5m")], start)
    first.run("five", start)
    first.clock.t = minutes(start, 2)
    assert first.missed("five") == 0
    first.close()

    again = harness([every("five", sink, "5m")], minutes(start, 20))
    assert again.missed("five") == 4, "not reset to 0, and the runs due while down are missed"
    assert again.missed("five", minutes(start, 24.99)) == 4
    assert again.missed("five", minutes(start, 25)) == 5      # the new process's own schedule: 10:20 + 5m
    again.run("five", minutes(start, 25))
    assert again.missed("five") == 0


def test_a_restart_within_the_interval_counts_only_the_start_up_run(harness: Callable[..., Harness],
                                                                    sink: Path) -> None:
    start = MON + timedelta(hours=10)
    first = harness([every("five", sink, "5m")], start)
    first.run("five", start)
    first.close()
    again = harness([every("five", sink, "5m")], minutes(start, 3))
    assert again.missed("five") == 1
    again.run("five", minutes(start, 3))
    assert again.missed("five") == 0


def test_a_restart_of_a_cron_schedule_counts_the_firings_it_was_down_for(harness: Callable[..., Harness],
                                                                         sink: Path) -> None:
    first = harness([cron("office", sink, OFFICE)], MON + timedelta(hours=17, minutes=40))
    first.run("office", MON + timedelta(hours=17, minutes=45))
    first.close()
    # down overnight and through 09:00 and 09:15; up again at 09:20
    again = harness([cron("office", sink, OFFICE)], TUE + timedelta(hours=9, minutes=20))
    assert again.missed("office") == 3
    assert again.missed("office", TUE + timedelta(hours=9, minutes=30)) == 4


def test_a_model_that_never_succeeded_goes_on_from_its_first_recorded_run(harness: Callable[..., Harness],
                                                                          sink: Path) -> None:
    start = MON + timedelta(hours=10)
    first = harness([every("five", sink, "5m")], start)
    first.run("five", start, ok=False)
    first.run("five", minutes(start, 5), ok=False)
    assert first.missed("five") == 2
    first.close()
    again = harness([every("five", sink, "5m")], minutes(start, 7))
    assert again.missed("five") == 3                          # 10:00 and 10:05, then the start-up run at 10:07
    # a model new to the state dir counts from its start-up run
    fresh = harness([every("five", sink, "5m")], minutes(start, 7), state="fresh")
    assert fresh.missed("five") == 1


# --------------------------------------------------------------------------- the cap

def test_the_count_stops_at_the_cap_and_steps_over_no_more_run_times() -> None:
    now = [MON]
    steps: list[datetime] = []

    def minutely(t: datetime) -> datetime:
        steps.append(t)
        return t.replace(second=0, microsecond=0) + timedelta(minutes=1)

    missed = MissedRuns(clock=lambda: now[0], cap=1000)
    missed.watch("m", due_after=minutely, since=MON - timedelta(days=30))   # 43,200 runs due
    assert missed.count("m") == 1000
    assert len(steps) == 1000
    assert missed.count("m") == 1000 and len(steps) == 1000                # later scrapes: no steps at all
    now[0] = MON + timedelta(hours=1)
    assert missed.count("m") == 1000 and len(steps) == 1000
    missed.succeeded("m", at=now[0])
    now[0] += timedelta(minutes=3)
    assert missed.count("m") == 3
    now[0] += timedelta(minutes=2)
    assert missed.count("m") == 5 and len(steps) == 1006                   # incremental: 2 more due, 1 ahead
    with pytest.raises(ValueError, match="cap must be a positive whole number, got 0"):
        MissedRuns(clock=lambda: MON, cap=0)


def test_a_restart_a_month_later_on_a_minutely_schedule_reads_the_cap(harness: Callable[..., Harness],
                                                                       sink: Path) -> None:
    start = MON + timedelta(hours=10)
    first = harness([cron("minutely", sink, "* * * * *")], start)
    first.run("minutely", start)
    first.close()
    again = harness([cron("minutely", sink, "* * * * *")], start + timedelta(days=30))
    assert MISSED_RUNS_CAP == 1000
    assert again.missed("minutely") == 1000
    assert again.missed("minutely", start + timedelta(days=31)) == 1000
    text = generate_latest(again.daemon.metrics_registry).decode()
    (help_line,) = [ln for ln in text.splitlines() if ln.startswith("# HELP atalaia_missed_runs ")]
    assert "at most 1000" in help_line


# --------------------------------------------------------------------------- the real daemon

@pytest.mark.e2e
def test_the_daemon_exposes_the_count_and_promtool_accepts_it(tmp_path: Path, daemons) -> None:  # noqa: F811
    """Two models: ``m1`` reads a live sink hourly and succeeds at start-up (0 missed); ``m2`` runs at
    every hour's start on a source that is not there, with a success on record 5 hours ago: the five
    firings since and its failed start-up run are missed."""
    reference = write_live_sink(tmp_path / "preds", rows_per_hour=200, hours_before=30)
    config = write_config(tmp_path, [
        model_config(name="m1", pred_path=str(tmp_path / "preds"), reference=reference, every="1h"),
        model_config(name="m2", pred_path=str(tmp_path / "gone"), reference=reference) | {"schedule": {"cron": "0 * * * *"}},
    ])
    hourly = crontab_trigger("0 * * * *")
    last = datetime.now(UTC) - timedelta(hours=5)
    store = StateStore.in_dir(tmp_path / "state")
    store.record_run(RunRecord(model="m2", started_at=last, window_start=last - timedelta(hours=1), window_end=last,
                               outcome="success", duration_seconds=1.0, rows=10))
    store.close()
    since = last + timedelta(seconds=1)

    def expected(now: datetime) -> int:
        due, t = 0, hourly.get_next_fire_time(None, since + timedelta(milliseconds=1))
        while t is not None and t <= now:
            due, t = due + 1, hourly.get_next_fire_time(None, t + timedelta(milliseconds=1))
        return due + 1                                         # and the failed start-up run

    d = daemons(config)
    d.wait_up()
    wait_metrics(d, lambda m: m.runs("m1", "success") >= 1 and m.runs("m2", "error") >= 1, timeout=60,
                 what="the start-up runs of m1 (success) and m2 (error)")
    before = datetime.now(UTC)
    body = d.get("/metrics").text
    after = datetime.now(UTC)
    m = Metrics(body)
    assert m.get("atalaia_missed_runs", model="m1") == 0
    assert m.get("atalaia_missed_runs", model="m2") in {expected(before), expected(after)}
    assert expected(before) >= 5
    assert {tuple(s.labels) for s in m.matching("atalaia_missed_runs")} == {("model",)}
    assert m.get("atalaia_last_success_timestamp_seconds", model="m2") == pytest.approx(since.timestamp(), abs=1e-3)
    assert "# TYPE atalaia_missed_runs gauge" in body
    promtool = shutil.which("promtool")
    assert promtool, "promtool is not on PATH (apt-get install prometheus)"
    done = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "" and done.stderr.strip() == "", done.stdout + done.stderr
    assert d.stop() == 0

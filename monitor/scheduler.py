"""The daemon: one APScheduler job per model, metrics server, graceful stop.

* ``BackgroundScheduler`` in UTC, ``max_instances=1``, ``coalesce=True``,
  ``misfire_grace_time`` of one interval, a first run at start-up.
* Each evaluation runs on a worker thread and is abandoned after the model's
  ``timeout``: a hung source is reported (``outcome="timeout"``) and the
  schedule goes on.  Later runs start afresh (a source that answers again
  recovers at the next run), but at most ``MAX_ABANDONED`` stuck evaluations
  per model are tolerated: past that, runs are skipped (``outcome="skipped"``)
  rather than piling up threads.
* Runs APScheduler itself drops — the previous run still going at the next
  firing (``max_instances``) or a firing missed by more than the misfire
  grace time — are counted as ``outcome="skipped"`` too, and logged once, at
  WARNING, by the daemon (APScheduler's own two messages are filtered out in
  :mod:`.logs`).
* A run that outlasts its timeout while its reference profile is still being
  built is reported as such (outcome ``timeout``), not as a hung source: the
  build has no deadline and is cached for the next run.  A hung source read is
  counted in ``atalaia_source_errors_total{reason="timeout"}``.
* A watchdog on the monotonic clock fires a model's job at once when no run
  has started (nor been dropped) for longer than the gap to its next firing
  plus a grace (:func:`stall_grace`), logging one WARNING: APScheduler waits
  for wall-clock due times, so a wall clock stepped back would otherwise stop
  every run for the size of the step.
* Every run is recorded in the state store as it starts (``running``) and
  completed when it ends: a run left ``running`` by a process that died (out of
  memory, SIGKILL) is completed as ``error`` ("daemon died during the run") by
  the next daemon on the state dir, and counts as missed.
* Writes to the state dir that fail (the state store, the kept partition
  profiles, the cached reference profile) are counted in ``atalaia_state_errors_total{model,store}``.
* ``atalaia_missed_runs`` counts each model's scheduled runs since its last success (see
  :class:`~.exporter.MissedRuns`): the start-up run and the trigger's firings after it, each one
  from the moment it is due.  The count survives a restart: it goes on from the last success kept in
  the state store (for a model with no success on record, from its oldest recorded run, else from
  the start-up run).  Before the restart it counts the runs recorded since (one whose process died
  during it included: each process of a crash loop adds its start-up run) and, where none was
  recorded (the daemon was down, or APScheduler dropped the firing), the schedule's firings — for a
  cron schedule its firings, for an interval schedule one every interval after the run before.
  Wall-clock steps back do not stop the count (see :class:`~.exporter.MissedRuns`).
* SIGTERM/SIGINT set an event; the main thread then shuts the scheduler
  down, letting the running evaluation finish (at most the model's
  ``timeout``), and returns 0.  Evaluations abandoned on a hung source may
  still be blocked then: :meth:`Daemon.stuck_evaluations` tells the caller
  (the CLI leaves with ``os._exit`` rather than wait for them).
* A damaged state store is moved aside and replaced (see :mod:`.state`); an
  unusable ``state_dir`` raises :class:`~.state.StateStoreError` naming it.
"""

from __future__ import annotations

import bisect
import contextlib
import contextvars
import functools
import logging
import shutil
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, EVENT_JOB_SUBMITTED, JobEvent
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.interval import IntervalTrigger
from prometheus_client import CollectorRegistry

from detectors.errors import SourceError, SourceTimeout
from detectors.registry import Registry

from .config import Config, ModelConfig, config_warnings, parse_listen
from .cpus import usable_cpus
from .evaluate import REFERENCE_FILE, Evaluation, Evaluator, ReferenceBuildTimeout, RunProgress, cache_version
from .exporter import MISSED_RUNS_CAP, FindingsCollector, LatestFindings, MetricsServer, MissedRuns, Telemetry
from .logs import model_context, source_fields
from .partition_store import PartitionStore
from .state import RUNNING, DirLock, RunRecord, StateStore, StateStoreError, is_corruption

__all__ = ["Daemon", "OUTCOMES", "stall_grace"]

log = logging.getLogger("atalaia.daemon")

OUTCOMES = ("success", "partial", "error", "timeout", "skipped")
#: abandoned (timed-out, still running) evaluations tolerated per model before runs are skipped
MAX_ABANDONED = 2
#: the step from a time to the first run time after it (a run due exactly at a success is not missed)
_TICK = timedelta(milliseconds=1)


#: the watchdog's grace past a model's next firing, before it takes the schedule as stalled: the gap to that
#: firing, at least STALL_GRACE_MIN (APScheduler fires late under load) and at most STALL_GRACE_MAX
STALL_GRACE_MIN = timedelta(seconds=5)
STALL_GRACE_MAX = timedelta(seconds=60)
#: how often the watchdog looks
WATCHDOG_PERIOD = 1.0


def utc_now() -> datetime:
    return datetime.now(UTC)


def stall_grace(gap: timedelta) -> timedelta:
    """How long past a firing due ``gap`` from now the watchdog waits before it fires the job itself.

    >>> stall_grace(timedelta(seconds=2)), stall_grace(timedelta(minutes=5))
    (datetime.timedelta(seconds=5), datetime.timedelta(seconds=60))
    """
    return min(max(gap, STALL_GRACE_MIN), STALL_GRACE_MAX)


@dataclass(frozen=True)
class _RunTimes:
    """When a model's runs are due: the start-up run at ``start``, then ``trigger``'s fire times.

    Before ``start`` (earlier processes, or none running): the runs ``recorded`` in the state store
    (oldest first), and in the gaps between them the schedule's firings (``firing_after(t)``: the
    schedule's next firing after the run time ``t``).  A recorded run before the firing after that
    one stands for it (a run starts a little after its firing), or is an extra run of its own (the
    start-up run of each process of a crash loop)."""

    trigger: BaseTrigger
    start: datetime
    firing_after: Callable[[datetime], datetime | None]
    recorded: tuple[datetime, ...] = ()

    def after(self, t: datetime) -> datetime | None:
        """The first run time after ``t``; ``None`` when no more are due."""
        if t < self.start:
            due = self.firing_after(t)
            i = bisect.bisect_right(self.recorded, t)
            if i < len(self.recorded):
                run = self.recorded[i]
                following = self.firing_after(due) if due is not None else None
                if following is None or run < following:
                    due = run
            return due if due is not None and due < self.start else self.start
        return self.trigger.get_next_fire_time(None, t + _TICK)


@dataclass(frozen=True)
class _CountFrom:
    """Where a model's missed-run count starts after a restart: after its last success, or at (and
    including) its oldest recorded run; ``recorded``: the start times of the runs recorded since
    (failed, timed out, skipped, or left running by a process that died), oldest first."""

    at: datetime
    inclusive: bool
    recorded: tuple[datetime, ...] = ()


def _plus(step: timedelta, t: datetime) -> datetime:
    return t + step


def _next_firing(trigger: BaseTrigger, t: datetime) -> datetime | None:
    return trigger.get_next_fire_time(None, t + _TICK)


@dataclass
class _Worker:
    thread: threading.Thread
    done: threading.Event = field(default_factory=threading.Event)
    result: Evaluation | None = None
    error: BaseException | None = None


class Daemon:
    """Wires config, evaluators, state store, exporter and scheduler together."""

    def __init__(self, *, config: Config, registry: CollectorRegistry | None = None,
                 detectors: Registry | None = None, state: StateStore | None = None,
                 clock: Callable[[], datetime] = utc_now, listen: str | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        #: the watchdog's clock and the missed-run count's guard against a wall clock stepped back
        self.monotonic = monotonic
        self.metrics_registry = registry or CollectorRegistry()
        self.telemetry = Telemetry(self.metrics_registry)
        self.telemetry.prime((m.name for m in config.models), OUTCOMES)
        #: each model's longest gap between runs (for cron: over the next 7 days)
        self.intervals = {m.name: m.schedule.longest_interval(start=clock()) for m in config.models}
        for name, interval in self.intervals.items():
            self.telemetry.interval.labels(name).set(interval.total_seconds())
        self.latest = LatestFindings(max_groups=config.server.max_groups,
                                     on_cap=lambda model, n: self.telemetry.label_cap.labels(model).inc(n))
        self.metrics_registry.register(FindingsCollector(self.latest))
        self.missed = MissedRuns(clock=clock, monotonic=monotonic)
        self.metrics_registry.register(self.missed)
        self._count_from: dict[str, _CountFrom] = {}
        lock: DirLock | None = None
        try:
            # before the store is opened and any cache dropped: one daemon per state dir
            lock = DirLock(config.state_path)
            if state is None:
                state = StateStore.in_dir(config.state_path)
        except StateStoreError as exc:
            if lock is not None:
                lock.release()
            raise StateStoreError(f"state_dir {config.state_dir!r} cannot be used: {exc}") from None
        self._dir_lock = lock
        self.state = state
        # sized by the CPUs the container may use, not the node's (see monitor.cpus)
        self.pool = ThreadPoolExecutor(max_workers=max(2, usable_cpus()), thread_name_prefix="atalaia-count")
        # partition profiles survive a restart: the first run after one reads only what changed
        self.evaluators = {m.name: Evaluator(config=config, model=m, registry=detectors, pool=self.pool,
                                             partition_store=PartitionStore(
                                                 config.state_path / "partitions" / f"model={m.name}",
                                                 version=cache_version(), on_error=self._state_error(m.name)),
                                             on_state_error=lambda store, name=m.name:
                                             self.telemetry.state_errors.labels(name, store).inc())
                           for m in config.models}
        self._drop_caches_of_removed_models()
        self._restore()
        self._watch_run_times(start=clock())  # once more from the scheduler's real start in schedule()
        self.stop_event = threading.Event()
        #: per model, the monotonic time by which its next run should have started (or been dropped)
        self._due_by: dict[str, float] = {}
        self._last_fired: dict[str, float] = {}
        self._stalled: set[str] = set()
        self._watchdog: threading.Thread | None = None
        self._attempted: set[str] = set()
        self._abandoned: dict[str, list[_Worker]] = {}
        self.scheduler = BackgroundScheduler(timezone=UTC)
        self.listen = listen or config.server.listen
        self.server: MetricsServer | None = None

    def _state_error(self, model: str) -> Callable[[], None]:
        """What the partition store of ``model`` calls when a sync fails."""
        return lambda: self.telemetry.state_errors.labels(model, "partitions").inc()

    def _drop_caches_of_removed_models(self) -> None:
        """Cached reference and partition profiles of models no longer configured (renamed or removed)
        would otherwise stay in the state dir for good; they are caches, so they go."""
        state = self.config.state_path
        names = set(self.evaluators)
        stale: list[Path] = []
        with contextlib.suppress(OSError):
            stale += [p for p in (state / "partitions").iterdir()
                      if p.name.startswith("model=") and p.name.removeprefix("model=") not in names]
        with contextlib.suppress(OSError):
            stale += [p for p in (state / "references").iterdir()
                      if (m := REFERENCE_FILE.fullmatch(p.name)) and m["model"] not in names]
        for path in stale:
            try:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
                log.info("removed the cached profiles of a model no longer configured: %s", path)
            except OSError as exc:
                log.warning("cannot remove %s: %s", path, exc)

    def _restore(self) -> None:
        """Findings and last-success times from the state store, so a restart exports them at once.

        A store found damaged here is moved aside and replaced; unreadable findings are skipped."""
        try:
            self._restore_from_state()
        except sqlite3.DatabaseError as exc:
            if not is_corruption(exc):
                raise
            self.state.recover(exc)
        except (ValueError, TypeError, KeyError) as exc:
            log.error("cannot restore the latest findings from %s (%s: %s): starting without them",
                      self.state.path, type(exc).__name__, exc)

    def _restore_from_state(self) -> None:
        # runs a process left `running` died with it (one daemon per state dir): they failed, and count as missed
        # below (from the last success, or from the oldest recorded run); left as they are when the store
        # cannot be written, they count all the same
        try:
            died = self.state.fail_unfinished()
        except sqlite3.OperationalError as exc:
            died = [r for name in self.evaluators for r in self.state.runs(name, limit=MISSED_RUNS_CAP)
                    if r.outcome == RUNNING]
            log.error("cannot record the runs an earlier process died during in the state store: %s", exc)
            for name in {r.model for r in died if r.model in self.evaluators}:
                self.telemetry.state_errors.labels(name, "state_db").inc()
        for r in died:
            if r.model in self.evaluators:
                log.warning("model %s: the run started at %s did not finish: the daemon died during it (killed, out "
                            "of memory?); recorded as outcome error", r.model, r.started_at.isoformat(),
                            extra={"model": r.model, "outcome": "error"})
                # counted by this process: a crash loop shows in the error rate of atalaia_runs_total too
                self.telemetry.runs.labels(r.model, "error").inc()
        for name in self.evaluators:
            run = self.state.last_success(name)
            recorded = self.state.runs(name, limit=MISSED_RUNS_CAP)  # newest first
            if run is not None:
                done = run.started_at + timedelta(seconds=run.duration_seconds)
                self.telemetry.last_success.labels(name).set(done.timestamp())
                since = sorted(r.started_at for r in recorded if r.started_at > done)
                self._count_from[name] = _CountFrom(at=done, inclusive=False, recorded=tuple(since))
            elif recorded:
                # no success on record: from the oldest of its latest runs (older ones would only add past the cap)
                self._count_from[name] = _CountFrom(at=recorded[-1].started_at, inclusive=True,
                                                    recorded=tuple(sorted(r.started_at for r in recorded)))
        for model, (findings, config) in self.state.latest().items():
            if model not in self.evaluators or not findings:
                continue
            if config != self.evaluators[model].config_key():
                # another detector set, threshold or column list: its findings would be exported frozen (a removed
                # detector's alert for good, while the source fails); the model's next run exports its own
                log.info("not restoring the findings of model %s: its configuration changed since they were made",
                         model)
                continue
            end = datetime.fromisoformat(findings[0].window_end.replace("Z", "+00:00"))
            self.latest.set(model, findings, end.timestamp())
            log.info("restored %d findings of model %s from the state store", len(findings), model)

    def _watch_run_times(self, *, start: datetime) -> None:
        """(Re)start every model's missed-run count for a start-up run at ``start``."""
        for m in self.config.models:
            origin = self._count_from.get(m.name, _CountFrom(at=start, inclusive=True))
            since = origin.at - _TICK if origin.inclusive else origin.at
            firing_after: Callable[[datetime], datetime | None]
            if m.schedule.every is not None:
                # APScheduler runs an interval schedule at start, then every interval from there; before, a
                # process's runs came every interval after the one before (the success, a recorded run)
                every = m.schedule.every
                trigger: BaseTrigger = IntervalTrigger(seconds=every.total_seconds(), start_date=start, timezone=UTC)
                firing_after = functools.partial(_plus, every)
            else:
                trigger = m.schedule.trigger()
                firing_after = functools.partial(_next_firing, trigger)
            self.missed.watch(m.name, due_after=_RunTimes(trigger=trigger, start=start, firing_after=firing_after,
                                                          recorded=origin.recorded).after, since=since)

    # -- readiness ------------------------------------------------------------
    def readiness(self) -> tuple[bool, str]:
        missing = [m for m in self.evaluators if m not in self._attempted]
        if missing:
            return False, f"waiting for the first run of: {', '.join(missing)}"
        return True, "ready"

    # -- one run --------------------------------------------------------------
    def run_model(self, name: str, *, at: datetime | None = None) -> str:
        """Evaluate one model now (the scheduler's job); returns the outcome.  Every line it logs names the model
        (``model`` in JSON logs, see :mod:`.logs`), those of the threads it starts too."""
        with model_context(name):
            return self._run_model(name, at=at)

    def _run_model(self, name: str, *, at: datetime | None) -> str:
        model = self.config.model(name)
        self._fired(name)
        at = at or self.clock()
        started = time.monotonic()
        outcome, error, evaluation = "error", None, None
        stuck = [w for w in self._abandoned.get(name, []) if not w.done.is_set()]
        self._abandoned[name] = stuck
        run_id: int | None = None
        if len(stuck) >= MAX_ABANDONED:
            outcome, error = "skipped", f"{len(stuck)} earlier evaluations are still stuck past their timeout"
            log.error("model %s: run skipped: %s", name, error)
        else:
            run_id = self._start_run(model, at)
            evaluation, outcome, error = self._evaluate_with_timeout(model, at)
        duration = time.monotonic() - started
        self._account(model, at, outcome, error, evaluation, duration, run_id=run_id)
        self._attempted.add(name)
        return outcome

    def _start_run(self, model: ModelConfig, at: datetime) -> int | None:
        """Record the run as started (so a process dying during it leaves a trace); ``None`` when the store
        cannot be written (the run is then recorded when it ends, if it can be)."""
        try:
            return self.state.start_run(model=model.name, started_at=at, window_start=at - model.window, window_end=at)
        except Exception as exc:  # the state store must never take the daemon down
            log.error("model %s: could not record the run's start in the state store: %s", model.name, exc)
            self.telemetry.state_errors.labels(model.name, "state_db").inc()
            return None

    def _evaluate_with_timeout(self, model: ModelConfig, at: datetime) -> tuple[Evaluation | None, str, str | None]:
        evaluator = self.evaluators[model.name]
        timeout = model.timeout.total_seconds()
        deadline = time.monotonic() + timeout
        progress = RunProgress()

        def work() -> None:
            try:
                worker.result = evaluator.evaluate(at=at, deadline=deadline, progress=progress)
            except BaseException as exc:  # reported by the scheduler thread
                worker.error = exc
            finally:
                worker.done.set()

        worker = _Worker(thread=threading.Thread(target=contextvars.copy_context().run, args=(work,),
                                                 name=f"atalaia-eval-{model.name}", daemon=True))
        worker.thread.start()
        if not worker.done.wait(timeout + 1.0):
            self._abandoned.setdefault(model.name, []).append(worker)
            if not progress.reference_ready.is_set() and evaluator.building_reference:
                # a slow build, not a hung source: it has no deadline, goes on, and is kept for the next run
                msg = (f"evaluation did not finish within {model.timeout}: its reference profile is still being "
                       f"built (the build has no deadline and is kept for the next run when done)")
                log.error("model %s: %s", model.name, msg)
                return None, "timeout", msg
            msg = f"evaluation did not finish within {model.timeout} (source hung?)"
            log.error("model %s: %s", model.name, msg)
            self.telemetry.source_errors.labels(model.name, "timeout").inc()
            return None, "timeout", msg
        if worker.error is not None:
            exc = worker.error
            if isinstance(exc, ReferenceBuildTimeout):  # not a source error: the source answered throughout
                log.error("model %s: %s", model.name, exc)
                return None, "timeout", str(exc)
            if isinstance(exc, SourceTimeout):
                self.telemetry.source_errors.labels(model.name, "timeout").inc()
                log.error("model %s: %s", model.name, exc)
                return None, "timeout", str(exc)
            if isinstance(exc, SourceError):
                self.telemetry.source_errors.labels(model.name, exc.reason).inc()
                log.error("model %s: %s", model.name, exc, extra=source_fields(exc))
                return None, "error", str(exc)
            log.error("model %s: evaluation failed: %s", model.name, exc, exc_info=exc)
            return None, "error", f"{type(exc).__name__}: {exc}"
        ev = worker.result
        assert ev is not None
        for err in ev.errors:
            self.telemetry.source_errors.labels(model.name, err.reason).inc()
        return ev, ev.outcome, "; ".join(map(str, ev.errors)) or None

    def _account(self, model: ModelConfig, at: datetime, outcome: str, error: str | None,
                 ev: Evaluation | None, duration: float, *, run_id: int | None = None) -> None:
        t = self.telemetry
        done = self.clock()
        now = done.timestamp()
        t.runs.labels(model.name, outcome).inc()
        t.last_run.labels(model.name).set(now)
        if outcome != "skipped":  # a run that never started has no duration (as APScheduler's dropped firings)
            t.duration.labels(model.name).observe(duration)
        if ev is not None:
            t.rows.labels(model.name).inc(ev.rows)
            t.last_success.labels(model.name).set(now)
            self.missed.succeeded(model.name, at=done)
            self._count_from[model.name] = _CountFrom(at=done, inclusive=False)
            self.latest.set(model.name, ev.findings, ev.window_end.timestamp())
            breaches = [f for f in ev.findings if f.status in ("warn", "alert")]
            notes = [n for n, on in (("reference cached", ev.reference_cached),
                                     (f"{ev.partitions_reused} partitions reused", ev.partitions_reused)) if on]
            log.info("model %s: window %s..%s, %d rows, %d findings, %d warn/alert, %.3fs%s", model.name,
                     ev.window_start.isoformat(), ev.window_end.isoformat(), ev.rows, len(ev.findings),
                     len(breaches), duration, f" ({', '.join(notes)})" if notes else "",
                     extra={"outcome": outcome, "rows": ev.rows, "findings": len(ev.findings),
                            "breaches": len(breaches), "duration_seconds": round(duration, 6),
                            "partitions_reused": ev.partitions_reused})
        try:
            self.state.record_run(RunRecord(
                model=model.name, started_at=at, window_start=ev.window_start if ev else at - model.window,
                window_end=ev.window_end if ev else at, outcome=outcome, duration_seconds=duration,
                rows=ev.rows if ev else 0, error=error), ev.findings if ev else None,
                config=self.evaluators[model.name].config_key(), run_id=run_id)
        except Exception as exc:  # the state store must never take the daemon down
            log.error("model %s: could not record the run in the state store: %s", model.name, exc)
            self.telemetry.state_errors.labels(model.name, "state_db").inc()
            if is_corruption(exc):
                with contextlib.suppress(StateStoreError):
                    self.state.recover(exc)

    def _submitted(self, event: JobEvent) -> None:
        """APScheduler handed a run to its executor: the firing happened, even when every executor thread is
        busy and the run waits its turn (many models with long runs), so the watchdog must not take it as stalled."""
        if event.job_id in self.evaluators:
            self._fired(event.job_id)

    def _dropped(self, event: JobEvent) -> None:
        """A run APScheduler did not start: the previous one still going, or the firing missed."""
        name = event.job_id
        if name not in self.evaluators:
            return
        self._fired(name)
        self.telemetry.runs.labels(name, "skipped").inc()
        # the only line for it: APScheduler's own warnings for these are filtered out (see monitor.logs)
        if event.code == EVENT_JOB_MAX_INSTANCES:
            log.warning("model %s: run skipped: the previous run is still going (outcome=skipped)", name,
                        extra={"model": name, "outcome": "skipped"})
        else:
            log.warning("model %s: run skipped: its firing was missed by more than the misfire grace time "
                        "(outcome=skipped)", name, extra={"model": name, "outcome": "skipped"})

    # -- the watchdog -----------------------------------------------------------
    def _next_gap(self, name: str) -> timedelta:
        """The wall-clock time from now to the model's next scheduled firing (its interval, for ``every``)."""
        schedule = self.config.model(name).schedule
        if schedule.every is not None:
            return schedule.every
        now = datetime.now(UTC)
        nxt = schedule.trigger().get_next_fire_time(None, now)
        return nxt - now if nxt is not None else self.intervals[name]

    def _fired(self, name: str, *, gap: timedelta | None = None) -> None:
        """A firing of the model happened now (a run submitted, started or dropped): its next is due within ``gap``
        (default: to its next scheduled firing) plus the stall grace."""
        gap = self._next_gap(name) if gap is None else gap
        now = self.monotonic()
        self._last_fired[name] = now
        self._due_by[name] = now + (gap + stall_grace(gap)).total_seconds()
        self._stalled.discard(name)

    def check_stalled(self) -> list[str]:
        """Fire now the job of every model whose next run is overdue by the monotonic clock; returns them.

        APScheduler waits for wall-clock due times: stepped back, the wall clock holds every run for the size
        of the step while each health metric stays green.  The first check to find a model stalled logs one
        WARNING and fires the job; should no run start even then, it is fired again a grace later, quietly."""
        now = self.monotonic()
        kicked = []
        for name, due_by in list(self._due_by.items()):
            if now <= due_by or not self.scheduler.running:
                continue
            if name not in self._stalled:
                self._stalled.add(name)
                log.warning("model %s: no run has started for %.0fs, past its next scheduled firing and a grace "
                            "(was the wall clock set back?): running it now", name, now - self._last_fired[name])
            self._due_by[name] = now + WATCHDOG_PERIOD + stall_grace(self._next_gap(name)).total_seconds()
            try:
                self.scheduler.modify_job(name, next_run_time=datetime.now(UTC))
            except Exception as exc:  # a job gone (shutting down): nothing to fire
                log.debug("model %s: cannot fire the job now: %s", name, exc)
                continue
            kicked.append(name)
        return kicked

    def _watch(self) -> None:
        while not self.stop_event.wait(WATCHDOG_PERIOD):
            try:
                self.check_stalled()
            except Exception as exc:  # the watchdog must never die
                log.error("schedule watchdog failed: %s", exc, exc_info=exc)

    def stuck_evaluations(self) -> list[str]:
        """The models with abandoned (timed-out) evaluations whose threads are still blocked."""
        return sorted({name for name, workers in self._abandoned.items()
                       for w in workers if w.thread.is_alive()})

    # -- lifecycle ------------------------------------------------------------
    def schedule(self) -> None:
        now = datetime.now(UTC)  # APScheduler keeps real time, whatever clock the evaluations are given
        self._watch_run_times(start=now)  # the start-up run below is at now, an interval schedule's runs from it
        self.scheduler.add_listener(self._dropped, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED)
        self.scheduler.add_listener(self._submitted, EVENT_JOB_SUBMITTED)
        for m in self.config.models:
            self._fired(m.name, gap=timedelta(0))  # the start-up run is due now
            interval = self.intervals[m.name]
            self.scheduler.add_job(self.run_model, m.schedule.trigger(), args=[m.name], id=m.name,
                                   name=f"evaluate {m.name}", max_instances=1, coalesce=True,
                                   misfire_grace_time=max(1, int(interval.total_seconds())), next_run_time=now)

    def start(self) -> None:
        """Serve the HTTP endpoints and start the schedule; an address that cannot be bound raises
        :class:`~.exporter.ListenError`."""
        host, port = parse_listen(self.listen)
        for warning in config_warnings(self.config):
            log.warning("%s", warning)
        self.server = MetricsServer(registry=self.metrics_registry, host=host, port=port, ready=self.readiness)
        self.server.start()
        log.info("serving /metrics, /healthz and /readyz on %s", self.server.url_host)
        self.schedule()
        self.scheduler.start()
        self._watchdog = threading.Thread(target=self._watch, name="atalaia-watchdog", daemon=True)
        self._watchdog.start()

    def install_signal_handlers(self) -> None:
        def handler(signum: int, _frame: Any) -> None:
            log.info("received %s: finishing the running evaluation, then stopping", signal.Signals(signum).name)
            self.stop_event.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def shutdown(self) -> None:
        self.stop_event.set()  # the watchdog too
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        if self.server is not None:
            self.server.stop()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.state.close()
        self._dir_lock.release()
        log.info("stopped")

    def serve_forever(self) -> int:
        """Run until SIGTERM/SIGINT; returns the process exit code (0)."""
        self.install_signal_handlers()
        try:
            self.start()
            while not self.stop_event.wait(1.0):
                pass
        finally:
            self.shutdown()
        return 0

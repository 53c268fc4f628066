"""Prometheus exposition: the latest findings (built at scrape time) and daemon health.

Metric families (prefix ``atalaia_``, base units, no timestamps):

==========================================  =========  ===============================================
``atalaia_finding_value``                   gauge      effect size of each finding
``atalaia_finding_threshold``               gauge      the threshold it was compared with
``atalaia_finding_p_value``                 gauge      p-value (tests only)
``atalaia_finding_status``                  stateset   ok / warn / alert / insufficient_data
``atalaia_finding_rows``                    gauge      rows on each side (``side`` = reference|current)
``atalaia_window_end_timestamp_seconds``    gauge      end of the window the findings describe
``atalaia_last_run_timestamp_seconds``      gauge      last run (any outcome)
``atalaia_last_success_timestamp_seconds``  gauge      last run that produced findings (kept across restarts)
``atalaia_schedule_interval_seconds``       gauge      longest gap between runs (cron: over the next 7 days)
``atalaia_missed_runs``                     gauge      scheduled runs since the last success (capped at 1000)
``atalaia_run_duration_seconds``            histogram  evaluation time
``atalaia_runs_total``                      counter    runs by ``outcome``
``atalaia_rows_processed_total``            counter    window rows read
``atalaia_source_errors_total``             counter    skipped files and failed reads by ``reason``
``atalaia_state_errors_total``              counter    failed writes to the state dir by ``store``
``atalaia_alerts_sent_total``               counter    alert deliveries by ``route`` and ``outcome``
``atalaia_label_cap_exceeded_total``        counter    findings dropped by the ``group`` label cap
==========================================  =========  ===============================================

Counters and histograms carry no ``_created`` companion series (``disable_created_metrics``): they are
not documented, no rule or dashboard reads them, and they doubled the exposition's families.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily, Metric, StateSetMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from detectors.base import STATUSES, Finding
from detectors.errors import SOURCE_ERROR_REASONS, AtalaiaError

__all__ = ["Telemetry", "FindingsCollector", "MetricsServer", "LatestFindings", "ListenError", "MissedRuns",
           "MISSED_RUNS_CAP", "STATE_STORES"]

log = logging.getLogger("atalaia.exporter")

_LABELS = ("model", "detector", "kind", "target", "statistic", "group")

#: the ``store`` label of ``atalaia_state_errors_total``: the SQLite state store, the partition profiles and the
#: reference profile cached in the state dir (each write that failed: a full or read-only disk, a damaged database)
STATE_STORES = ("state_db", "partitions", "reference_cache")

#: the most scheduled runs ``atalaia_missed_runs`` counts: past it the gauge reads the cap until a success
MISSED_RUNS_CAP = 1000


def _url_host(host: str, port: int) -> str:
    """``HOST:PORT`` as in a URL: an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ListenError(AtalaiaError, OSError):
    """The HTTP server cannot listen on the address asked for (in use, not local, unknown host)."""


class LatestFindings:
    """The latest findings per model, shared between the scheduler and the collector.

    The ``group`` label cap is applied when findings are stored: past ``max_groups`` distinct
    groups a model's extra per-group findings are left out of the exposition, logged as an
    error and counted once per evaluation through ``on_cap(model, dropped)``.
    """

    def __init__(self, *, max_groups: int = 100, on_cap: Callable[[str, int], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._by_model: dict[str, tuple[list[Finding], float]] = {}
        self.max_groups = max_groups
        self.on_cap = on_cap

    def set(self, model: str, findings: Sequence[Finding], window_end: float) -> None:
        kept = self._capped(model, list(findings))
        with self._lock:
            self._by_model[model] = (kept, window_end)

    def snapshot(self) -> dict[str, tuple[list[Finding], float]]:
        with self._lock:
            return dict(self._by_model)

    def _capped(self, model: str, findings: list[Finding]) -> list[Finding]:
        groups = sorted({f.group for f in findings if f.group is not None})
        if len(groups) <= self.max_groups:
            return findings
        keep = set(groups[: self.max_groups])
        dropped = sum(1 for f in findings if f.group is not None and f.group not in keep)
        log.error("model %s: %d distinct group label values exceed server.max_groups=%d; %d findings left out "
                  "of /metrics (raise the cap or use fewer or coarser sensitive attributes)",
                  model, len(groups), self.max_groups, dropped)
        if self.on_cap:
            self.on_cap(model, dropped)
        return [f for f in findings if f.group is None or f.group in keep]


class Telemetry:
    """The daemon's health metrics, registered in an injected registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        disable_created_metrics()  # process-wide in prometheus_client: no undocumented ``*_created`` families
        self.last_run = Gauge("atalaia_last_run_timestamp_seconds", "Unix time the last evaluation of a model ended.",
                              ["model"], registry=registry)
        self.last_success = Gauge("atalaia_last_success_timestamp_seconds",
                                  "Unix time of the last evaluation that produced findings.", ["model"],
                                  registry=registry)
        self.duration = Histogram("atalaia_run_duration_seconds", "Time one evaluation of a model took.", ["model"],
                                  buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
                                  registry=registry)
        self.runs = Counter("atalaia_runs_total", "Evaluations by outcome.", ["model", "outcome"], registry=registry)
        self.rows = Counter("atalaia_rows_processed_total", "Prediction rows read in evaluation windows.", ["model"],
                            registry=registry)
        self.source_errors = Counter("atalaia_source_errors_total",
                                     "Files skipped or reads failed, by reason.", ["model", "reason"],
                                     registry=registry)
        self.state_errors = Counter("atalaia_state_errors_total",
                                    "Writes to the state dir that failed (full or read-only disk, damaged database), "
                                    "by store: state_db (run history, findings) or partitions (kept partition "
                                    "profiles).", ["model", "store"], registry=registry)
        self.alerts_sent = Counter("atalaia_alerts_sent_total", "Alert notifications by route and outcome.",
                                   ["route", "outcome"], registry=registry)
        self.interval = Gauge("atalaia_schedule_interval_seconds",
                              "Longest gap between scheduled evaluations of a model: the interval, or for a cron "
                              "schedule the longest gap between consecutive firings over the next 7 days.",
                              ["model"], registry=registry)
        self.label_cap = Counter("atalaia_label_cap_exceeded_total",
                                 "Findings left out of the exposition by the group label cap.", ["model"],
                                 registry=registry)

    def prime(self, models: Iterable[str], outcomes: Iterable[str]) -> None:
        """Create every model's series at zero so rates and absences are well defined from the start
        (a counter first seen at 1 has no increase for ``increase()`` to find)."""
        for m in models:
            for o in outcomes:
                self.runs.labels(m, o)
            for reason in SOURCE_ERROR_REASONS:
                self.source_errors.labels(m, reason)
            for store in STATE_STORES:
                self.state_errors.labels(m, store)
            self.label_cap.labels(m)
            self.rows.labels(m)
            self.duration.labels(m)


class FindingsCollector(Collector):
    """Builds the finding metrics from :class:`LatestFindings` at each scrape."""

    def __init__(self, latest: LatestFindings) -> None:
        self.latest = latest

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        value = GaugeMetricFamily("atalaia_finding_value", "Effect size of the latest finding.", labels=_LABELS)
        threshold = GaugeMetricFamily("atalaia_finding_threshold", "Threshold the finding was compared with.",
                                      labels=_LABELS)
        p_value = GaugeMetricFamily("atalaia_finding_p_value", "p-value of the latest finding (tests only).",
                                    labels=_LABELS)
        status = StateSetMetricFamily("atalaia_finding_status", "Status of the latest finding.", labels=_LABELS)
        rows = GaugeMetricFamily("atalaia_finding_rows", "Rows behind the finding.", labels=(*_LABELS, "side"))
        window = GaugeMetricFamily("atalaia_window_end_timestamp_seconds",
                                   "End of the window the latest findings describe.", labels=("model",))
        for model, (findings, window_end) in sorted(self.latest.snapshot().items()):
            window.add_metric([model], window_end)
            for f in findings:
                labels = [f.model, f.detector, f.kind, f.target, f.statistic, f.group or ""]
                if f.value is not None:
                    value.add_metric(labels, f.value)
                if f.threshold is not None:
                    threshold.add_metric(labels, f.threshold)
                if f.p_value is not None:
                    p_value.add_metric(labels, f.p_value)
                status.add_metric(labels, {s: s == f.status for s in STATUSES})
                rows.add_metric([*labels, "reference"], f.n_reference)
                rows.add_metric([*labels, "current"], f.n_current)
        yield from (value, threshold, p_value, status, rows, window)


@dataclass
class _Count:
    due_after: Callable[[datetime], datetime | None]
    cursor: datetime                  # the last run time counted, or the time counting starts after
    anchor: datetime                  # the wall-clock time of ``anchor_mono`` (when counting (re)started)
    anchor_mono: float
    count: int = 0
    due: datetime | None = None       # the first run time after ``cursor``, once looked up
    looked_up: bool = False


class MissedRuns(Collector):
    """``atalaia_missed_runs{model}``: how many of a model's scheduled runs came due since its last success.

    A model is watched with ``due_after(t)``, the first scheduled run time after ``t`` (``None``: no
    more), and the time ``since`` which counting starts after (its last success); the gauge is the number
    of run times in ``(since, now]``, ``now`` from ``clock`` at each scrape. A run counts as soon as it
    is due: while it is still going, when it fails, times out or is skipped, and when the daemon was
    down at its time; :meth:`succeeded` starts the count again at 0.

    ``now`` never lags the ``monotonic`` time elapsed since counting (re)started: after the wall clock
    is stepped back (below the last success, say) the runs due meanwhile still count — the scheduler
    waits for the old wall-clock due time then, and without this the gauge read 0 throughout.

    The count is cheap at every scrape: it goes on from where the previous scrape left it, stepping
    over the run times that came due in between, and it stops at ``cap`` (the gauge then reads ``cap``
    until a success), so no scrape steps over more than ``cap`` run times, however long ago ``since`` is.

    >>> from datetime import UTC, datetime, timedelta
    >>> t0 = datetime(2026, 12, 1, 9, tzinfo=UTC)
    >>> now = t0 + timedelta(minutes=12)
    >>> every_5m = lambda t: t0 + timedelta(minutes=5 * ((t - t0) // timedelta(minutes=5) + 1))
    >>> missed = MissedRuns(clock=lambda: now)
    >>> missed.watch("m", due_after=every_5m, since=t0)      # due at 9:05 and 9:10 since 9:00
    >>> missed.count("m")
    2
    >>> missed.succeeded("m", at=t0 + timedelta(minutes=11)); missed.count("m")
    0
    """

    def __init__(self, *, clock: Callable[[], datetime], cap: int = MISSED_RUNS_CAP,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        if cap < 1:
            raise ValueError(f"cap must be a positive whole number, got {cap!r}")
        self.clock = clock
        self.monotonic = monotonic
        self.cap = cap
        self._lock = threading.Lock()
        self._counts: dict[str, _Count] = {}

    def watch(self, model: str, *, due_after: Callable[[datetime], datetime | None], since: datetime) -> None:
        """Count ``model``'s run times (from ``due_after``) after ``since``, replacing any earlier count."""
        anchor, mono = self.clock(), self.monotonic()
        with self._lock:
            self._counts[model] = _Count(due_after=due_after, cursor=since, anchor=anchor, anchor_mono=mono)

    def succeeded(self, model: str, *, at: datetime) -> None:
        """A run of ``model`` succeeded at ``at`` (the clock's time now): count the runs due after it."""
        mono = self.monotonic()
        with self._lock:
            c = self._counts.get(model)
            if c is not None:
                self._counts[model] = _Count(due_after=c.due_after, cursor=at, anchor=at, anchor_mono=mono)

    def count(self, model: str) -> int:
        """Run times of ``model`` in ``(since, now]``, at most ``cap``; ``now`` is the clock's time, or
        when the clock went back, the time the monotonic clock says has passed since counting started."""
        wall, mono = self.clock(), self.monotonic()
        with self._lock:
            c = self._counts[model]
            now = max(wall, c.anchor + timedelta(seconds=max(0.0, mono - c.anchor_mono)))
            while c.count < self.cap:
                if not c.looked_up:
                    c.due, c.looked_up = c.due_after(c.cursor), True
                if c.due is None or c.due > now:
                    break
                c.cursor, c.count, c.looked_up = c.due, c.count + 1, False
            return c.count

    def models(self) -> list[str]:
        with self._lock:
            return sorted(self._counts)

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        gauge = GaugeMetricFamily(
            "atalaia_missed_runs",
            f"Scheduled runs of a model due since its last success (failed, timed out, skipped, still going, or due "
            f"while the daemon was down); at most {self.cap}.", labels=("model",))
        for model in self.models():
            gauge.add_metric([model], self.count(model))
        yield gauge


class _ThreadingHTTPServer6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


class MetricsServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` on a threaded HTTP server.

    ``host`` is a name or an IPv4 or IPv6 address (without brackets); binding failures raise
    :class:`ListenError` naming the address.
    """

    def __init__(self, *, registry: CollectorRegistry, host: str, port: int,
                 ready: Callable[[], tuple[bool, str]]) -> None:
        self.registry = registry
        self.ready = ready
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
                    body = encoder(server.registry)
                    self._send(200, body, content_type)
                elif path == "/healthz":
                    self._send(200, b"ok\n")
                elif path == "/readyz":
                    ok, why = server.ready()
                    self._send(200 if ok else 503, (why + "\n").encode())
                elif path == "/":
                    self._send(200, b"atalaia: /metrics /healthz /readyz\n")
                else:
                    self._send(404, b"not found\n")

            def _send(self, code: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt: str, *args: Any) -> None:
                log.debug("http %s", fmt % args)

        try:
            self.httpd = (_ThreadingHTTPServer6 if ":" in host else ThreadingHTTPServer)((host, port), Handler)
        except OSError as exc:
            raise ListenError(f"cannot listen on {_url_host(host, port)}: {exc.strerror or exc}") from None
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="atalaia-http", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.httpd.server_address[:2]
        return str(host), int(port)

    @property
    def url_host(self) -> str:
        """``HOST:PORT`` as in a URL (an IPv6 host in brackets)."""
        return _url_host(*self.address)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

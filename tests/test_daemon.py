"""The daemon end to end: real ``atalaia run`` subprocesses, scraped over HTTP on 127.0.0.1.

Each test starts the daemon as ``python -m monitor.cli run --config … --listen 127.0.0.1:PORT`` on a
Parquet sink written around the *current* time (the daemon evaluates ``[now - 1h, now)``), polls its
endpoints instead of sleeping, and always kills what it started.

Two tests read the sink from an object store (a moto S3 server on 127.0.0.1) through
:class:`HoldingProxy`, a TCP proxy that can stop answering: that is how a *hung source* is made
(every request sits unanswered, as with a stuck object store or NFS mount) and how an evaluation
is held *in progress* for as long as a test needs, deterministically, before it is let go.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from conftest import free_port, hour_dir, model_config, settled, write_hourly_sink
from monitor.state import RunRecord, StateStore

pytestmark = pytest.mark.e2e

T = TypeVar("T")

#: the daemon imports SciPy at start-up (a few seconds on a busy machine)
START_TIMEOUT = 45.0


# --------------------------------------------------------------------------- sinks and configs

def floor_hour(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def write_live_sink(root: Path, *, rows_per_hour: int = 1000, seed: int = 0, hours_before: int = 48,
                    reference_hours: int = 24, hour: datetime | None = None) -> dict[str, str]:
    """Hourly partitions around now, ``[h - hours_before, h + 2h)`` with ``h`` = now floored to the hour
    (or ``hour``), x0 shifted by +1 sd from ``h - 6h``; returns the reference (the first
    ``reference_hours``) as ``{start, end}``."""
    h = hour or floor_hour(datetime.now(UTC))
    start = h - timedelta(hours=hours_before)
    assert start + timedelta(hours=reference_hours) <= h - timedelta(hours=6)
    write_hourly_sink(root, start=start, hours=hours_before + 2, rows_per_hour=rows_per_hour, seed=seed,
                      shift=lambda t: 1.0 if t >= h - timedelta(hours=6) else 0.0)
    return {"start": start.isoformat(), "end": (start + timedelta(hours=reference_hours)).isoformat()}


def write_config(tmp_path: Path, models: list[dict[str, Any]], **top: Any) -> Path:
    cfg = {"state_dir": str(tmp_path / "state"), "models": models} | top
    path = tmp_path / "atalaia.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def state_runs(state_dir: Path, model: str) -> list[RunRecord]:
    """The model's recorded runs, oldest first."""
    store = StateStore.in_dir(state_dir)
    try:
        return list(reversed(store.runs(model, limit=10_000)))
    finally:
        store.close()


def state_findings(state_dir: Path) -> dict[str, list[Any]]:
    store = StateStore.in_dir(state_dir)
    try:
        return store.latest_findings()
    finally:
        store.close()


# --------------------------------------------------------------------------- metrics

class Metrics:
    """A parsed text exposition."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples = [s for fam in text_string_to_metric_families(text) for s in fam.samples]

    def matching(self, name: str, **labels: str) -> list[Any]:
        return [s for s in self.samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]

    def get(self, name: str, **labels: str) -> float | None:
        """The value of the one sample matching, ``None`` when there is none."""
        found = self.matching(name, **labels)
        assert len(found) <= 1, f"{len(found)} samples match {name}{labels}"
        return found[0].value if found else None

    def sum(self, name: str, **labels: str) -> float:
        return sum(s.value for s in self.matching(name, **labels))

    def runs(self, model: str, outcome: str) -> float:
        return self.get("atalaia_runs_total", model=model, outcome=outcome) or 0.0

    def status(self, model: str, detector: str, target: str, **labels: str) -> str | None:
        """The one status whose stateset sample is 1 for this finding."""
        on = [s.labels["atalaia_finding_status"] for s in self.matching(
            "atalaia_finding_status", model=model, detector=detector, target=target, **labels) if s.value == 1]
        assert len(on) <= 1, on
        return on[0] if on else None


# --------------------------------------------------------------------------- the daemon process

class DaemonProcess:
    """``atalaia run`` in a subprocess, its log in a file."""

    def __init__(self, config: Path, log: Path, env: dict[str, str] | None = None, host: str = "127.0.0.1") -> None:
        self.port = free_port() if host == "127.0.0.1" else free_port_v6()
        where = f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"
        self.url = f"http://{where}"
        self.log_path = log
        self._log = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "monitor.cli", "run", "--config", str(config), "--listen", where],
            stdout=self._log, stderr=subprocess.STDOUT, env=env)
        self.client = httpx.Client(base_url=self.url, timeout=10.0)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str) -> httpx.Response:
        return self.client.get(path)

    def metrics(self) -> Metrics:
        r = self.get("/metrics")
        assert r.status_code == 200, r.text
        return Metrics(r.text)

    def wait_up(self) -> httpx.Response:
        """The first answer of ``/healthz`` (polled from the moment the process starts)."""
        def answer() -> httpx.Response | None:
            try:
                return self.get("/healthz")
            except httpx.TransportError:
                return None
        return wait_for(answer, timeout=START_TIMEOUT, what="/healthz to answer", daemon=self, interval=0.02)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the daemon did not exit within {timeout}s of SIGTERM\n{self.tail()}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.client.close()
        self._log.close()

    def tail(self, lines: int = 40) -> str:
        return "--- daemon log (tail) ---\n" + "\n".join(self.log().splitlines()[-lines:])


def free_port_v6() -> int:
    with socket.socket(socket.AF_INET6) as s:
        s.bind(("::1", 0))
        return int(s.getsockname()[1])


def wait_for(cond: Callable[[], T | None], *, timeout: float, what: str, daemon: DaemonProcess | None = None,
             interval: float = 0.1) -> T:
    """Poll ``cond`` until it returns something truthy; fail (with the daemon's log) on timeout or death."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if daemon is not None and daemon.proc.poll() is not None:
            pytest.fail(f"the daemon exited ({daemon.proc.returncode}) while waiting for {what}\n{daemon.tail()}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}"
                        + (f"\n{daemon.tail()}" if daemon is not None else ""))
        time.sleep(interval)


def wait_metrics(d: DaemonProcess, cond: Callable[[Metrics], bool], *, timeout: float, what: str) -> Metrics:
    def check() -> Metrics | None:
        m = d.metrics()
        return m if cond(m) else None
    return wait_for(check, timeout=timeout, what=what, daemon=d)


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
    """Start daemons; every one is killed (if still alive) at the end of the test."""
    started: list[DaemonProcess] = []

    def start(config: Path, *, env: dict[str, str] | None = None, host: str = "127.0.0.1") -> DaemonProcess:
        d = DaemonProcess(config, tmp_path / f"daemon-{len(started)}.log", env, host)
        started.append(d)
        return d

    yield start
    for d in started:
        d.close()


# --------------------------------------------------------------------------- an object store that can hang

def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


class HoldingProxy:
    """A TCP proxy on 127.0.0.1 in front of the object store.

    While *holding*, every new connection is accepted and then left silent: the client's request is
    never answered (a hung source).  :meth:`release` forwards the held connections and all later
    ones to the store, so a stuck request completes late, as when the store recovers.
    """

    def __init__(self, upstream_port: int) -> None:
        self._upstream = ("127.0.0.1", upstream_port)
        self._open = threading.Event()
        self._closed = False
        self._lock = threading.Lock()
        self._held = 0
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = int(self._listener.getsockname()[1])
        threading.Thread(target=self._accept, name="holding-proxy", daemon=True).start()

    @property
    def held(self) -> int:
        with self._lock:
            return self._held

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def close(self) -> None:
        self._closed = True
        self._open.set()
        self._listener.close()
        with self._lock:
            for s in self._sockets:
                try:
                    s.close()
                except OSError:
                    pass

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        client.settimeout(None)
        with self._lock:
            self._sockets.append(client)
        if not self._open.is_set():
            with self._lock:
                self._held += 1
            self._open.wait()
            with self._lock:
                self._held -= 1
        if self._closed:
            client.close()
            return
        try:
            upstream = socket.create_connection(self._upstream)
        except OSError:
            client.close()
            return
        with self._lock:
            self._sockets.append(upstream)
        back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
        back.start()
        _pump(client, upstream)
        back.join()
        client.close()
        upstream.close()


@dataclass(frozen=True)
class ObjectStore:
    port: int
    uri: str
    reference: dict[str, str]


S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
          "AWS_EC2_METADATA_DISABLED": "true"}


@pytest.fixture(scope="module")
def object_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObjectStore]:
    """A moto S3 server on 127.0.0.1 holding a small live sink under ``s3://sink/preds``: 12 hours of
    500 rows, the first 3 the reference (few files, so a run after the store recovers is quick)."""
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        local = tmp_path_factory.mktemp("s3-sink") / "preds"
        reference = write_live_sink(local, rows_per_hour=500, hours_before=10, reference_hours=3)
        s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                          aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"])
        s3.create_bucket(Bucket="sink")
        for f in sorted(local.rglob("*.parquet")):
            s3.put_object(Bucket="sink", Key=f"preds/{f.relative_to(local).as_posix()}", Body=f.read_bytes())
        yield ObjectStore(port=port, uri="s3://sink/preds", reference=reference)
    finally:
        server.stop()


@pytest.fixture
def proxy(object_store: ObjectStore) -> Iterator[HoldingProxy]:
    p = HoldingProxy(object_store.port)
    try:
        yield p
    finally:
        p.close()


def s3_config(tmp_path: Path, store: ObjectStore, proxy: HoldingProxy, **model: Any) -> Path:
    return write_config(
        tmp_path, [model_config(pred_path=store.uri, reference=store.reference, **model)],
        storage={"endpoint_url": f"http://127.0.0.1:{proxy.port}", "region": "us-east-1",
                 "connect_timeout": "5s", "request_timeout": "600s"})


def s3_env() -> dict[str, str]:
    return os.environ | S3_ENV


# --------------------------------------------------------------------------- (a) health, readiness, findings

def test_serves_health_readiness_and_the_findings_of_the_current_window(tmp_path: Path, daemons) -> None:
    reference = write_live_sink(tmp_path / "preds")
    config = write_config(tmp_path, [model_config(pred_path=str(tmp_path / "preds"), reference=reference,
                                                  every="5s")])
    started = datetime.now(UTC)
    d = daemons(config)

    first = d.wait_up()
    assert first.status_code == 200 and first.text == "ok\n"

    # /readyz: 503 (naming the model) until the first run is done, then 200 for good
    answers: list[httpx.Response] = []

    def ready() -> bool:
        answers.append(d.get("/readyz"))
        return answers[-1].status_code == 200

    wait_for(ready, timeout=30, what="/readyz 200", daemon=d, interval=0.02)
    for r in answers[:-1]:
        assert r.status_code == 503, r
        assert "m1" in r.text
    m = d.metrics()
    assert m.sum("atalaia_runs_total", model="m1") >= 1, "ready before any run was accounted"
    assert all(d.get("/readyz").status_code == 200 for _ in range(3))

    assert m.runs("m1", "success") >= 1, d.tail()
    for detector in ("psi", "ks"):
        assert m.get("atalaia_finding_status", model="m1", detector=detector, target="x0",
                     atalaia_finding_status="alert") == 1.0, m.text
        assert m.status("m1", detector, "x0") == "alert"
        for target in ("x1", "x2"):
            assert m.get("atalaia_finding_status", model="m1", detector=detector, target=target,
                         atalaia_finding_status="ok") == 1.0, m.text
            assert m.status("m1", detector, target) == "ok"
        assert m.get("atalaia_finding_value", model="m1", detector=detector, target="x0") > 0.2

    # the window is [now - 1h, now): its end is the run's own time
    window_end = m.get("atalaia_window_end_timestamp_seconds", model="m1")
    assert started.timestamp() - 1 <= window_end <= time.time() + 1
    assert started.timestamp() - 1 <= m.get("atalaia_last_success_timestamp_seconds", model="m1") <= time.time() + 1
    assert m.get("atalaia_rows_processed_total", model="m1") > 500
    assert d.get("/healthz").status_code == 200
    assert d.get("/nope").status_code == 404
    assert d.stop() == 0


# --------------------------------------------------------------------------- (b) schedule, (f) bad input

def test_runs_every_interval_without_overlap_and_survives_bad_files(tmp_path: Path, daemons) -> None:
    # hour h is inside [now - 1h, now) for the whole test; next to its good part-0: a corrupt file
    # and a file without the x1 column
    h = floor_hour(datetime.now(UTC))
    clean_ref = write_live_sink(tmp_path / "clean", rows_per_hour=500, hour=h)
    bad_ref = write_live_sink(tmp_path / "bad", rows_per_hour=500, seed=1, hour=h)
    bad_hour = hour_dir(tmp_path / "bad", h)
    corrupt = bad_hour / "part-1.parquet"
    corrupt.write_bytes(b"PAR1 this is not a parquet file at all PAR1")
    settled(corrupt)
    no_x1 = bad_hour / "part-2.parquet"
    n = 50
    pq.write_table(pa.table({
        "id": [f"q{i}" for i in range(n)],
        "ts": pa.array([h + timedelta(seconds=i) for i in range(n)], type=pa.timestamp("us", tz="UTC")),
        "x0": [0.0] * n, "x2": [1.0] * n, "c": ["a"] * n, "score": [0.5] * n, "pred": [1] * n,
    }), no_x1)
    config = write_config(tmp_path, [
        model_config(name="clean", pred_path=str(tmp_path / "clean"), reference=clean_ref, every="1s"),
        model_config(name="broken", pred_path=str(tmp_path / "bad"), reference=bad_ref, every="1s"),
    ])
    d = daemons(config)
    d.wait_up()

    # runs per interval: at least 3 more successful runs within about 5 s of the first
    m = wait_metrics(d, lambda m: m.runs("clean", "success") >= 1, timeout=30, what="a first run of 'clean'")
    base, t0 = m.runs("clean", "success"), time.monotonic()
    wait_metrics(d, lambda m: m.runs("clean", "success") >= base + 3, timeout=8,
                 what="3 more runs of 'clean' at every: 1s")
    assert time.monotonic() - t0 >= 1.5, "runs came faster than the 1 s interval"

    # bad input: each bad file is skipped and counted by reason, the run is 'partial', the daemon goes on
    m = wait_metrics(d, lambda m: m.runs("broken", "partial") >= 3, timeout=10, what="3 partial runs of 'broken'")
    assert m.get("atalaia_source_errors_total", model="broken", reason="corrupt") >= 1, m.text
    assert m.get("atalaia_source_errors_total", model="broken", reason="missing_column") >= 1, m.text
    assert m.runs("broken", "success") == 0 and m.runs("broken", "error") == 0
    assert m.status("broken", "psi", "x0") == "alert"  # the good files of the window were still read
    assert m.sum("atalaia_source_errors_total", model="clean") == 0
    assert d.get("/healthz").status_code == 200 and d.proc.poll() is None
    log = d.log()
    assert str(corrupt) in log
    assert str(no_x1) in log and "column=x1" in log

    assert d.stop() == 0

    # no overlap: each model's recorded runs, in start order, end before the next one starts
    state = tmp_path / "state"
    for model, outcome in (("clean", "success"), ("broken", "partial")):
        runs = state_runs(state, model)
        assert len(runs) >= 4, runs
        assert {r.outcome for r in runs} == {outcome}, [(r.outcome, r.error) for r in runs]
        for a, b in zip(runs, runs[1:], strict=False):
            assert b.started_at >= a.started_at + timedelta(seconds=a.duration_seconds) - timedelta(milliseconds=5), \
                f"{model}: run at {b.started_at} overlaps the one at {a.started_at} ({a.duration_seconds:.3f}s)"
            assert b.started_at - a.started_at >= timedelta(seconds=0.5), f"{model}: runs not spaced by the interval"
    broken = state_runs(state, "broken")[-1]
    assert broken.error is not None and str(corrupt) in broken.error and "column=x1" in broken.error


# --------------------------------------------------------------------------- (d) a hung source

def test_a_hung_source_times_out_the_daemon_stays_up_and_the_model_recovers(
        tmp_path: Path, daemons, object_store: ObjectStore, proxy: HoldingProxy) -> None:
    """The object store stops answering (a FIFO in a local sink would not do: the sink lists only regular
    files, so a FIFO is never opened); the run is abandoned after ``timeout: 2s``."""
    proxy.hold()
    d = daemons(s3_config(tmp_path, object_store, proxy, every="1s", timeout="2s"), env=s3_env())
    assert d.wait_up().status_code == 200
    wait_for(lambda: proxy.held >= 1, timeout=30, what="the first evaluation to reach the object store", daemon=d)

    # the evaluation is abandoned after its timeout: outcome "timeout", the daemon answers on
    m = wait_metrics(d, lambda m: m.runs("m1", "timeout") >= 1, timeout=15, what='outcome="timeout"')
    assert m.get("atalaia_source_errors_total", model="m1", reason="timeout") >= 1
    assert m.runs("m1", "success") == 0
    assert m.get("atalaia_last_run_timestamp_seconds", model="m1") > 0
    assert m.get("atalaia_last_success_timestamp_seconds", model="m1") in (None, 0.0)
    assert d.get("/healthz").status_code == 200 and d.proc.poll() is None
    assert d.get("/readyz").status_code == 200  # the first due run was done, if unsuccessfully
    assert "did not finish within" in d.log()

    # while the abandoned reads are still stuck, later runs are skipped rather than piled up (firings
    # APScheduler drops while a run is in progress count as skipped too: wait for the daemon's own skip)
    wait_for(lambda: "earlier evaluations are still stuck past their timeout" in d.log(), timeout=20,
             what="a run skipped for the stuck evaluations", daemon=d)
    assert d.metrics().runs("m1", "skipped") >= 1
    assert proxy.held >= 1
    assert d.get("/healthz").status_code == 200

    # the store answers again: the stuck read completes and a later run succeeds
    proxy.release()
    m = wait_metrics(d, lambda m: m.runs("m1", "success") >= 1, timeout=30, what="a successful run after recovery")
    assert m.status("m1", "psi", "x0") == "alert"
    assert m.get("atalaia_last_success_timestamp_seconds", model="m1") > 0
    assert d.stop() == 0

    outcomes = [r.outcome for r in state_runs(tmp_path / "state", "m1")]
    assert outcomes[0] == "timeout", outcomes
    assert "skipped" in outcomes and outcomes[-1] == "success", outcomes
    assert outcomes.index("success") > outcomes.index("skipped")


# --------------------------------------------------------------------------- (c) SIGTERM, (e) restart

def test_a_restarted_daemon_reads_only_the_partitions_it_has_not_counted(tmp_path: Path, daemons) -> None:
    reference = write_live_sink(tmp_path / "preds")
    config = write_config(tmp_path, [model_config(pred_path=str(tmp_path / "preds"), reference=reference,
                                                  every="1h", window="6h")])
    d = daemons(config)
    d.wait_up()
    wait_metrics(d, lambda m: m.runs("m1", "success") >= 1, timeout=60, what="the first run")
    assert d.stop() == 0
    assert "partitions reused" not in d.log()
    # the five whole hours inside [now - 6h, now) were counted and stored
    stored = sorted((tmp_path / "state" / "partitions" / "model=m1").glob("*.profile"))
    assert len(stored) == 5, stored

    d2 = daemons(config)
    d2.wait_up()
    wait_metrics(d2, lambda m: m.runs("m1", "success") >= 1, timeout=60, what="the restarted daemon's run")
    assert d2.stop() == 0
    reused = re.search(r"model m1: window .*\((?:reference cached, )?(\d+) partitions reused\)", d2.log())
    assert reused, d2.tail()
    assert int(reused.group(1)) >= 4  # 5, or 4 when the hour turned between the two runs

def test_sigterm_finishes_the_running_evaluation_and_a_restart_restores_the_findings(
        tmp_path: Path, daemons, object_store: ObjectStore, proxy: HoldingProxy) -> None:
    config = s3_config(tmp_path, object_store, proxy, every="1h", timeout="120s")
    state = tmp_path / "state"

    # the first run is held in progress on the object store
    proxy.hold()
    d = daemons(config, env=s3_env())
    assert d.wait_up().status_code == 200
    wait_for(lambda: proxy.held >= 1, timeout=30, what="the first evaluation to reach the object store", daemon=d)
    ready = d.get("/readyz")
    assert ready.status_code == 503 and "m1" in ready.text
    m = d.metrics()
    assert m.sum("atalaia_runs_total") == 0
    assert not m.matching("atalaia_finding_status")

    # SIGTERM during the run: the daemon waits for the evaluation instead of exiting
    d.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: "received SIGTERM" in d.log(), timeout=10, what="the SIGTERM log line", daemon=d)
    with pytest.raises(subprocess.TimeoutExpired):
        d.proc.wait(timeout=0.5)
    proxy.release()
    assert d.proc.wait(timeout=30) == 0, d.tail()

    log = d.log()
    assert log.index("received SIGTERM") < log.index("model m1: window") < log.index("stopped"), log
    runs = state_runs(state, "m1")
    assert [r.outcome for r in runs] == ["success"], runs
    assert runs[0].rows > 0
    saved = state_findings(state)["m1"]
    assert {(f.detector, f.target): f.status for f in saved}[("psi", "x0")] == "alert"

    # restart on the same state dir, its first run held again: the findings are served from the state
    # store before any new run has completed
    proxy.hold()
    d2 = daemons(config, env=s3_env())
    assert d2.wait_up().status_code == 200
    wait_for(lambda: proxy.held >= 1, timeout=30, what="the restarted daemon's first evaluation", daemon=d2)
    m = d2.metrics()
    assert m.sum("atalaia_runs_total") == 0, "a run completed: this proves nothing about restoring"
    assert d2.get("/readyz").status_code == 503
    for f in saved:
        assert m.status("m1", f.detector, f.target, statistic=f.statistic, group=f.group or "") == f.status, f
    assert m.get("atalaia_finding_value", model="m1", detector="psi", target="x0") == pytest.approx(
        next(f.value for f in saved if (f.detector, f.target) == ("psi", "x0")))
    assert m.get("atalaia_window_end_timestamp_seconds", model="m1") == pytest.approx(
        runs[0].window_end.timestamp(), abs=1e-3)

    proxy.release()
    m = wait_metrics(d2, lambda m: m.runs("m1", "success") >= 1, timeout=30, what="the restarted daemon's run")
    assert m.get("atalaia_window_end_timestamp_seconds", model="m1") > runs[0].window_end.timestamp()
    assert d2.stop() == 0
    assert [r.outcome for r in state_runs(state, "m1")] == ["success", "success"]


def test_a_start_drops_the_cached_profiles_of_models_no_longer_configured(tmp_path: Path) -> None:
    from monitor.config import parse_config
    from monitor.scheduler import Daemon

    reference = write_live_sink(tmp_path / "preds", hours_before=30)
    state = tmp_path / "state"
    hexkey = "0123456789abcdef01234567"
    planted = {"partitions/model=m1/a.profile", "partitions/model=old/b.profile", f"references/m1-{hexkey}.pkl",
               f"references/old-{hexkey}.pkl", f"references/m1-x-{hexkey}.pkl", "references/notes.txt"}
    for rel in planted:
        (state / rel).parent.mkdir(parents=True, exist_ok=True)
        (state / rel).write_bytes(b"cached")
    config = parse_config({"state_dir": str(state), "models": [
        model_config(pred_path=str(tmp_path / "preds"), reference=reference)]})
    Daemon(config=config).shutdown()
    left = {str(p.relative_to(state)) for p in state.rglob("*") if p.is_file() and p.suffix != ".db"
            and "-wal" not in p.name and "-shm" not in p.name and p.name != "atalaia.lock"}
    assert left == {"partitions/model=m1/a.profile", f"references/m1-{hexkey}.pkl", "references/notes.txt"}
    assert not (state / "partitions" / "model=old").exists()


# --------------------------------------------------------------------------- the state store

def test_a_state_db_of_random_bytes_is_moved_aside_and_the_daemon_runs(tmp_path: Path, daemons) -> None:
    reference = write_live_sink(tmp_path / "preds", rows_per_hour=300)
    config = write_config(tmp_path, [model_config(pred_path=str(tmp_path / "preds"), reference=reference,
                                                  every="1h")])
    state = tmp_path / "state"
    state.mkdir()
    noise = bytes((i * 7919) % 251 for i in range(8192))
    (state / "state.db").write_bytes(noise)
    d = daemons(config)
    d.wait_up()
    wait_metrics(d, lambda m: m.runs("m1", "success") >= 1, timeout=60, what="a successful run")
    assert d.stop() == 0
    (aside,) = state.glob("state.db.corrupt-*")
    assert re.fullmatch(r"state\.db\.corrupt-\d{8}T\d{6}Z", aside.name), aside.name
    assert aside.read_bytes() == noise
    (line,) = [line for line in d.log().splitlines() if " ERROR " in line and "damaged" in line]
    assert str(state / "state.db") in line and aside.name in line
    assert [r.outcome for r in state_runs(state, "m1")] == ["success"]


def test_a_torn_page_in_the_state_db_does_not_stop_a_start(tmp_path: Path) -> None:
    """A store SQLite opens but finds malformed when read (the reviewer's crash in _restore)."""
    from monitor.config import parse_config
    from monitor.scheduler import Daemon

    reference = write_live_sink(tmp_path / "preds", hours_before=30)
    state = tmp_path / "state"
    store = StateStore.in_dir(state)
    t = datetime.now(UTC)
    for i in range(300):
        store.record_run(RunRecord(model="m1", started_at=t, window_start=t - timedelta(hours=1), window_end=t,
                                   outcome="success", duration_seconds=0.1, rows=10, error="x" * 400), [])
    store.close()
    db = state / "state.db"
    size = sqlite3.connect(db).execute("PRAGMA page_size").fetchone()[0]
    with db.open("r+b") as f:
        f.seek(size * 4)
        f.write(bytes((i * 131 + 17) % 256 for i in range(size)))
    config = parse_config({"state_dir": str(state), "models": [
        model_config(pred_path=str(tmp_path / "preds"), reference=reference)]})
    daemon = Daemon(config=config)
    try:
        assert daemon.state.runs("m1") == []
        assert len(list(state.glob("state.db.corrupt-*"))) == 1
    finally:
        daemon.shutdown()


@pytest.mark.parametrize("layout", ["under_a_file", "a_file"])
def test_an_unusable_state_dir_stops_the_daemon_with_an_error_naming_it(tmp_path: Path, layout: str) -> None:
    """validate catches what it can; a state dir spoilt between validation and start still fails clearly."""
    from monitor.config import parse_config
    from monitor.scheduler import Daemon
    from monitor.state import StateStoreError

    state = tmp_path / "state"
    config = parse_config({"state_dir": str(state / "inner" if layout == "under_a_file" else state), "models": [
        model_config(pred_path=str(tmp_path / "preds"), reference={"rolling": "1d"})]})
    state.write_text("now a regular file")
    with pytest.raises(StateStoreError) as exc:
        Daemon(config=config)
    assert str(exc.value).startswith(f"state_dir {config.state_dir!r} cannot be used: "), exc.value
    assert str(state) in str(exc.value)


# --------------------------------------------------------------------------- runs dropped, shutdown bounded

def test_runs_the_scheduler_drops_are_counted_as_skipped(
        tmp_path: Path, daemons, object_store: ObjectStore, proxy: HoldingProxy) -> None:
    """The first run is held in progress past several 1 s firings: APScheduler drops them
    (max_instances=1); each is counted under outcome="skipped" before the run ends."""
    proxy.hold()
    d = daemons(s3_config(tmp_path, object_store, proxy, every="1s", timeout="60s"), env=s3_env())
    d.wait_up()
    wait_for(lambda: proxy.held >= 1, timeout=30, what="the first evaluation to reach the object store", daemon=d)
    m = wait_metrics(d, lambda m: m.runs("m1", "skipped") >= 2, timeout=15, what='outcome="skipped" twice')
    assert m.sum("atalaia_runs_total", model="m1") == m.runs("m1", "skipped"), "no run has ended yet"
    assert "run skipped: the previous run is still going" in d.log()
    proxy.release()
    m = wait_metrics(d, lambda m: m.runs("m1", "success") >= 1, timeout=30, what="the held run to succeed")
    assert d.stop() == 0
    # dropped firings are not runs: the state store's history holds only the runs that ran
    assert set(r.outcome for r in state_runs(tmp_path / "state", "m1")) == {"success"}


def test_sigterm_exits_promptly_while_abandoned_reads_are_still_blocked(
        tmp_path: Path, daemons, object_store: ObjectStore, proxy: HoldingProxy) -> None:
    """Reads on a hung object store are abandoned after the model timeout (2 s) and stay blocked; SIGTERM
    must still end the process within about that timeout, with exit code 0 and the log flushed."""
    proxy.hold()
    d = daemons(s3_config(tmp_path, object_store, proxy, every="1s", timeout="2s"), env=s3_env())
    d.wait_up()
    wait_metrics(d, lambda m: m.runs("m1", "timeout") >= 1, timeout=30, what='outcome="timeout"')
    assert proxy.held >= 1
    t0 = time.monotonic()
    d.proc.send_signal(signal.SIGTERM)
    try:
        code = d.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the daemon did not exit within 15 s of SIGTERM\n{d.tail()}")
    assert code == 0, d.tail()
    assert time.monotonic() - t0 < 8, "shutdown took longer than the model timeout allows"
    log = d.log()
    assert "stopped" in log and "leaving evaluations still blocked" in log, d.tail()


# --------------------------------------------------------------------------- --listen

def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "monitor.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_a_listen_address_in_use_exits_2_with_a_clear_message(tmp_path: Path) -> None:
    reference = write_live_sink(tmp_path / "preds", rows_per_hour=100, hours_before=30)
    config = write_config(tmp_path, [model_config(pred_path=str(tmp_path / "preds"), reference=reference)])
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = run_cli("run", "--config", str(config), "--listen", f"127.0.0.1:{port}")
    assert done.returncode == 2, done.stderr
    assert f"atalaia: cannot listen on 127.0.0.1:{port}: Address already in use" in done.stderr.splitlines()
    assert "Traceback" not in done.stderr
    bad = run_cli("run", "--config", str(config), "--listen", "localhost")
    assert bad.returncode == 2 and "must be HOST:PORT" in bad.stderr and "Traceback" not in bad.stderr


def test_the_daemon_serves_on_a_bracketed_ipv6_address(tmp_path: Path, daemons) -> None:
    reference = write_live_sink(tmp_path / "preds", rows_per_hour=100, hours_before=30)
    config = write_config(tmp_path, [model_config(pred_path=str(tmp_path / "preds"), reference=reference,
                                                  every="1h")])
    d = daemons(config, host="::1")
    assert d.wait_up().status_code == 200
    wait_metrics(d, lambda m: m.runs("m1", "success") >= 1, timeout=60, what="a successful run")
    assert f"on [::1]:{d.port}" in d.log()
    assert d.stop() == 0


# --------------------------------------------------------------------------- alert routes

def test_a_start_with_alert_routes_warns_that_they_are_not_delivered(tmp_path: Path, daemons) -> None:
    reference = write_live_sink(tmp_path / "preds", rows_per_hour=100, hours_before=30)
    config = write_config(
        tmp_path, [model_config(pred_path=str(tmp_path / "preds"), reference=reference, every="1h",
                                alerts={"for": 1, "routes": ["hook"]})],
        alerting={"routes": {"hook": {"type": "webhook", "url": "http://127.0.0.1:9/hook"},
                             "pager": {"type": "pagerduty", "routing_key": "k"}}})
    d = daemons(config)
    d.wait_up()
    assert d.stop() == 0
    (line,) = [line for line in d.log().splitlines() if " WARNING " in line and "alert routes" in line]
    assert "(hook, pager)" in line and "not deliver" in line
    assert "deploy/prometheus" in line and "Alertmanager" in line
    assert (Path(__file__).resolve().parents[1] / "deploy" / "prometheus" / "atalaia-rules.yml").is_file()

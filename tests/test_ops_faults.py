"""How the daemon survives faults and what its metrics tell Prometheus (each test failed before its fix,
found by an operational review): findings of a changed configuration after a restart, skipped runs in the
duration histogram, two daemons on one state dir, and a file still being written.

Every test runs the real daemon (``python -m monitor.cli run``) as a subprocess on Parquet files
written under pytest's tmp dir, scrapes it on 127.0.0.1 and stops what it started.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import model_config, write_hourly_sink
import test_daemon
from test_daemon import START_TIMEOUT, wait_for, wait_metrics

pytestmark = pytest.mark.e2e
daemons = test_daemon.daemons  # the fixture that starts daemons and stops them after the test



# --------------------------------------------------------------------------- helpers

def live_sink(root: Path, *, rows_per_hour: int = 300, hours_before: int = 30,
              reference_hours: int = 12) -> dict[str, str]:
    """Hourly partitions ``[h - hours_before, h + 2h)`` around now (x0 shifted in the last 6 hours);
    returns the first ``reference_hours`` as a ``{start, end}`` reference."""
    h = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = h - timedelta(hours=hours_before)
    write_hourly_sink(root, start=start, hours=hours_before + 2, rows_per_hour=rows_per_hour,
                      shift=lambda t: 1.0 if t >= h - timedelta(hours=6) else 0.0)
    return {"start": start.isoformat(), "end": (start + timedelta(hours=reference_hours)).isoformat()}


def write_config(path: Path, state: Path, models: list[dict[str, Any]], **top: Any) -> Path:
    path.write_text(yaml.safe_dump({"state_dir": str(state), "models": models} | top))
    return path


class SilentStore:
    """A TCP server on 127.0.0.1 that accepts connections and never answers: a hung object store."""

    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port = int(self._sock.getsockname()[1])
        self._held: list[socket.socket] = []
        self._closed = False
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._held.append(conn)
            self.accepted += 1

    def close(self) -> None:
        self._closed = True
        self._sock.close()
        for c in self._held:
            c.close()


@pytest.fixture
def silent_store() -> Iterator[SilentStore]:
    s = SilentStore()
    try:
        yield s
    finally:
        s.close()


S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
          "AWS_EC2_METADATA_DISABLED": "true"}


def hung_s3_config(tmp_path: Path, store: SilentStore, **model: Any) -> Path:
    return write_config(
        tmp_path / "atalaia.yaml", tmp_path / "state",
        [model_config(pred_path="s3://sink/preds", reference={"start": "2026-01-01T00:00:00",
                                                               "end": "2026-01-02T00:00:00"}, **model)],
        storage={"endpoint_url": f"http://127.0.0.1:{store.port}", "region": "us-east-1",
                 "connect_timeout": "5s", "request_timeout": "600s"})


# --------------------------------------------------------------------------- tests
def test_a_detector_removed_from_the_config_is_not_exported_after_a_restart(tmp_path: Path, daemons) -> None:
    """psi and ks run; the configuration then drops ks and the daemon restarts while its source is
    failing.  The restart restores the latest findings from the state store, ks's among them, and
    exports them for as long as no run succeeds: a detector that is no longer configured keeps an
    ``alert`` series (AtalaiaDriftAlert keeps firing for it) that nothing will ever update."""
    preds = tmp_path / "preds"
    reference = live_sink(preds)
    cfg = tmp_path / "atalaia.yaml"
    state = tmp_path / "state"
    write_config(cfg, state, [model_config(pred_path=str(preds), reference=reference, every="1h",
                                           detectors=[{"type": "psi"}, {"type": "ks"}])])
    d = daemons(cfg)
    d.wait_up()
    m = wait_metrics(d, lambda m: m.runs("m1", "success") >= 1, timeout=30, what="a first run")
    assert m.matching("atalaia_finding_status", model="m1", detector="ks", target="x0",
                      atalaia_finding_status="alert")[0].value == 1.0
    assert d.stop() == 0

    # ks removed; the prediction log is unreachable (moved away) when the daemon comes back
    preds.rename(tmp_path / "preds-away")
    write_config(cfg, state, [model_config(pred_path=str(preds), reference=reference, every="1h",
                                           detectors=[{"type": "psi"}])])
    d2 = daemons(cfg)
    d2.wait_up()
    m = wait_metrics(d2, lambda m: m.runs("m1", "error") >= 1, timeout=30, what="the failing run after restart")
    stale = [s for s in m.samples if s.labels.get("detector") == "ks"]
    assert stale == [], f"{len(stale)} series of the removed detector ks are exported, e.g. {stale[:2]}"
    assert d2.stop() == 0


def test_runs_skipped_for_a_hung_source_are_not_observed_as_run_durations(
        tmp_path: Path, daemons, silent_store: SilentStore) -> None:
    """The object store hangs: two evaluations time out (timeout 1s), then every firing is skipped
    because they are still stuck.  A skipped run evaluates nothing, yet ``run_model`` observes its
    ~0 s into ``atalaia_run_duration_seconds``: while the source is hung the histogram fills with
    zero-length "evaluations", so the dashboard's duration quantiles fall to the lowest bucket just
    when runs are slowest (and the firings APScheduler drops, also outcome="skipped", are not
    observed at all: the histogram's count matches neither the runs that ran nor all runs)."""
    d = daemons(hung_s3_config(tmp_path, silent_store, every="1s", timeout="1s"), env=os.environ | S3_ENV)
    d.wait_up()
    wait_for(lambda: "earlier evaluations are still stuck past their timeout" in d.log(), timeout=25,
             what="runs skipped for stuck evaluations", daemon=d)
    time.sleep(2.5)  # a few more skipped runs
    m = d.metrics()
    ran = sum(m.runs("m1", o) for o in ("success", "partial", "error", "timeout"))
    assert ran >= 2 and m.runs("m1", "timeout") >= 2, m.text
    assert m.runs("m1", "skipped") >= 2
    observed = m.get("atalaia_run_duration_seconds_count", model="m1")
    fast = m.get("atalaia_run_duration_seconds_bucket", model="m1", le="0.05")
    # every evaluation that ran was a timeout of about 2 s: none took under 50 ms
    assert fast == 0, f"{fast:.0f} of {observed:.0f} observed run durations are under 50 ms ({ran:.0f} runs ran)"
    assert observed == ran



def test_a_second_daemon_on_the_same_state_dir_is_refused(tmp_path: Path, daemons) -> None:
    """Nothing stops two daemons from sharing a state dir (a doubled `docker run`, two pods of a
    RollingUpdate on one node, where a ReadWriteOnce volume mounts twice).  The second one reads the
    same log again, interleaves its runs and latest findings with the first's in state.db, and — with
    a configuration that renames a model — deletes the first's cached reference and partition profiles
    at start.  It should refuse to start, as it does for a listen address in use (exit 2, naming the
    state dir)."""
    preds = tmp_path / "preds"
    reference = live_sink(preds)
    state = tmp_path / "state"
    cfg_a = write_config(tmp_path / "a.yaml", state, [
        model_config(pred_path=str(preds), reference=reference, every="1h", window="6h")])
    a = daemons(cfg_a)
    a.wait_up()
    wait_metrics(a, lambda m: m.runs("m1", "success") >= 1, timeout=30, what="the first daemon's run")
    cached = sorted((state / "partitions" / "model=m1").glob("*.profile"))
    assert cached and list((state / "references").glob("m1-*.pkl"))

    cfg_b = write_config(tmp_path / "b.yaml", state, [
        model_config(name="m1-canary", pred_path=str(preds), reference=reference, every="1h")])
    b = daemons(cfg_b)
    wait_for(lambda: b.proc.poll() is not None or "serving /metrics" in b.log(), timeout=START_TIMEOUT,
             what="the second daemon to start or exit")
    code = b.proc.poll()
    still_cached = sorted((state / "partitions" / "model=m1").glob("*.profile"))
    refs = list((state / "references").glob("m1-*.pkl"))
    assert a.proc.poll() is None
    assert code == 2, (f"a second daemon runs on the state dir in use (exit {code}); it removed "
                       f"{len(cached) - len(still_cached)} of the first's {len(cached)} partition profiles "
                       f"and {'its' if not refs else 'no'} cached reference\n{b.tail()}")
    assert str(state) in b.log()
    assert still_cached == cached and refs
    assert a.stop() == 0


def test_a_parquet_file_still_being_written_is_not_reported_as_corrupt(tmp_path: Path, daemons) -> None:
    """The model server writes its current hour's file incrementally (a ``ParquetWriter`` that is
    closed at the end of the hour: the footer comes last).  The window ``[now - 1h, now)`` always
    holds that hour, so every run finds a footerless file, skips it as ``corrupt``, and ends
    ``partial``: atalaia_source_errors_total{reason="corrupt"} grows every run and AtalaiaSourceErrors
    fires permanently for a healthy writer.  A file without a footer that is still being modified is
    in progress, not corrupt: it should be left for a later run without a source error."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    preds = tmp_path / "preds"
    reference = live_sink(preds)
    h = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    part = preds / f"date={h:%Y-%m-%d}" / f"hour={h:%H}" / "part-live.parquet"
    n = 50
    table = pa.table({
        "id": [f"live{i}" for i in range(n)],
        "ts": pa.array([h + timedelta(seconds=i) for i in range(n)], type=pa.timestamp("us", tz="UTC")),
        "x0": [0.0] * n, "x1": [0.0] * n, "x2": [1.0] * n, "c": ["a"] * n, "score": [0.5] * n, "pred": [1] * n})
    writer = pq.ParquetWriter(part, table.schema)
    stop = threading.Event()

    def write() -> None:  # a row group every 0.3 s, the file stays open (no footer yet)
        while not stop.is_set():
            writer.write_table(table)
            stop.wait(0.3)

    t = threading.Thread(target=write, daemon=True)
    t.start()
    try:
        cfg = write_config(tmp_path / "atalaia.yaml", tmp_path / "state", [
            model_config(pred_path=str(preds), reference=reference, every="1s")])
        d = daemons(cfg)
        d.wait_up()
        m = wait_metrics(d, lambda m: sum(m.runs("m1", o) for o in ("success", "partial")) >= 3, timeout=30,
                         what="three runs")
        assert m.get("atalaia_source_errors_total", model="m1", reason="corrupt") == 0, (
            f'{m.get("atalaia_source_errors_total", model="m1", reason="corrupt"):.0f} "corrupt" source errors '
            f'for a file being written; runs: success={m.runs("m1", "success"):.0f} '
            f'partial={m.runs("m1", "partial"):.0f}')
        assert m.runs("m1", "partial") == 0
        assert d.stop() == 0
    finally:
        stop.set()
        t.join()
        writer.close()

"""The Prometheus exporter: the findings collector on a fresh registry, the group-label cap, the HTTP
endpoints, and a running daemon's exposition checked by ``promtool`` and by the OpenMetrics parser."""

from __future__ import annotations

import logging
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from conftest import free_port, model_config, write_hourly_sink
from detectors.base import STATUSES, Finding
from detectors.errors import SOURCE_ERROR_REASONS
from monitor.config import parse_config
from monitor.exporter import FindingsCollector, LatestFindings, ListenError, MetricsServer
from monitor.scheduler import Daemon

WINDOW_END = datetime(2026, 11, 21, 20, tzinfo=UTC)
FINDING_FAMILIES = {"atalaia_finding_value", "atalaia_finding_threshold", "atalaia_finding_p_value",
                    "atalaia_finding_status", "atalaia_finding_rows", "atalaia_window_end_timestamp_seconds"}
HEALTH_FAMILIES = {"atalaia_last_run_timestamp_seconds": "gauge", "atalaia_last_success_timestamp_seconds": "gauge",
                   "atalaia_run_duration_seconds": "histogram", "atalaia_runs": "counter",
                   "atalaia_rows_processed": "counter", "atalaia_alerts_sent": "counter",
                   "atalaia_source_errors": "counter", "atalaia_label_cap_exceeded": "counter"}
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def finding(**kw: Any) -> Finding:
    base: dict[str, Any] = dict(
        model="m1", detector="psi", kind="drift", target="x0", statistic="psi", value=0.83, threshold=0.25,
        p_value=1e-9, status="alert", n_reference=24000, n_current=1000, window_start="2026-11-21T19:00:00Z",
        window_end="2026-11-21T20:00:00Z", group=None)
    return Finding(**(base | kw))


def labels_of(f: Finding) -> dict[str, str]:
    return {"model": f.model, "detector": f.detector, "kind": f.kind, "target": f.target, "statistic": f.statistic,
            "group": f.group or ""}


def samples(text: str, *, openmetrics: bool = False) -> dict[tuple[str, frozenset[tuple[str, str]]], Any]:
    families = parse_openmetrics(text) if openmetrics else parse_text(text)
    return {(s.name, frozenset(s.labels.items())): s for fam in families for s in fam.samples}


def value(smp: dict, name: str, **labels: str) -> float | None:
    s = smp.get((name, frozenset(labels.items())))
    return None if s is None else s.value


def group_findings(model: str, groups: list[str]) -> list[Finding]:
    """Two per-group fairness findings for each group, plus one finding without a group."""
    out = [finding(model=model)]
    for i, g in enumerate(groups):
        for metric in ("selection_rate", "true_positive_rate"):
            out.append(finding(model=model, detector="fairness", kind="fairness", target=metric, statistic=metric,
                               value=0.1 + i / 100, threshold=None, p_value=None, status="ok", group=g))
    return out


# --------------------------------------------------------------------------- the collector

def test_collector_builds_the_finding_families_from_the_latest_findings() -> None:
    findings = [
        finding(),
        finding(detector="ks", target="x1", statistic="ks_d", value=0.02, threshold=0.1, p_value=0.73, status="ok"),
        finding(target="x2", value=None, threshold=0.1, p_value=None, status="insufficient_data", n_current=3),
        finding(detector="fairness", kind="fairness", target="demographic_parity_difference",
                statistic="demographic_parity_difference", value=0.19, threshold=0.1, p_value=None, status="warn",
                group="sex=F,race=B"),
    ]
    latest = LatestFindings()
    latest.set("m1", findings, WINDOW_END.timestamp())
    registry = CollectorRegistry()
    registry.register(FindingsCollector(latest))
    text = generate_latest(registry).decode()
    families = {f.name: f for f in parse_text(text)}
    assert set(families) == FINDING_FAMILIES
    smp = samples(text)

    for f in findings:
        lab = labels_of(f)
        assert value(smp, "atalaia_finding_value", **lab) == f.value
        assert value(smp, "atalaia_finding_threshold", **lab) == f.threshold
        assert value(smp, "atalaia_finding_p_value", **lab) == f.p_value
        # a state set: one sample per status, exactly the finding's own is 1
        states = {s: value(smp, "atalaia_finding_status", **lab, atalaia_finding_status=s) for s in STATUSES}
        assert states == {s: float(s == f.status) for s in STATUSES}, (f, states)
        assert value(smp, "atalaia_finding_rows", **lab, side="reference") == f.n_reference
        assert value(smp, "atalaia_finding_rows", **lab, side="current") == f.n_current
    # no made-up values: absent value / p-value means no sample
    assert len(families["atalaia_finding_value"].samples) == 3
    assert len(families["atalaia_finding_p_value"].samples) == 2
    assert len(families["atalaia_finding_status"].samples) == 4 * len(STATUSES)
    assert value(smp, "atalaia_window_end_timestamp_seconds", model="m1") == WINDOW_END.timestamp()
    assert {s.labels["model"] for fam in families.values() for s in fam.samples} == {"m1"}

    # built at scrape time: new findings replace the old ones
    latest.set("m1", findings[:1], WINDOW_END.timestamp() + 60)
    smp = samples(generate_latest(registry).decode())
    assert len([k for k in smp if k[0] == "atalaia_finding_value"]) == 1
    assert value(smp, "atalaia_window_end_timestamp_seconds", model="m1") == WINDOW_END.timestamp() + 60


def test_collector_with_no_findings_exposes_no_samples() -> None:
    registry = CollectorRegistry()
    registry.register(FindingsCollector(LatestFindings()))
    assert not [s for fam in parse_text(generate_latest(registry).decode()) for s in fam.samples]


def test_group_cap_leaves_extra_groups_out_counts_them_and_logs_an_error(caplog: pytest.LogCaptureFixture) -> None:
    capped: list[tuple[str, int]] = []
    latest = LatestFindings(max_groups=2, on_cap=lambda m, n: capped.append((m, n)))
    with caplog.at_level(logging.ERROR, logger="atalaia.exporter"):
        latest.set("m1", group_findings("m1", ["sex=F", "sex=M", "sex=X"]), WINDOW_END.timestamp())
        latest.set("m2", group_findings("m2", ["sex=F", "sex=M"]), WINDOW_END.timestamp())  # at the cap: untouched
    registry = CollectorRegistry()
    registry.register(FindingsCollector(latest))
    smp = samples(generate_latest(registry).decode())
    smp = samples(generate_latest(registry).decode())  # scraping again changes nothing

    def groups(model: str) -> set[str]:
        return {dict(k[1])["group"] for k in smp if k[0] == "atalaia_finding_value" and dict(k[1])["model"] == model}

    assert len(groups("m1") - {""}) == 2 and groups("m1") <= {"", "sex=F", "sex=M", "sex=X"}
    assert "" in groups("m1")  # findings without a group are never capped
    assert groups("m2") == {"", "sex=F", "sex=M"}
    assert capped == [("m1", 2)]  # one group of two findings left out
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "m1" in errors[0].getMessage() and "max_groups=2" in errors[0].getMessage()


@pytest.fixture
def idle_daemon(tmp_path: Path) -> Iterator[Daemon]:
    """A daemon built but not started (no scheduler, no server): its registry is scraped directly."""
    cfg = parse_config({"state_dir": str(tmp_path / "state"), "server": {"max_groups": 2},
                        "models": [model_config(pred_path=str(tmp_path / "preds"), reference={"rolling": "1d"})]})
    daemon = Daemon(config=cfg)
    try:
        yield daemon
    finally:
        daemon.state.close()


def test_label_cap_counter_shows_the_drop_in_the_scrape_that_drops(idle_daemon: Daemon) -> None:
    """The exposition that leaves findings out must already count them in atalaia_label_cap_exceeded_total."""
    idle_daemon.latest.set("m1", group_findings("m1", ["sex=F", "sex=M", "sex=X"]), WINDOW_END.timestamp())
    smp = samples(generate_latest(idle_daemon.metrics_registry).decode())
    assert len({dict(k[1])["group"] for k in smp if k[0] == "atalaia_finding_value"} - {""}) == 2
    assert (value(smp, "atalaia_label_cap_exceeded_total", model="m1") or 0) >= 2, \
        "findings were left out of this exposition but atalaia_label_cap_exceeded_total does not show it"


def test_error_counters_start_at_zero_so_the_first_error_is_an_increase(idle_daemon: Daemon) -> None:
    """A counter series first exposed at 1 has no increase() for a rule or a panel to see: every model's
    source-error series (each reason atalaia raises) and label-cap series are exposed at 0 from the start."""
    smp = samples(generate_latest(idle_daemon.metrics_registry).decode())
    for reason in SOURCE_ERROR_REASONS:
        assert value(smp, "atalaia_source_errors_total", model="m1", reason=reason) == 0.0, reason
    assert value(smp, "atalaia_label_cap_exceeded_total", model="m1") == 0.0


def test_every_source_error_reason_raised_is_primed() -> None:
    raised = set()
    for path in (Path(__file__).resolve().parents[1] / "monitor").rglob("*.py"):
        raised |= set(re.findall(r'reason="([a-z_]+)"', path.read_text()))
    assert raised and raised <= set(SOURCE_ERROR_REASONS), raised - set(SOURCE_ERROR_REASONS)


# --------------------------------------------------------------------------- the HTTP server

def test_metrics_server_endpoints_and_content_negotiation() -> None:
    registry = CollectorRegistry()
    Counter("atalaia_things", "Things.", registry=registry).inc(3)
    state = {"ready": False}
    server = MetricsServer(registry=registry, host="127.0.0.1", port=0,
                           ready=lambda: (state["ready"], "ready" if state["ready"] else "waiting for the first run"))
    server.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.address[1]}", timeout=5) as http:
            r = http.get("/healthz")
            assert (r.status_code, r.text) == (200, "ok\n")
            r = http.get("/readyz")
            assert (r.status_code, r.text) == (503, "waiting for the first run\n")
            state["ready"] = True
            assert http.get("/readyz").status_code == 200
            r = http.get("/metrics")
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
            assert "atalaia_things_total 3.0" in r.text
            r = http.get("/metrics?debug=1", headers={"Accept": OPENMETRICS})
            assert r.headers["content-type"].startswith("application/openmetrics-text")
            assert r.text.endswith("# EOF\n")
            assert http.get("/nothing-here").status_code == 404
    finally:
        server.stop()


def test_schedule_interval_is_the_longest_gap_between_runs(tmp_path: Path) -> None:
    """A cron schedule idle at night reports the night (the stale-run rule is 3 x this), an interval itself."""
    saturday_noon = datetime(2026, 11, 28, 12, tzinfo=UTC)
    cfg = parse_config({"state_dir": str(tmp_path / "state"), "models": [
        model_config(name="office", pred_path=str(tmp_path / "preds"), reference={"rolling": "1d"}, every="5m")
        | {"schedule": {"cron": "*/15 9-17 * * *"}},
        model_config(name="weekdays", pred_path=str(tmp_path / "preds"), reference={"rolling": "1d"})
        | {"schedule": {"cron": "0 9 * * 1-5"}},
        model_config(name="steady", pred_path=str(tmp_path / "preds"), reference={"rolling": "1d"}, every="5m")]})
    daemon = Daemon(config=cfg, clock=lambda: saturday_noon)
    try:
        text = generate_latest(daemon.metrics_registry).decode()
    finally:
        daemon.state.close()
    smp = samples(text)
    assert value(smp, "atalaia_schedule_interval_seconds", model="office") == 15 * 3600 + 15 * 60
    assert value(smp, "atalaia_schedule_interval_seconds", model="weekdays") == 3 * 86400
    assert value(smp, "atalaia_schedule_interval_seconds", model="steady") == 300
    (help_line,) = [line for line in text.splitlines() if line.startswith("# HELP atalaia_schedule_interval_seconds")]
    assert "longest gap" in help_line and "7 days" in help_line


def test_metrics_server_listens_on_ipv6() -> None:
    registry = CollectorRegistry()
    Counter("atalaia_things", "Things.", registry=registry).inc()
    server = MetricsServer(registry=registry, host="::1", port=0, ready=lambda: (True, "ready"))
    server.start()
    try:
        host, port = server.address
        assert host == "::1" and server.url_host == f"[::1]:{port}"
        r = httpx.get(f"http://[::1]:{port}/metrics", timeout=5)
        assert r.status_code == 200 and "atalaia_things_total 1.0" in r.text
    finally:
        server.stop()


def test_metrics_server_that_cannot_bind_raises_listen_error_naming_the_address() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(ListenError) as exc:
            MetricsServer(registry=CollectorRegistry(), host="127.0.0.1", port=port, ready=lambda: (True, ""))
    assert str(exc.value) == f"cannot listen on 127.0.0.1:{port}: Address already in use"
    assert isinstance(exc.value, OSError)
    with pytest.raises(ListenError, match=r"cannot listen on no-such-host\.invalid:9108: "):
        MetricsServer(registry=CollectorRegistry(), host="no-such-host.invalid", port=9108, ready=lambda: (True, ""))


# --------------------------------------------------------------------------- a running daemon

@dataclass(frozen=True)
class Running:
    daemon: Daemon
    url: str


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """A started daemon (scheduler, evaluation and HTTP server on 127.0.0.1) after its first run, on a
    sink around the current time whose x0 is shifted in the last hours."""
    root = tmp_path_factory.mktemp("exporter")
    h = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = h - timedelta(hours=30)
    write_hourly_sink(root / "preds", start=start, hours=32, rows_per_hour=500,
                      shift=lambda t: 1.0 if t >= h - timedelta(hours=4) else 0.0)
    cfg = parse_config({"state_dir": str(root / "state"), "models": [model_config(
        pred_path=str(root / "preds"), every="1h",
        reference={"start": start.isoformat(), "end": (start + timedelta(hours=24)).isoformat()})]})
    daemon = Daemon(config=cfg, listen=f"127.0.0.1:{free_port()}")
    daemon.start()
    try:
        deadline = time.monotonic() + 60
        while not daemon.readiness()[0]:
            assert time.monotonic() < deadline, "the daemon's first run did not finish"
            time.sleep(0.05)
        host, port = daemon.server.address  # type: ignore[union-attr]
        yield Running(daemon, f"http://{host}:{port}")
    finally:
        daemon.shutdown()


def scrape(running: Running, accept: str | None = None) -> httpx.Response:
    r = httpx.get(running.url + "/metrics", headers={"Accept": accept} if accept else {}, timeout=10)
    assert r.status_code == 200
    return r


@pytest.mark.e2e
def test_promtool_accepts_the_exposition_of_a_running_daemon(running: Running) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is not on PATH (apt-get install prometheus)"
    body = scrape(running).text
    smp = samples(body)
    assert value(smp, "atalaia_finding_status", **labels_of(finding()), atalaia_finding_status="alert") == 1.0
    assert value(smp, "atalaia_runs_total", model="m1", outcome="success") == 1.0
    done = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "" and done.stderr.strip() == "", done.stdout + done.stderr


@pytest.mark.e2e
def test_openmetrics_is_negotiated_and_parses(running: Running) -> None:
    r = scrape(running, OPENMETRICS)
    assert r.headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
    assert r.text.endswith("# EOF\n")
    families = {f.name: f for f in parse_openmetrics(r.text)}  # the strict parser: raises on any violation
    assert families["atalaia_finding_status"].type == "stateset"
    assert families["atalaia_runs"].type == "counter"
    assert families["atalaia_run_duration_seconds"].type == "histogram"
    smp = samples(r.text, openmetrics=True)
    assert value(smp, "atalaia_finding_status", **labels_of(finding()), atalaia_finding_status="alert") == 1.0
    # and the classic format stays the default
    assert scrape(running).headers["content-type"].startswith("text/plain; version=0.0.4")


_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?P<labels>\{.*\})?(?P<rest>(?: \S+)+)$")


@pytest.mark.e2e
@pytest.mark.parametrize("accept", [None, OPENMETRICS], ids=["text", "openmetrics"])
def test_samples_carry_no_timestamps(running: Running, accept: str | None) -> None:
    text = scrape(running, accept).text
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    assert lines
    for ln in lines:
        m = _SAMPLE.match(ln)
        assert m, ln
        assert len(m["rest"].split()) == 1, f"sample with a timestamp: {ln}"
    parsed = samples(text, openmetrics=accept is not None).values()
    assert all(s.timestamp is None for s in parsed)


@pytest.mark.e2e
def test_metric_names_follow_the_conventions(running: Running) -> None:
    text = scrape(running).text
    families = {f.name: f for f in parse_text(text)}
    assert set(families) >= FINDING_FAMILIES
    for name, kind in HEALTH_FAMILIES.items():
        assert name in families and families[name].type == kind, name
    assert "atalaia_alerts_sent_total" in text and "atalaia_rows_processed_total" in text
    for name, fam in families.items():
        if name.endswith("_created") and name.removesuffix("_created") in families:
            continue  # prometheus_client's companion series of a counter or histogram (its creation time)
        assert name.startswith("atalaia_"), name
        assert re.fullmatch(r"[a-z_]+", name), name
        if fam.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in fam.samples), name
        else:
            assert not name.endswith("_total"), f"{name} is a {fam.type} named like a counter"
        if "timestamp" in name or "duration" in name:
            assert name.endswith("_seconds"), f"{name}: times in base units (seconds)"
        assert not re.search(r"_(milli|micro|nano)?seconds?_|_ms$|_minutes?$|_hours?$", name), name
    # counters named in DESIGN.md, with their labels
    runs = [s for s in families["atalaia_runs"].samples if s.name == "atalaia_runs_total"]
    assert {s.labels["outcome"] for s in runs} >= {"success", "partial", "error", "timeout", "skipped"}
    assert {tuple(sorted(s.labels)) for s in runs} == {("model", "outcome")}
    # Unix times in seconds
    smp = samples(text)
    for name in ("atalaia_last_run_timestamp_seconds", "atalaia_window_end_timestamp_seconds"):
        assert abs(value(smp, name, model="m1") - time.time()) < 600, name

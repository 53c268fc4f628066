"""deploy/: how the rules, Alertmanager, the dashboard and the manifests behave, with the real tools.

tests/test_deploy.py checks that every file parses and names what the exporter exposes; these tests
check behaviour that a review found wrong, each with the tool that runs it in production:

* ``promtool test rules`` on ``atalaia-rules.scenarios.test.yml``: every alert fires with its labels
  and annotations and stays quiet on healthy series; a pod restart or one clean run does not resolve
  a drift alert; one of several atalaia targets vanishing is ``AtalaiaDown``.
* Generated ``promtool`` tests over schedules from 5 minutes to a week: the counter-based alerts fire
  once and stay firing while every run fails, and never fire while runs succeed (a fixed 30m window
  held no run most of the time on hourly and daily schedules, and the alerts flapped every run).
* Generated ``promtool`` tests of ``AtalaiaStale`` on those schedules and on a business-hours cron,
  with ``atalaia_missed_runs`` as the exporter's own counter computes it: it fires 5 minutes after
  the third run without a success, whatever the schedule (on ``*/15 9-17 * * 1-5`` with every run
  failing from Tuesday 09:00, at 09:35), and never while runs succeed, nights and weekends included.
* A real Alertmanager: its inhibit rules silence exactly what they are meant to, on the label sets the
  rules produce.
* A real exposition of the exporter: every metric a rule or a panel names is one of its samples, by
  its exact name, and ``rate``/``increase`` only ever take counters and histogram parts.
* The sidecar's memory request and limit against the figures bench/README.md measured.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.interval import IntervalTrigger

from conftest import free_port
from monitor.cron import crontab_trigger, longest_gap
from monitor.exporter import MissedRuns

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
PROM = DEPLOY / "prometheus"
RULES = PROM / "atalaia-rules.yml"
RULE_TESTS = [PROM / "atalaia-rules.test.yml", PROM / "atalaia-rules.scenarios.test.yml"]
ALERTMANAGER = DEPLOY / "alertmanager" / "alertmanager.yml"
DASHBOARD = DEPLOY / "grafana" / "atalaia-dashboard.json"
DEPLOYMENT = DEPLOY / "kubernetes" / "deployment.yaml"
BENCH_README = ROOT / "bench" / "README.md"

MINUTE = 60
HOUR = 60 * MINUTE
DAY = 24 * HOUR


def required_tool(*names: str) -> str:
    for name in names:
        path = shutil.which(name)
        if path is not None:
            return path
    pytest.fail(f"{' or '.join(names)} is not installed (apt-get install prometheus prometheus-alertmanager; "
                ".ci/run does it)")


def run(*cmd: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)


def alerting_rules() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r]


def duration_seconds(text: str) -> int:
    units = {"s": 1, "m": MINUTE, "h": HOUR, "d": DAY, "w": 7 * DAY}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([smhdw])", text))


# --------------------------------------------------------------------------- promtool

def test_rules_pass_promtool_lint() -> None:
    # promtool exits 0 on lint errors (duplicate rules, ...): read what it prints as well
    proc = run(required_tool("promtool"), "check", "rules", str(RULES))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "FAILED" not in out and "lint error" not in out, out


def test_scenario_rule_tests_pass() -> None:
    scenarios = RULE_TESTS[1]
    assert yaml.safe_load(scenarios.read_text())["rule_files"] == [RULES.name]
    proc = run(required_tool("promtool"), "test", "rules", scenarios.name, cwd=PROM)
    assert proc.returncode == 0 and "SUCCESS" in proc.stdout, proc.stdout + proc.stderr


def test_every_alert_is_tested_firing_and_quiet() -> None:
    """Each alert has a unit test that fires it with every annotation checked, and one that expects it
    quiet; an alert with a ``for`` is checked on both sides of it: quiet, then firing at most ``for``
    plus 10 minutes later, on the same series."""
    fired: dict[str, set[str]] = {}
    quiet: set[str] = set()
    brackets: dict[str, list[int]] = {}
    for path in RULE_TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            times: dict[str, tuple[list[int], list[int]]] = {}
            for case in test.get("alert_rule_test", []):
                name, at = case["alertname"], duration_seconds(case["eval_time"])
                if case.get("exp_alerts"):
                    for alert in case["exp_alerts"]:
                        fired.setdefault(name, set()).update(alert.get("exp_annotations", {}))
                    times.setdefault(name, ([], []))[1].append(at)
                else:
                    quiet.add(name)
                    times.setdefault(name, ([], []))[0].append(at)
            for name, (quiet_at, firing_at) in times.items():
                brackets.setdefault(name, []).extend(f - q for q in quiet_at for f in firing_at if f > q)
    for rule in alerting_rules():
        name = rule["alert"]
        assert name in fired, f"no unit test fires {name}"
        assert set(rule["annotations"]) <= fired[name], f"{name}: a firing test leaves annotations unchecked"
        assert name in quiet, f"no unit test expects {name} quiet"
        if "for" in rule:
            gap = min(brackets.get(name, [1 << 40]))
            assert gap <= duration_seconds(rule["for"]) + 10 * MINUTE, f"{name}: its `for` is not bracketed by a test"


# --------------------------------------------------------------------------- schedules

#: alert -> (counter whose every increment is a bad run, extra labels of its series)
COUNTER_ALERTS = {
    "AtalaiaRunsFailing": ("atalaia_runs_total", {"outcome": "error"}),
    "AtalaiaSourceErrors": ("atalaia_source_errors_total", {"reason": "corrupt"}),
    "AtalaiaLabelCapExceeded": ("atalaia_label_cap_exceeded_total", {}),
}
#: schedule -> the gap between its runs (atalaia_schedule_interval_seconds); 3d is the weekend gap of a
#: weekdays-only cron such as "0 9 * * 1-5", taken here between every run (the worst case)
SCHEDULES = {"5m": 5 * MINUTE, "15m": 15 * MINUTE, "30m": 30 * MINUTE, "1h": HOUR, "6h": 6 * HOUR,
             "1d": DAY, "3d": 3 * DAY, "weekly": 7 * DAY}


def series(name: str, labels: dict[str, str]) -> str:
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def counter_values(*, runs_at: list[int], step: int, samples: int) -> str:
    """promtool's expanded notation of a counter that goes up by one at each time of ``runs_at``."""
    return " ".join(str(sum(1 for r in runs_at if r <= i * step)) for i in range(samples))


def scrape_step(every: int) -> int:
    """Sample and rule-evaluation step for a schedule: a few per run, between 1m and 1h. Rules are
    evaluated at the samples' own times, so a gauge sampled hourly is never past its 5m lookback."""
    return min(HOUR, max(MINUTE, every // 6))


def schedule_case(label: str, every: int, rules: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A promtool test of one schedule: model ``bad`` fails every run, ``good`` succeeds every run."""
    step = scrape_step(every)
    first_run = step
    end = 3 * every + 3 * HOUR                          # three runs and the time up to the fourth
    samples = end // step + 1
    runs = list(range(first_run, end + 1, every))
    target = {"job": "atalaia", "instance": "10.1.0.7:9108"}
    input_series = []
    for model, bad in (("bad", True), ("good", False)):
        labels = target | {"model": model}
        input_series.append({"series": series("atalaia_schedule_interval_seconds", labels),
                             "values": f"{every}x{samples - 1}"})
        input_series.append({"series": series("atalaia_runs_total", labels | {"outcome": "success"}),
                             "values": counter_values(runs_at=[] if bad else runs, step=step, samples=samples)})
        for counter, extra in COUNTER_ALERTS.values():
            input_series.append({"series": series(counter, labels | extra),
                                 "values": counter_values(runs_at=runs if bad else [], step=step, samples=samples)})
    # A bad run keeps the alerts firing until the next run; on schedules with gaps of more than a day,
    # for the day the window (25h) holds it, then they resolve. Checks: a dozen times spread over the
    # test, and for the long schedules a time half a day and two days after a run.
    settle = max(25 * MINUTE, 2 * step)                 # the `for` (15m), evaluated at every sample
    times = {(first_run + settle + (end - first_run - settle) * k // 12) // step * step for k in range(13)}
    if every > 2 * DAY:
        times |= {runs[1] + 12 * HOUR, runs[1] + 2 * DAY}
    firing, quiet = [], []
    for at in sorted(times):
        since_run = at - max(r for r in runs if r <= at)
        if every <= DAY or settle <= since_run <= DAY:
            firing.append(at)
        elif since_run >= DAY + HOUR + step:
            quiet.append(at)
    assert firing and (every <= DAY or quiet), (label, sorted(times))
    cases = []
    for name, (_counter, extra) in COUNTER_ALERTS.items():
        labels = {"severity": rules[name]["labels"]["severity"], "service": "atalaia"} | target | {"model": "bad"}
        exp = [{"exp_labels": labels | {k: v for k, v in extra.items() if k != "outcome"}}]
        cases += [{"eval_time": f"{at}s", "alertname": name, "exp_alerts": exp} for at in firing]
        cases += [{"eval_time": f"{at}s", "alertname": name, "exp_alerts": []} for at in quiet]
    return {"name": f"schedule {label}", "interval": f"{step}s", "input_series": input_series,
            "alert_rule_test": cases}


def test_counter_alerts_hold_on_every_schedule(tmp_path: Path) -> None:
    """Every run of model ``bad`` fails, has a source error and drops findings at the label cap; every
    run of model ``good`` succeeds. On each schedule, from the ``for`` after the first run on, the
    three alerts fire for ``bad`` at every check (they do not resolve between runs; on schedules with
    gaps of more than a day, for a day after each run) and never for ``good``. Annotations are left
    out of the rules copy: this is about expressions and timing."""
    promtool = required_tool("promtool")
    by_name = {r["alert"]: r for r in alerting_rules()}
    stripped = [{k: v for k, v in by_name[name].items() if k != "annotations"} for name in COUNTER_ALERTS]
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "counters", "rules": stripped}]}))
    failed = promtool_cases(promtool, tmp_path, {
        label: (f"{scrape_step(every)}s", schedule_case(label, every, by_name)) for label, every in SCHEDULES.items()})
    assert not failed, "alerts that flap or stay quiet on some schedule:\n" + "\n".join(
        f"--- {label}\n{out}" for label, out in failed.items())


def promtool_cases(promtool: str, folder: Path, cases: dict[str, tuple[str, dict]]) -> dict[str, str]:
    """Run each ``{label: (evaluation_interval, test case)}`` against ``folder/rules.yml`` with
    ``promtool test rules``, all at once; the output of those that failed, by label."""
    procs = {}
    for i, (label, (interval, case)) in enumerate(cases.items()):
        doc = {"rule_files": ["rules.yml"], "evaluation_interval": interval, "tests": [case]}
        (folder / f"case-{i}.yml").write_text(yaml.safe_dump(doc, width=1 << 20))
        procs[label] = subprocess.Popen([promtool, "test", "rules", f"case-{i}.yml"], cwd=folder,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    failed = {}
    for label, proc in procs.items():
        out, _ = proc.communicate(timeout=120)
        if proc.returncode != 0:
            failed[label] = re.sub(r"\n\s*\n", "\n", out)[:3000]
    return failed


# --------------------------------------------------------------------------- AtalaiaStale

#: promtool's time 0 in the generated stale tests: a Monday, 00:00 UTC
MONDAY = datetime(2026, 11, 30, tzinfo=UTC)
#: a business-hours schedule: every 15 minutes from 09:00 to 17:45, Monday to Friday
OFFICE = "*/15 9-17 * * 1-5"


def due_after(trigger: BaseTrigger) -> Callable[[datetime], datetime | None]:
    return lambda t: trigger.get_next_fire_time(None, t + timedelta(milliseconds=1))


def missed_runs_values(trigger: BaseTrigger, *, succeeded: Callable[[datetime], bool], step: int,
                       samples: int) -> tuple[list[int], list[float]]:
    """``atalaia_missed_runs`` and ``atalaia_last_success_timestamp_seconds`` (promtool's time) at each
    sample from ``MONDAY`` on, counted by the exporter's :class:`MissedRuns` with an injected clock: a run
    succeeded at ``MONDAY``, and each later run due at ``t`` succeeds 30 s later when ``succeeded(t)``."""
    now = [MONDAY]
    missed = MissedRuns(clock=lambda: now[0])
    missed.watch("m", due_after=due_after(trigger), since=MONDAY)
    end = MONDAY + timedelta(seconds=step * samples)
    successes = [t + timedelta(seconds=30) for t in firing_times(trigger, MONDAY, end) if succeeded(t)]
    last = MONDAY
    counts, last_success = [], []
    for i in range(samples):
        now[0] = MONDAY + timedelta(seconds=i * step)
        while successes and successes[0] <= now[0]:
            last = successes.pop(0)
            missed.succeeded("m", at=last)
        counts.append(missed.count("m"))
        last_success.append((last - MONDAY).total_seconds())
    return counts, last_success


def firing_times(trigger: BaseTrigger, start: datetime, end: datetime) -> list[datetime]:
    out, t = [], due_after(trigger)(start)
    while t is not None and t < end:
        out.append(t)
        t = due_after(trigger)(t)
    return out


def promtool_values(values: list[float]) -> str:
    """promtool's expanding notation, runs of one value as ``VxN`` (the value N + 1 times)."""
    out: list[str] = []
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[i]:
            j += 1
        v = f"{values[i]:g}"
        out.append(v if j == i else f"{v}x{j - i}")
        i = j + 1
    return " ".join(out)


def stale_case(name: str, trigger: BaseTrigger, *, interval: int, fails_from: datetime, step: int, end: datetime,
               firing: list[datetime], quiet: list[datetime], severity: str) -> dict[str, Any]:
    """Model ``bad``'s runs succeed until ``fails_from`` and fail from then on; model ``good``'s all succeed.
    ``AtalaiaStale`` is expected for ``bad`` at the times ``firing``, for neither at the times ``quiet``, and
    never for ``good``."""
    samples = int((end - MONDAY).total_seconds()) // step + 1
    target = {"job": "atalaia", "instance": "10.1.0.7:9108"}
    input_series = []
    for model, ok in (("bad", lambda t: t < fails_from), ("good", lambda t: True)):
        labels = target | {"model": model}
        counts, last_success = missed_runs_values(trigger, succeeded=ok, step=step, samples=samples)
        input_series += [
            {"series": series("atalaia_missed_runs", labels), "values": promtool_values(counts)},
            # exported beside it (an older atalaia exports only these): the rule's fallback adds nothing
            {"series": series("atalaia_last_success_timestamp_seconds", labels),
             "values": promtool_values(last_success)},
            {"series": series("atalaia_schedule_interval_seconds", labels), "values": f"{interval}x{samples - 1}"},
        ]

    def at(t: datetime) -> str:
        return f"{int((t - MONDAY).total_seconds())}s"

    exp = [{"exp_labels": {"severity": severity, "service": "atalaia"} | target | {"model": "bad"}}]
    cases = [{"eval_time": at(t), "alertname": "AtalaiaStale", "exp_alerts": exp} for t in firing]
    cases += [{"eval_time": at(t), "alertname": "AtalaiaStale", "exp_alerts": []} for t in quiet]
    return {"name": name, "interval": f"{step}s", "input_series": input_series, "alert_rule_test": cases}


def stale_cases(rule: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """One promtool test per schedule of ``SCHEDULES`` and one for the business-hours cron ``OFFICE``."""
    wait = duration_seconds(rule["for"])
    severity = rule["labels"]["severity"]
    cases = {}
    for label, every in SCHEDULES.items():
        step = scrape_step(every)
        trigger = IntervalTrigger(seconds=every, start_date=MONDAY + timedelta(seconds=step), timezone=UTC)
        third = MONDAY + timedelta(seconds=step + 2 * every)     # every run fails: the third run missed
        fires = third + timedelta(seconds=-(-wait // step) * step)  # the first evaluation past `for`
        end = third + timedelta(seconds=every + 2 * step)         # past the fourth run
        assert fires < end
        middle = fires + timedelta(seconds=(end - fires).total_seconds() // 2 // step * step)
        cases[label] = stale_case(f"stale, schedule {label}", trigger, interval=every, fails_from=MONDAY, step=step,
                                  end=end, firing=[fires, middle, end],
                                  quiet=[MONDAY, third - timedelta(seconds=step), fires - timedelta(seconds=step)],
                                  severity=severity)
    # OFFICE: the runs of Monday succeed, every run fails from Tuesday 09:00 (runs due 09:00, 09:15, 09:30)
    tuesday_9 = MONDAY + timedelta(days=1, hours=9)
    fires = tuesday_9 + timedelta(minutes=30, seconds=wait)
    assert fires - tuesday_9 <= timedelta(hours=1), "AtalaiaStale must fire within the hour"
    def hm(day: int, hour: int, minute: int = 0) -> datetime:
        return MONDAY + timedelta(days=day, hours=hour, minutes=minute)

    interval = int(longest_gap(OFFICE, start=MONDAY).total_seconds())  # 63h15m: the weekend
    cases["business hours"] = stale_case(
        f"stale, cron {OFFICE}, every run failing from Tuesday 09:00", crontab_trigger(OFFICE), interval=interval,
        fails_from=tuesday_9, step=MINUTE, end=hm(2, 12),
        firing=[fires, hm(1, 10), hm(1, 17, 50), hm(2, 3), hm(2, 9, 5), hm(2, 12)],
        quiet=[hm(0, 8, 59), hm(0, 9), hm(0, 12), hm(0, 18), hm(1, 3), hm(1, 8, 59), hm(1, 9, 29),
               fires - timedelta(minutes=1)],
        severity=severity)
    return cases


def test_stale_fires_at_the_third_missed_run_on_every_schedule(tmp_path: Path) -> None:
    """``AtalaiaStale`` on the exporter's own ``atalaia_missed_runs``: for a model whose every run fails it
    is pending at the third run due without a success and fires its ``for`` later, on every schedule from
    5 minutes to a week; on the business-hours cron whose runs all fail from Tuesday 09:00 it fires at
    09:35, and not at night or over the weekend while nothing is due. A model whose runs succeed never
    has it. (Annotations are left out of the rules copy: this is about the expression and its timing.)"""
    promtool = required_tool("promtool")
    rule = next(r for r in alerting_rules() if r["alert"] == "AtalaiaStale")
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(
        {"groups": [{"name": "stale", "rules": [{k: v for k, v in rule.items() if k != "annotations"}]}]}))
    failed = promtool_cases(promtool, tmp_path,
                            {label: (case["interval"], case) for label, case in stale_cases(rule).items()})
    assert not failed, "AtalaiaStale early, late or flapping on some schedule:\n" + "\n".join(
        f"--- {label}\n{out}" for label, out in failed.items())


def test_the_generated_missed_runs_follow_the_schedule() -> None:
    """The series the stale tests feed promtool: on the business-hours cron the count is 0 all of Monday
    night, then 1, 2, 3 at Tuesday 09:00, 09:15, 09:30 (the interval gauge says 63h15m)."""
    trigger = crontab_trigger(OFFICE)
    tuesday_9 = MONDAY + timedelta(days=1, hours=9)
    counts, _ = missed_runs_values(trigger, succeeded=lambda t: t < tuesday_9, step=MINUTE, samples=36 * 60)
    def minute(d: timedelta) -> int:
        return int(d.total_seconds()) // MINUTE

    assert counts[minute(timedelta(hours=9))] == 1                     # Monday 09:00, due and not yet done
    assert counts[minute(timedelta(hours=9, minutes=1))] == 0
    assert set(counts[minute(timedelta(hours=17, minutes=46)):minute(timedelta(hours=33))]) == {0}
    assert [counts[minute(timedelta(hours=33, minutes=m))] for m in (0, 14, 15, 29, 30, 59)] == [1, 1, 2, 2, 3, 4]
    assert longest_gap(OFFICE, start=MONDAY) == timedelta(hours=63, minutes=15)


# --------------------------------------------------------------------------- Alertmanager

def http(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            text = r.read()
            is_json = r.headers.get_content_type() == "application/json"
            return r.status, json.loads(text) if is_json and text.strip() else text.decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return 0, None


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    binary = required_tool("prometheus-alertmanager", "alertmanager")
    port = free_port()
    proc = subprocess.Popen([binary, f"--config.file={ALERTMANAGER}", f"--storage.path={tmp_path / 'am'}",
                             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while http("GET", f"{url}/-/ready")[0] != 200:
            if proc.poll() is not None:
                pytest.fail(f"alertmanager exited {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("alertmanager did not become ready")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_alertmanager_inhibits_on_the_labels_the_rules_produce(alertmanager: str) -> None:
    # label sets as the rules emit them (see atalaia-rules.scenarios.test.yml): the finding alerts carry
    # no instance or pod, the health alerts carry the scrape target's
    operator = {"job": "atalaia", "namespace": "ml", "service": "atalaia", "container": "atalaia",
                "endpoint": "metrics"}
    finding = operator | {"model": "credit-default", "detector": "psi", "kind": "drift", "statistic": "psi"}
    target = operator | {"instance": "10.1.0.7:9108", "pod": "credit-model-5c9d-x1"}
    alerts = {
        "drift income": finding | {"alertname": "AtalaiaDriftAlert", "severity": "warning", "target": "income"},
        "warn income": finding | {"alertname": "AtalaiaFindingWarn", "severity": "info", "target": "income"},
        "warn age": finding | {"alertname": "AtalaiaFindingWarn", "severity": "info", "target": "age"},
        "stale credit": target | {"alertname": "AtalaiaStale", "severity": "critical", "model": "credit-default"},
        "failing credit": target | {"alertname": "AtalaiaRunsFailing", "severity": "warning",
                                    "model": "credit-default"},
        "failing fraud": target | {"alertname": "AtalaiaRunsFailing", "severity": "warning", "model": "fraud"},
    }
    now = datetime.now(UTC)
    status, body = http("POST", f"{alertmanager}/api/v2/alerts", [
        {"labels": labels, "annotations": {"summary": key}, "startsAt": now.isoformat(),
         "endsAt": (now + timedelta(hours=1)).isoformat()} for key, labels in alerts.items()])
    assert status == 200, body
    status, listed = http("GET", f"{alertmanager}/api/v2/alerts")
    assert status == 200, listed
    inhibited = {a["annotations"]["summary"]: bool(a["status"]["inhibitedBy"]) for a in listed}
    assert inhibited == {
        "drift income": False,
        "warn income": True,        # its own finding is in alert
        "warn age": False,          # another finding
        "stale credit": False,
        "failing credit": True,     # the same model is stale: one incident, paged once
        "failing fraud": False,     # another model
    }


def test_alertmanager_routes_every_rule_severity() -> None:
    amtool = required_tool("amtool")
    expected = {"critical": "atalaia-pager,atalaia-slack", "warning": "atalaia-slack", "info": "atalaia-slack"}
    for rule in alerting_rules():
        severity = rule["labels"]["severity"]
        proc = run(amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER}",
                   f"alertname={rule['alert']}", "service=atalaia", f"severity={severity}", "model=m")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert proc.stdout.strip() == expected[severity], rule["alert"]


# --------------------------------------------------------------------------- names, against an exposition

@pytest.fixture(scope="module")
def exposition() -> dict[str, str]:
    """Sample name -> family type, from a real exposition of every family the daemon exports."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from detectors.base import Finding
    from monitor.exporter import FindingsCollector, LatestFindings, Telemetry
    from monitor.scheduler import OUTCOMES

    registry = CollectorRegistry()
    t = Telemetry(registry)
    t.prime(["m"], OUTCOMES)
    t.last_run.labels("m").set(1)
    t.last_success.labels("m").set(1)
    t.interval.labels("m").set(300)
    t.duration.labels("m").observe(1.5)
    t.alerts_sent.labels("chat", "sent").inc()
    latest = LatestFindings()
    latest.set("m", [Finding(model="m", detector="ks", kind="drift", target="x", statistic="ks_d", value=0.2,
                             threshold=0.15, p_value=0.001, status="alert", n_reference=100, n_current=100,
                             window_start="2026-01-01T00:00:00Z", window_end="2026-01-01T01:00:00Z")], 0.0)
    registry.register(FindingsCollector(latest))
    missed = MissedRuns(clock=lambda: MONDAY)
    missed.watch("m", due_after=due_after(crontab_trigger(OFFICE)), since=MONDAY)
    registry.register(missed)
    samples: dict[str, str] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            if not sample.name.endswith("_created"):
                samples[sample.name] = family.type
    return samples


def exprs() -> list[tuple[str, str]]:
    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for p in items:
            yield p
            yield from panels(p.get("panels", []))

    dash = json.loads(DASHBOARD.read_text())
    out = [(f"rule {r.get('alert') or r.get('record')}", r["expr"])
           for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    out += [(f"panel {p['title']!r} {t['refId']}", t["expr"]) for p in panels(dash["panels"]) for t in p.get("targets", [])]
    out += [(f"variable {v['name']}", v["definition"]) for v in dash["templating"]["list"] if v["type"] == "query"]
    return out


def test_every_metric_named_is_a_sample_of_the_exposition(exposition: dict[str, str]) -> None:
    unknown = [(where, name) for where, expr in exprs()
               for name in re.findall(r"\batalaia_[a-z_]+\b", expr) if name not in exposition]
    assert not unknown, f"names that are no sample of the exposition: {unknown}"


def test_rates_take_counters_and_quantiles_take_buckets(exposition: dict[str, str]) -> None:
    for where, expr in exprs():
        for fn, name in re.findall(r"\b(rate|irate|increase)\(\s*(\w+)", expr):
            assert name.startswith("atalaia_") or name == "up", (where, fn, name)
            if name.startswith("atalaia_"):
                assert exposition[name] in ("counter", "histogram"), f"{where}: {fn}() of a {exposition[name]} {name}"
        for quantile in re.findall(r"histogram_quantile\((.*)", expr, flags=re.S):
            assert re.search(r"by\s*\([^)]*\ble\b[^)]*\)\s*\(\s*rate\(\s*\w+_bucket\b", quantile), (where, quantile)


# --------------------------------------------------------------------------- Kubernetes resources

def mebibytes(quantity: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(Mi|Gi|M|G)", quantity)
    assert m, quantity
    factor = {"Mi": 1.0, "Gi": 1024.0, "M": 1e6 / 2**20, "G": 1e9 / 2**20}[m.group(2)]
    return float(m.group(1)) * factor


def test_sidecar_memory_sized_from_the_bench() -> None:
    """The limit leaves a quarter of headroom over the largest peak bench/README.md measured for
    ``atalaia check`` (a cold reference build); the request covers the idle daemon."""
    peaks = [float(m) for m in re.findall(r"^\| [^|]+ \| atalaia check[^|]*\|(?:[^|]*\|){3}\s*(\d+)\s*\|",
                                           BENCH_README.read_text(), flags=re.M)]
    assert peaks, "bench/README.md: no peak MB of atalaia check found"
    docs = [d for d in yaml.safe_load_all(DEPLOYMENT.read_text()) if d]
    container = next(c for d in docs for c in d["spec"]["template"]["spec"]["containers"] if c["name"] == "atalaia")
    res = container["resources"]
    peak_mib = max(peaks) * 1e6 / 2**20
    assert mebibytes(res["limits"]["memory"]) >= 1.25 * peak_mib, (res, max(peaks))
    assert mebibytes(res["requests"]["memory"]) >= 250, res

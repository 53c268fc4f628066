"""Configuration: valid examples parse, and every kind of mistake is reported with its path.

The contract (DESIGN.md, issue 2): ``atalaia validate`` reports *every* problem at once, each as
``path: message`` with the message in the one form ``must … got …``
(``models[0].detectors[2].alert: must be > 0, got -1``).
"""

from __future__ import annotations

import copy
import re
import textwrap
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from detectors.base import Context, Detector, Finding, Param, number, str_list
from detectors.errors import ConfigError
from detectors.registry import Registry
from monitor.config import Config, load_config, parse_config

REPO = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------- the DESIGN.md example

#: The "Configuration" example of DESIGN.md, verbatim.
DESIGN_EXAMPLE = """\
server: {listen: "0.0.0.0:9108"}
state_dir: ./atalaia-state
models:
  - name: credit-default
    schedule: {every: 5m}            # or {cron: "*/15 * * * *"}
    window: 1h
    predictions:                     # a directory (hive partitions), a file, or s3://bucket/prefix
      path: ./demo-data/predictions
      id: prediction_id
      timestamp: ts
      prediction: predicted_label
      score: score
      task: binary_classification    # multiclass_classification | regression
    ground_truth: {path: ./demo-data/labels, id: prediction_id, label: label, timestamp: ts, max_delay: 3d}
    features: {numeric: [income, age], categorical: [region]}
    sensitive: [sex, age_band]
    reference: {path: ./demo-data/reference.parquet}   # prediction columns (+ label, if any);
                                                       # or {start: ..., end: ...} or {rolling: 7d}
    detectors:
      - {type: psi, warn: 0.1, alert: 0.25}            # features: default all that apply
      - {type: ks, alpha: 0.01}
      - {type: fairness, attributes: [sex], metrics: [demographic_parity_difference]}
    alerts: {for: 2, routes: [team-chat]}
alerting:
  routes:
    team-chat: {type: slack, url: "${SLACK_WEBHOOK_URL}"}
"""

SECRET_URL = "https://hooks.slack.example/services/T000/B000/s3cr3t-t0ken-XYZ"


class _FairnessPlugin(Detector):
    """A third-party-style plugin standing in for ``fairness`` until the fairness issue lands.

    Registered through :class:`Registry`'s ``extra`` (the embedding hook), the way a plugin is.
    """

    name: ClassVar[str] = "fairness"
    kind: ClassVar = "fairness"
    params: ClassVar = {
        "features": Param(None, str_list),
        "attributes": Param(None, str_list),
        "metrics": Param(None, str_list),
        "min_group_rows": Param(30, number(ge=1, integer=True)),
        "warn": Param(0.1, number(gt=0)),
        "alert": Param(0.2, number(gt=0)),
        "min_rows": Param(100, number(ge=1, integer=True)),
    }

    def score(self, summary: Any, current: Any, *, context: Context) -> list[Finding]:
        return []


def registry_with_fairness() -> Registry:
    """The installed registry, plus ``fairness`` when no real one is registered yet."""
    if "fairness" in Registry().names():
        return Registry()
    return Registry(extra={"fairness": _FairnessPlugin})


def base_model(name: str = "m1", **changes: Any) -> dict[str, Any]:
    """A small valid model declaration; ``changes`` replace top-level keys."""
    model: dict[str, Any] = {
        "name": name,
        "schedule": {"every": "5m"},
        "window": "1h",
        "predictions": {"path": "preds", "id": "id", "timestamp": "ts", "prediction": "pred", "score": "score"},
        "features": {"numeric": ["x0", "x1"], "categorical": ["c"]},
        "reference": {"rolling": "7d"},
        "detectors": [{"type": "psi"}, {"type": "ks"}],
    }
    model.update(changes)
    return model


def problems_of(excinfo: pytest.ExceptionInfo[ConfigError]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for path, msg in excinfo.value.problems:
        out.setdefault(path, []).append(msg)
    return out


FORM = re.compile(r"^must\b.*\bgot\b", re.DOTALL)


# --------------------------------------------------------------------------- valid configurations


def test_design_example_parses_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "atalaia.yaml"
    path.write_text(DESIGN_EXAMPLE)

    cfg = load_config(path, env={"SLACK_WEBHOOK_URL": SECRET_URL}, registry=registry_with_fairness())

    assert cfg.server.host_port == ("0.0.0.0", 9108)
    (m,) = cfg.models
    assert m.name == "credit-default"
    assert m.schedule.every == timedelta(minutes=5) and m.schedule.cron is None
    assert m.window == timedelta(hours=1)
    assert m.predictions.id == "prediction_id" and m.predictions.timestamp == "ts"
    assert m.predictions.prediction == "predicted_label" and m.predictions.score == "score"
    assert m.predictions.task == "binary_classification"
    assert m.ground_truth is not None and m.ground_truth.max_delay == timedelta(days=3)
    assert m.ground_truth.label == "label"
    assert m.features.numeric == ["income", "age"] and m.features.categorical == ["region"]
    assert m.sensitive == ["sex", "age_band"]
    assert m.reference.path == "./demo-data/reference.parquet"
    assert [d.type for d in m.detectors] == ["psi", "ks", "fairness"]
    assert m.detectors[0].params == {"warn": 0.1, "alert": 0.25}
    assert m.detectors[1].params == {"alpha": 0.01}
    assert m.detectors[2].params == {"attributes": ["sex"], "metrics": ["demographic_parity_difference"]}
    assert m.alerts.for_ == 2 and m.alerts.routes == ["team-chat"]
    route = cfg.alerting.routes["team-chat"]
    assert route.type == "slack"
    assert route.url is not None and route.url.get_secret_value() == SECRET_URL
    # relative paths resolve against the file's folder, not the working directory
    assert cfg.resolve(m.predictions.path) == str((tmp_path / "demo-data" / "predictions").resolve())
    assert cfg.state_path == (tmp_path / "atalaia-state").resolve()


def test_design_example_with_cron_and_the_other_reference_kinds() -> None:
    data = yaml.safe_load(DESIGN_EXAMPLE)
    env = {"SLACK_WEBHOOK_URL": SECRET_URL}
    data["models"][0]["schedule"] = {"cron": "*/15 * * * *"}
    for ref in ({"start": "2026-11-01T00:00:00Z", "end": "2026-11-08"}, {"rolling": "7d"}):
        data["models"][0]["reference"] = ref
        cfg = parse_config(data, env=env, registry=registry_with_fairness())
        m = cfg.models[0]
        assert m.schedule.cron == "*/15 * * * *"
        assert m.schedule.longest_interval(start=datetime(2026, 11, 28, 10, tzinfo=UTC)) == timedelta(minutes=15)
        if "rolling" in ref:
            assert m.reference.rolling == timedelta(days=7)
        else:
            assert m.reference.start == datetime(2026, 11, 1, tzinfo=UTC)
            assert m.reference.end == datetime(2026, 11, 8, tzinfo=UTC)  # no offset: UTC


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_example_configs_validate(path: Path) -> None:
    names = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", path.read_text()))
    cfg = load_config(path, env={n: f"value-of-{n}" for n in names})
    assert cfg.models


def test_several_models_in_one_config(tmp_path: Path) -> None:
    data = {
        "models": [
            base_model("fraud", window="30m", schedule={"cron": "*/10 * * * *"}),
            base_model("churn", window="1d", reference={"path": "ref.parquet"}, schedule={"every": "1h"},
                       detectors=[{"type": "psi", "features": ["x0"], "warn": 0.2, "alert": 0.3}]),
            base_model("ltv", reference={"start": "2026-11-01", "end": "2026-11-02"}),
        ],
    }
    cfg = parse_config(data)
    assert [m.name for m in cfg.models] == ["fraud", "churn", "ltv"]
    assert cfg.model("churn").window == timedelta(days=1)
    assert cfg.model("fraud").schedule.cron == "*/10 * * * *"
    assert cfg.model("churn").detectors[0].params["features"] == ["x0"]
    assert cfg.model("ltv").reference.end == datetime(2026, 11, 2, tzinfo=UTC)
    with pytest.raises(KeyError, match="fraud, churn, ltv"):
        cfg.model("nope")


def test_env_interpolation_uses_the_injected_environment_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATALAIA_TEST_ONLY_IN_OS_ENV", "from-os")
    data = {
        "models": [base_model(predictions={"path": "s3://${BUCKET}/${PREFIX}/preds", "id": "id",
                                           "timestamp": "ts", "prediction": "pred"})],
    }
    cfg = parse_config(data, env={"BUCKET": "my-bucket", "PREFIX": "team-a"})
    assert cfg.models[0].predictions.path == "s3://my-bucket/team-a/preds"

    data["alerting"] = {"routes": {"r": {"type": "webhook", "url": "${ATALAIA_TEST_ONLY_IN_OS_ENV}"}}}
    with pytest.raises(ConfigError) as exc:
        parse_config(data, env={"BUCKET": "b", "PREFIX": "p"})
    assert problems_of(exc) == {
        "alerting.routes.r.url": ["must name a set environment variable, got unset ${ATALAIA_TEST_ONLY_IN_OS_ENV}"],
    }


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf_dir = tmp_path / "etc" / "atalaia"
    conf_dir.mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    abs_ref = tmp_path / "abs" / "ref.parquet"
    data = {
        "state_dir": "state",
        "models": [
            base_model("a", predictions={"path": "../../data/preds", "id": "id", "timestamp": "ts",
                                         "prediction": "pred"}, reference={"path": str(abs_ref)}),
            base_model("b", predictions={"path": "s3://bucket/prefix", "id": "id", "timestamp": "ts",
                                         "prediction": "pred"}, reference={"path": "./ref/reference.parquet"}),
        ],
    }
    (conf_dir / "atalaia.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.chdir(elsewhere)  # the working directory must not matter

    cfg = load_config(Path("..") / "etc" / "atalaia" / "atalaia.yaml")

    a, b = cfg.models
    assert cfg.resolve(a.predictions.path) == str((tmp_path / "data" / "preds").resolve())
    assert cfg.resolve(a.reference.path or "") == str(abs_ref)
    assert cfg.resolve(b.predictions.path) == "s3://bucket/prefix"
    assert cfg.resolve(b.reference.path or "") == str((conf_dir / "ref" / "reference.parquet").resolve())
    assert cfg.state_path == (conf_dir / "state").resolve()
    # an explicit base_dir wins over the file's folder
    cfg2 = load_config(conf_dir / "atalaia.yaml", base_dir=elsewhere)
    assert cfg2.resolve("preds") == str((elsewhere / "preds").resolve())


# --------------------------------------------------------------------------- secrets


def test_route_secrets_do_not_show_in_repr_or_dumps() -> None:
    data = {
        "models": [base_model(alerts={"for": 2, "routes": ["chat", "pager"]})],
        "alerting": {"routes": {
            "chat": {"type": "slack", "url": "${SLACK_WEBHOOK_URL}"},
            "pager": {"type": "pagerduty", "routing_key": "${PD_KEY}"},
        }},
    }
    pd_key = "pd-routing-key-0123456789abcdef"
    cfg = parse_config(data, env={"SLACK_WEBHOOK_URL": SECRET_URL, "PD_KEY": pd_key})

    assert cfg.alerting.routes["chat"].url.get_secret_value() == SECRET_URL  # type: ignore[union-attr]
    assert cfg.alerting.routes["pager"].routing_key.get_secret_value() == pd_key  # type: ignore[union-attr]
    for text in (repr(cfg), str(cfg), repr(cfg.alerting), repr(cfg.alerting.routes["chat"]),
                 cfg.model_dump_json(), str(cfg.model_dump())):
        assert SECRET_URL not in text and "s3cr3t" not in text
        assert pd_key not in text


def test_route_secrets_do_not_show_in_configuration_errors() -> None:
    """A mistake next to a secret must not print the secret (validate's output ends up in logs)."""
    data = {
        "models": [base_model()],
        "alerting": {"routes": {"chat": "${SLACK_WEBHOOK_URL}"}},  # a route must be a mapping
    }
    with pytest.raises(ConfigError) as exc:
        parse_config(data, env={"SLACK_WEBHOOK_URL": SECRET_URL})
    assert "alerting.routes.chat" in problems_of(exc)
    assert "s3cr3t" not in str(exc.value)
    assert all("s3cr3t" not in msg for _, msg in exc.value.problems)


# --------------------------------------------------------------------------- each kind of mistake

Mutate = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Mutate:
    """Set ``a.b[0].c`` in the config mapping to ``value``."""
    def mutate(data: dict[str, Any]) -> None:
        node: Any = data
        parts = re.findall(r"[^.\[\]]+|\[\d+\]", path)
        for part in parts[:-1]:
            node = node[int(part[1:-1])] if part.startswith("[") else node.setdefault(part, {})
        last = parts[-1]
        if last.startswith("["):
            node[int(last[1:-1])] = value
        else:
            node[last] = value
    return mutate


def _delete(path: str) -> Mutate:
    def mutate(data: dict[str, Any]) -> None:
        *head, last = path.split(".")
        node: Any = data
        for part in head:
            m = re.fullmatch(r"(\w+)\[(\d+)\]", part)
            node = node[m.group(1)][int(m.group(2))] if m else node[part]
        del node[last]
    return mutate


def _both(*fns: Mutate) -> Mutate:
    def mutate(data: dict[str, Any]) -> None:
        for fn in fns:
            fn(data)
    return mutate


def _valid() -> dict[str, Any]:
    return {
        "models": [base_model("m1", alerts={"for": 2, "routes": ["chat"]}), base_model("m2")],
        "alerting": {"routes": {"chat": {"type": "slack", "url": "${HOOK}"}}},
    }


ENV = {"HOOK": SECRET_URL}

# (id, mutation, path, substrings the message must contain, message must have the must…got… form)
MISTAKES: list[tuple[str, Mutate, str, list[str], bool]] = [
    ("duration_without_unit", _set("models[0].window", "60"), "models[0].window", ["got '60'", "unit"], True),
    ("duration_unknown_unit", _set("models[1].ground_truth", {"path": "l", "id": "id", "label": "y",
                                                               "timestamp": "ts", "max_delay": "3 days"}),
     "models[1].ground_truth.max_delay", ["got '3 days'"], True),
    ("duration_not_positive", _set("models[0].window", "0s"), "models[0].window", ["positive", "got '0s'"], True),
    ("negative_threshold", _set("models[0].detectors[1]", {"type": "ks", "alert": -1}),
     "models[0].detectors[1].alert", ["must be > 0, got -1"], True),
    ("alert_below_warn", _set("models[0].detectors[0]", {"type": "psi", "warn": 0.3, "alert": 0.2}),
     "models[0].detectors[0].alert", ["warn", "got 0.2"], True),
    ("alpha_out_of_range", _set("models[0].detectors[1]", {"type": "ks", "alpha": 1.5}),
     "models[0].detectors[1].alpha", ["got 1.5"], True),
    ("unknown_detector_param", _set("models[0].detectors[0]", {"type": "psi", "treshold": 1}),
     "models[0].detectors[0].treshold", ["got unknown 'treshold'", "warn"], True),
    ("unknown_detector_type", _set("models[1].detectors[0]", {"type": "psy"}),
     "models[1].detectors[0].type", ["got 'psy'", *Registry().names()], True),
    ("bad_cron_value", _set("models[0].schedule", {"cron": "61 * * * *"}),
     "models[0].schedule.cron", ["five-field", "got '61 * * * *'"], True),
    ("bad_cron_fields", _set("models[0].schedule", {"cron": "* * * *"}),
     "models[0].schedule.cron", ["five-field", "got '* * * *'"], True),
    ("schedule_every_and_cron", _set("models[0].schedule", {"every": "5m", "cron": "*/5 * * * *"}),
     "models[0].schedule", ["every", "cron"], True),
    ("schedule_neither", _set("models[0].schedule", {}), "models[0].schedule", ["every", "cron"], True),
    ("reference_no_kind", _set("models[0].reference", {}), "models[0].reference", ["got none"], True),
    ("reference_two_kinds", _set("models[0].reference", {"path": "r.parquet", "rolling": "7d"}),
     "models[0].reference", ["path", "rolling"], True),
    ("reference_start_without_end", _set("models[0].reference", {"start": "2026-11-01"}),
     "models[0].reference", ["start", "end"], True),
    ("reference_end_before_start", _set("models[0].reference", {"start": "2026-11-02", "end": "2026-11-01"}),
     "models[0].reference", ["after start"], True),
    ("reference_bad_time", _set("models[0].reference", {"start": "yesterday", "end": "2026-11-01"}),
     "models[0].reference.start", ["ISO-8601", "got 'yesterday'"], True),
    ("rolling_shorter_than_window", _set("models[0].reference", {"rolling": "30m"}),
     "models[0].reference.rolling", ["window"], True),
    ("unset_env_var", _set("alerting.routes.chat.url", "${NOT_SET_ANYWHERE}"),
     "alerting.routes.chat.url", ["got unset ${NOT_SET_ANYWHERE}"], True),
    ("unknown_alert_route", _set("models[0].alerts", {"for": 2, "routes": ["chat", "pager"]}),
     "models[0].alerts.routes[1]", ["chat", "got 'pager'"], True),
    ("alerts_for_zero", _set("models[0].alerts", {"for": 0}), "models[0].alerts.for", ["must be >= 1, got 0"], True),
    ("unknown_route_type", _set("alerting.routes.chat.type", "email"),
     "alerting.routes.chat.type", ["slack", "got 'email'"], True),
    ("duplicate_model_names", _set("models[1].name", "m1"), "models[1].name", ["unique", "got 'm1'"], True),
    ("bad_model_name", _set("models[1].name", "has space"), "models[1].name", ["got 'has space'"], True),
    ("detector_feature_unknown", _set("models[0].detectors[0]", {"type": "psi", "features": ["x0", "income"]}),
     "models[0].detectors[0].features", ["got 'income'"], True),
    ("feature_both_kinds", _set("models[0].features", {"numeric": ["x0"], "categorical": ["x0"]}),
     "models[0].features", ["x0"], True),
    ("bad_task", _set("models[0].predictions.task", "ranking"), "models[0].predictions.task",
     ["regression", "got 'ranking'"], True),
    ("bad_listen", _set("server", {"listen": "localhost"}), "server.listen", ["HOST:PORT", "got 'localhost'"], True),
    ("bad_listen_ipv6_unbracketed", _set("server", {"listen": "::1:9108"}), "server.listen",
     ["[::1]:9108", "got '::1:9108'"], True),
    ("bad_listen_not_ipv6_in_brackets", _set("server", {"listen": "[localhost]:9108"}), "server.listen",
     ["got '[localhost]:9108'"], True),
    ("huge_duration", _set("models[0].window", "99999999999d"), "models[0].window",
     ["at most 36500d", "got '99999999999d'"], True),
    ("cron_never_fires", _set("models[0].schedule", {"cron": "0 0 31 2 *"}), "models[0].schedule.cron",
     ["fires", "got '0 0 31 2 *'"], True),
    ("bad_cron_weekday", _set("models[0].schedule", {"cron": "0 9 * * 8"}), "models[0].schedule.cron",
     ["five-field", "got '0 9 * * 8'"], True),
    ("duplicate_detector", _set("models[0].detectors", [{"type": "psi"}, {"type": "psi", "features": ["x1"]}]),
     "models[0].detectors[1]", ["models[0].detectors[0]", "x1", "got a second 'psi'"], True),
    ("bad_log_format", _set("log", {"format": "xml"}), "log.format", ["json", "got 'xml'"], True),
    ("no_detectors", _set("models[0].detectors", []), "models[0].detectors", ["at least 1", "got 0"], True),
    # key-level mistakes: documented wording ("is required" / "is not a known key")
    ("unknown_key", _set("models[0].colour", "red"), "models[0].colour", ["not a known key"], False),
    ("unknown_top_level_key", _set("modles", []), "modles", ["not a known key"], False),
    ("missing_required_key", _delete("models[1].predictions"), "models[1].predictions", ["is required"], False),
    ("missing_nested_key", _delete("models[0].predictions.timestamp"), "models[0].predictions.timestamp",
     ["is required"], False),
]


@pytest.mark.parametrize(("mutate", "path", "needles", "form"),
                         [pytest.param(*case[1:], id=case[0]) for case in MISTAKES])
def test_each_kind_of_mistake_is_reported_with_its_path(mutate: Mutate, path: str, needles: list[str],
                                                        form: bool) -> None:
    data = _valid()
    parse_config(copy.deepcopy(data), env=ENV)  # the starting point is valid
    mutate(data)
    with pytest.raises(ConfigError) as exc:
        parse_config(data, env=ENV)
    found = problems_of(exc)
    assert path in found, f"expected a problem at {path}, got {exc.value.problems}"
    (msg,) = found[path]
    for needle in needles:
        assert needle in msg, f"{path}: {msg!r} should mention {needle!r}"
    if form:
        assert FORM.match(msg), f"{path}: {msg!r} is not in the 'must … got …' form"
    assert f"{path}: {msg}" in str(exc.value)


def test_many_mistakes_are_reported_at_once_in_one_error() -> None:
    data = _valid()
    m0, m1 = data["models"]
    m0["window"] = "1 hour"                                                    # wrong duration
    m0["detectors"] = [{"type": "psi", "alert": -1},                           # negative threshold
                       {"type": "ks", "warn": 0.3, "alert": 0.2},              # alert < warn
                       {"type": "histogram"}]                                  # unknown type
    m0["colour"] = "red"                                                       # unknown key
    del m1["features"]                                                         # missing key
    m1["schedule"] = {"cron": "every day"}                                     # bad cron
    m1["reference"] = {}                                                       # no reference kind
    data["alerting"]["routes"]["chat"]["url"] = "${UNSET_HOOK}"                # unset variable

    with pytest.raises(ConfigError) as exc:
        parse_config(data, env=ENV)

    found = problems_of(exc)
    expected = {
        "models[0].window", "models[0].detectors[0].alert", "models[0].detectors[1].alert",
        "models[0].detectors[2].type", "models[0].colour", "models[1].features", "models[1].reference",
        "alerting.routes.chat.url",
    }
    assert expected <= set(found), f"missing: {expected - set(found)}; got {exc.value.problems}"
    assert any(p.startswith("models[1].schedule") for p in found)
    assert found["models[0].detectors[0].alert"] == ["must be > 0, got -1"]
    assert len(exc.value.problems) == len(set(exc.value.problems))  # no duplicates
    text = str(exc.value)
    assert text.splitlines()[0] == f"{len(exc.value.problems)} configuration problems"
    assert "models[0].detectors[0].alert: must be > 0, got -1" in text


def test_semantic_mistakes_are_reported_together_with_structural_ones() -> None:
    """Every problem at once: an unknown route, a duplicate name or an unknown detector feature must
    not wait until an unrelated typo elsewhere has been fixed."""
    data = _valid()
    data["server"] = {"listen": "localhost"}                                    # structural
    data["models"][0]["window"] = "5x"                                          # structural
    data["models"][1]["name"] = "m1"                                            # duplicate name
    data["models"][1]["alerts"] = {"for": 2, "routes": ["pager"]}               # unknown route
    data["models"][1]["detectors"] = [{"type": "psi", "features": ["income"]}]  # unknown column

    with pytest.raises(ConfigError) as exc:
        parse_config(data, env=ENV)

    found = problems_of(exc)
    assert {"server.listen", "models[0].window", "models[1].name", "models[1].alerts.routes[0]",
            "models[1].detectors[0].features"} <= set(found), exc.value.problems


# --------------------------------------------------------------------------- files


def test_invalid_yaml_is_reported_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("models:\n  - name: m1\n    window: [1h\n    schedule: {every: 5m}\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert exc.value.source == str(path)
    (problem,) = exc.value.problems
    assert re.search(r"line [45]\b", problem[1]), problem
    assert "must be valid YAML" in problem[1]
    assert str(exc.value).startswith(f"{path}: 1 configuration problem")


def test_bad_indentation_reports_the_first_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("state_dir: s\nmodels:\n  - name: m1\n   window: 1h\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    (problem,) = exc.value.problems
    assert "line 4" in problem[1], problem


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_unreadable_file_is_a_config_error(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "nope.yaml"
    if kind == "directory":
        path.mkdir()
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert exc.value.source == str(path)
    (problem,) = exc.value.problems
    assert "cannot read the configuration" in problem[1]
    assert str(path) in str(exc.value)


@pytest.mark.parametrize("text", ["", "- just\n- a list\n", "42\n"], ids=["empty", "list", "scalar"])
def test_a_file_that_is_not_a_mapping_is_a_config_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    (problem,) = exc.value.problems
    assert FORM.match(problem[1]), problem


def test_config_error_is_a_value_error_listing_every_problem() -> None:
    with pytest.raises(ValueError) as exc:
        parse_config({"models": [{"name": "m", "window": "1h"}]})
    assert isinstance(exc.value, ConfigError)
    assert {p for p, _ in exc.value.problems} == {
        "models[0].schedule", "models[0].predictions", "models[0].features", "models[0].reference",
        "models[0].detectors"}
    assert isinstance(parse_config({"models": [base_model()]}), Config)


# --------------------------------------------------------------------------- cron schedules (crontab(5) meaning)

_CRON_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_CRON_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")


def _cron_field(text: str, lo: int, hi: int, names: tuple[str, ...] = (), offset: int = 0) -> set[int]:
    """One crontab(5) field as the set of values it selects: ``*``, N, N-M, lists and ``/step``."""
    def value(v: str) -> int:
        return names.index(v.lower()) + offset if v.lower() in names else int(v)

    out: set[int] = set()
    for item in text.split(","):
        span, _, step = item.partition("/")
        if span == "*":
            a, b = lo, hi
        elif "-" in span:
            a, b = (value(v) for v in span.split("-"))
        else:
            a = b = value(span)
        out |= set(range(a, b + 1, int(step) if step else 1))
    return out


def plain_cron(expr: str, start: datetime, end: datetime) -> list[datetime]:
    """Every firing of ``expr`` in ``[start, end)`` by crontab(5)'s own rules (an independent oracle):
    weekday 0 and 7 are Sunday, and when both day fields are restricted either one matching fires."""
    minute, hour, dom, month, dow = expr.split()
    mins, hours = _cron_field(minute, 0, 59), _cron_field(hour, 0, 23)
    days, months = _cron_field(dom, 1, 31), _cron_field(month, 1, 12, _CRON_MONTHS, 1)
    weekdays = {d % 7 for d in _cron_field(dow, 0, 7, _CRON_DAYS)}
    either = not dom.startswith("*") and not dow.startswith("*")
    out: list[datetime] = []
    day = start.replace(hour=0, minute=0, second=0, microsecond=0)
    while day < end:
        by_dom, by_dow = day.day in days, (day.weekday() + 1) % 7 in weekdays
        if day.month in months and ((by_dom or by_dow) if either else (by_dom and by_dow)):
            out += [t for h in sorted(hours) for m in sorted(mins)
                    if start <= (t := day.replace(hour=h, minute=m)) < end]
        day += timedelta(days=1)
    return out


def trigger_firings(expr: str, start: datetime, end: datetime) -> list[datetime]:
    from monitor.config import ScheduleConfig

    from monitor.cron import firings

    return firings(ScheduleConfig(cron=expr).trigger(), start, end)


CRON_EXPRESSIONS = [
    "0 9 * * 1-5", "30 18 * * 0", "0 0 * * 7", "15 10 * * mon,wed,fri", "0 12 * * SAT,sun", "*/20 9-17 * * 1-5",
    "0 */6 * * */2", "5 4 1,15 * 5", "0 8 * * 5-7", "0 0 13 * fri", "45 23 * feb 1", "0 0 */10 * *",
    "10 3 * * 0,3-4", "0 7 * * mon-fri/2", "*/15 9-17 * * *", "0 0 29 2 *",
]


@pytest.mark.parametrize("expr", CRON_EXPRESSIONS)
@pytest.mark.parametrize("start", [datetime(2026, 11, 26, 13, 7, tzinfo=UTC), datetime(2028, 2, 20, 23, 50, tzinfo=UTC)],
                         ids=["nov-2026", "feb-2028-leap"])
def test_cron_fires_when_plain_cron_would(expr: str, start: datetime) -> None:
    end = start + timedelta(days=100)
    expected = plain_cron(expr, start, end)
    assert expected or expr == "0 0 29 2 *", "the oracle found no firing: pick another expression or span"
    assert trigger_firings(expr, start, end) == expected


def test_cron_weekdays_count_from_sunday_as_in_crontab() -> None:
    saturday = datetime(2026, 11, 28, 12, tzinfo=UTC)
    assert saturday.strftime("%a") == "Sat"

    def first(expr: str) -> str:
        return trigger_firings(expr, saturday, saturday + timedelta(days=8))[0].strftime("%a %d %H:%M")

    assert first("0 9 * * 1-5") == "Mon 30 09:00"      # APScheduler's own from_crontab: Tue 01
    assert first("0 9 * * 0") == first("0 9 * * 7") == first("0 9 * * sun") == "Sun 29 09:00"
    assert first("0 13 * * 6") == first("0 13 * * SAT") == "Sat 28 13:00"
    assert {t.strftime("%a") for t in trigger_firings("0 9 * * 1-5", saturday, saturday + timedelta(days=14))} \
        == {"Mon", "Tue", "Wed", "Thu", "Fri"}


@pytest.mark.parametrize(("expr", "longest"), [
    ("*/15 9-17 * * *", timedelta(hours=15, minutes=15)),   # 17:45 .. 09:00 the next day
    ("*/5 * * * *", timedelta(minutes=5)),
    ("30 2 * * *", timedelta(days=1)),
    ("0 9 * * 1-5", timedelta(days=3)),                      # Friday .. Monday
    ("0 9 * * 1", timedelta(days=7)),
    ("0 */6 * * */2", timedelta(hours=30)),                  # Sun 18:00 .. Tue 00:00
    ("0 0 1 * *", timedelta(days=31)),                       # Dec 1 .. Jan 1
])
def test_cron_interval_is_the_longest_gap_between_firings_over_the_next_week(expr: str, longest: timedelta) -> None:
    from monitor.config import ScheduleConfig

    start = datetime(2026, 11, 28, 10, tzinfo=UTC)
    got = ScheduleConfig(cron=expr).longest_interval(start=start)
    assert got == longest
    # against the oracle: every gap between the firings from start's day through 7 days on, and the next
    firings = plain_cron(expr, start.replace(hour=0), start + timedelta(days=40))
    day8 = start.replace(hour=0) + timedelta(days=8)
    pairs = [(a, b) for a, b in zip(firings, firings[1:], strict=False) if a < day8]
    assert max(b - a for a, b in pairs) == got
    assert ScheduleConfig(every="90s").longest_interval(start=start) == timedelta(seconds=90)


# --------------------------------------------------------------------------- duplicate series, cross-checks

def test_a_detector_type_twice_on_one_model_with_overlapping_targets_is_refused() -> None:
    data = _valid()
    data["models"][0]["detectors"] = [
        {"type": "psi"},                                  # every numeric and categorical column, score, pred
        {"type": "ks", "features": ["x0"]},
        {"type": "psi", "features": ["x1"], "warn": 0.05, "alert": 0.1},  # x1 again: duplicate series
        {"type": "ks", "features": ["x1"]},               # disjoint from the first ks: fine
        {"type": "multivariate", "features": ["x0"]},
        {"type": "multivariate", "features": ["x1"]},     # one target whatever its features: duplicate
    ]
    data["models"][1]["detectors"] = [{"type": "ks", "features": ["x0"]}, {"type": "ks", "features": ["x0"]}]
    data["models"][1]["window"] = "1 hour"                # an unrelated mistake, reported as well
    with pytest.raises(ConfigError) as exc:
        parse_config(data, env=ENV)
    found = problems_of(exc)
    assert set(found) == {"models[0].detectors[2]", "models[0].detectors[5]", "models[1].detectors[1]",
                          "models[1].window"}, exc.value.problems
    (msg,) = found["models[0].detectors[2]"]
    assert "models[0].detectors[0]" in msg and "x1" in msg and FORM.match(msg), msg
    assert "models[0].detectors[4]" in found["models[0].detectors[5]"][0]
    assert "x0" in found["models[1].detectors[1]"][0]

    # disjoint features of one type, and one type per model, are fine
    ok = _valid()
    ok["models"][0]["detectors"] = [{"type": "psi", "features": ["x0", "c"]}, {"type": "psi", "features": ["x1"]},
                                    {"type": "ks"}]
    parse_config(ok, env=ENV)


def test_cross_checks_are_reported_for_a_model_that_has_other_errors_too() -> None:
    data = _valid()
    m = data["models"][0]
    m["window"] = "5x"                                                   # a schema error in the same model
    m["predictions"] = {"path": "p", "id": "id", "timestamp": "ts", "prediction": "pred", "task": "ranking"}
    m["alerts"] = {"for": 2, "routes": ["pager"]}                        # unknown route
    m["detectors"] = [{"type": "psi", "features": ["x0", "income"]}, {"type": "psi"}]  # unknown column, duplicate
    m["sensitive"] = ["ts"]                                              # the timestamp column
    with pytest.raises(ConfigError) as exc:
        parse_config(data, env=ENV)
    found = problems_of(exc)
    assert {"models[0].window", "models[0].predictions.task", "models[0].alerts.routes[0]",
            "models[0].detectors[0].features", "models[0].detectors[1]", "models[0].sensitive[0]"} <= set(found), \
        exc.value.problems


def test_a_rolling_reference_shorter_than_the_window_is_reported_beside_other_errors() -> None:
    data = _valid()
    data["models"][0] |= {"window": "2h", "reference": {"rolling": "1h"}, "colour": "red"}
    with pytest.raises(ConfigError) as exc:
        parse_config(data, env=ENV)
    assert {"models[0].reference.rolling", "models[0].colour"} <= set(problems_of(exc))


# --------------------------------------------------------------------------- state_dir and listen

@pytest.mark.parametrize("layout", ["under_a_file", "is_a_file"])
def test_a_state_dir_that_cannot_be_a_folder_is_a_config_problem(tmp_path: Path, layout: str) -> None:
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    state_dir = str(afile / "state") if layout == "under_a_file" else str(afile)
    data = {"state_dir": state_dir, "models": [base_model()]}
    with pytest.raises(ConfigError) as exc:
        parse_config(data)
    (msg,) = problems_of(exc)["state_dir"]
    assert FORM.match(msg) and repr(state_dir) in msg and "not a folder" in msg, msg
    # a folder that does not exist yet (under one that does) is fine: the daemon creates it
    parse_config({"state_dir": str(tmp_path / "new" / "state"), "models": [base_model()]})


def test_relative_state_dir_is_checked_against_the_config_folder(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("a file where the state folder should be")
    (tmp_path / "atalaia.yaml").write_text(yaml.safe_dump({"state_dir": "state", "models": [base_model()]}))
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path / "atalaia.yaml")
    assert "state_dir" in problems_of(exc)


def test_listen_addresses() -> None:
    from monitor.config import parse_listen

    assert parse_listen("0.0.0.0:9108") == ("0.0.0.0", 9108)
    assert parse_listen("localhost:0") == ("localhost", 0)
    assert parse_listen("[::1]:9108") == ("::1", 9108)
    assert parse_listen("[::]:80") == ("::", 80)
    assert parse_listen(":9108") == ("0.0.0.0", 9108)
    for bad in ("localhost", "9108", "host:99999", "::1:9108", "[::1]", "[::1:9108", "[127.0.0.1]:9108",
                "host:port", "a b:1"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            parse_listen(bad)
    cfg = parse_config({"server": {"listen": "[::1]:9200"}, "models": [base_model()]})
    assert cfg.server.host_port == ("::1", 9200)


def test_alert_routes_warning_names_the_configured_routes() -> None:
    from monitor.config import alert_routes_warning

    cfg = parse_config(_valid(), env=ENV)
    warning = alert_routes_warning(cfg)
    assert warning is not None
    assert "chat" in warning and "not deliver" in warning and "deploy/prometheus" in warning
    assert (REPO / "deploy" / "prometheus" / "atalaia-rules.yml").is_file()
    assert alert_routes_warning(parse_config({"models": [base_model()]})) is None


def test_ground_truth_is_warned_about_while_no_detector_reads_labels() -> None:
    from monitor.config import config_warnings

    plain = base_model()
    labelled = base_model("m2", ground_truth={"path": "labels", "id": "id", "label": "y", "timestamp": "ts"})
    assert config_warnings(parse_config({"models": [plain]})) == []
    warnings = config_warnings(parse_config({"models": [plain, labelled]}))
    assert warnings == ["models[1].ground_truth (m2): accepted but not read: this release has no accuracy or "
                        "fairness detector that uses labels"]


# --------------------------------------------------------------------------- empty paths and repeated keys

#: every setting that names a file or folder, as a change to ``base_model()`` and the key path it is reported at
PATH_SETTINGS = [
    ("predictions.path", "models[0].predictions.path"),
    ("ground_truth.path", "models[0].ground_truth.path"),
    ("reference.path", "models[0].reference.path"),
    ("state_dir", "state_dir"),
]


def _config_with_path(key: str, value: str) -> dict[str, Any]:
    model = base_model(ground_truth={"path": "labels", "id": "id", "label": "y", "timestamp": "ts"})
    data: dict[str, Any] = {"state_dir": "state", "models": [model]}
    if key == "state_dir":
        data["state_dir"] = value
    else:
        section, _ = key.split(".")
        model[section] = {"path": value} if section == "reference" else model[section] | {"path": value}
    model["window"] = "an hour"  # an unrelated mistake, reported too
    return data


def _path_problems(tmp_path: Path, key: str, where: str, value: str) -> dict[str, list[str]]:
    """The problems of a configuration with ``value`` at ``key`` and a bad window: exactly those two."""
    path = tmp_path / "atalaia.yaml"
    path.write_text(yaml.safe_dump(_config_with_path(key, value)))
    with pytest.raises(ConfigError) as exc:
        load_config(path, env={})
    found = problems_of(exc)
    assert set(found) == {where, "models[0].window"}, exc.value.problems
    return found


@pytest.mark.parametrize("value", ["", "   ", "\t"], ids=["empty", "spaces", "tab"])
@pytest.mark.parametrize(("key", "where"), PATH_SETTINGS, ids=[k for k, _ in PATH_SETTINGS])
def test_an_empty_or_blank_path_is_a_config_error_beside_other_errors(tmp_path: Path, key: str, where: str,
                                                                     value: str) -> None:
    """An empty path would resolve to the configuration's own folder, read recursively as the sink."""
    found = _path_problems(tmp_path, key, where, value)
    (msg,) = found[where]
    assert FORM.match(msg) and msg.startswith("must not be empty") and msg.endswith(f"got {value!r}"), msg


def test_a_path_an_environment_variable_leaves_empty_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "atalaia.yaml"
    path.write_text(textwrap.dedent("""\
        state_dir: "${STATE}"
        models:
          - name: m
            schedule: {every: 5m}
            window: 1h
            predictions: {path: "${PREDS_PATH}", id: id, timestamp: ts, prediction: y}
            features: {numeric: [x]}
            reference: {path: "${REF}/ref.parquet"}
            detectors: [{type: psi, alert: -1}]
        """))
    with pytest.raises(ConfigError) as exc:
        load_config(path, env={"PREDS_PATH": "", "STATE": " ", "REF": "."})
    assert problems_of(exc) == {
        "models[0].predictions.path": ["must not be empty, got '' (from '${PREDS_PATH}')"],
        "state_dir": ["must not be empty or only whitespace, got ' ' (from '${STATE}')"],
        "models[0].detectors[0].alert": problems_of(exc)["models[0].detectors[0].alert"],
    }
    # an unset variable is said once, as unset (not again as an empty path)
    with pytest.raises(ConfigError) as exc:
        load_config(path, env={"STATE": "state", "REF": "."})
    assert problems_of(exc)["models[0].predictions.path"] == [
        "must name a set environment variable, got unset ${PREDS_PATH}"]
    # set to a path, it loads
    path.write_text(path.read_text().replace("alert: -1", "alert: 0.3"))
    cfg = load_config(path, env={"PREDS_PATH": "preds", "STATE": "state", "REF": "."})
    assert cfg.resolve(cfg.models[0].predictions.path) == str((tmp_path / "preds").resolve())


REPEATED_KEYS = """\
state_dir: ./state
models:
  - name: m
    schedule: {every: 5m}
    window: 1h
    predictions: {path: ./preds, id: id, timestamp: ts, prediction: y}
    window: 7d
    features: {numeric: [x], numeric: [z]}
    reference: {rolling: 7d}
    detectors: [{type: psi, warn: -1}]
state_dir: ./other-state
"""


def test_a_repeated_key_is_reported_with_both_lines_beside_other_errors(tmp_path: Path) -> None:
    path = tmp_path / "atalaia.yaml"
    path.write_text(REPEATED_KEYS)
    with pytest.raises(ConfigError) as exc:
        load_config(path, env={})
    found = problems_of(exc)
    assert found["state_dir"] == ["must be given once in its mapping, got it on lines 1 and 11 "
                                  "(the last would silently win)"]
    assert found["models[0].window"] == ["must be given once in its mapping, got it on lines 5 and 7 "
                                         "(the last would silently win)"]
    assert found["models[0].features.numeric"] == [
        "must be given once in its mapping, got it at line 8, column 16 and line 8, column 30 "
        "(the last would silently win)"]
    assert "models[0].detectors[0].warn" in found  # the other mistakes are reported in the same error
    assert all(FORM.match(msg) for msgs in found.values() for msg in msgs)
    # a file with only repeated keys is refused too (it would otherwise load, the last value winning)
    path.write_text(REPEATED_KEYS.replace("warn: -1", "warn: 0.1"))
    with pytest.raises(ConfigError) as exc:
        load_config(path, env={})
    assert set(problems_of(exc)) == {"state_dir", "models[0].window", "models[0].features.numeric"}


def test_keys_merged_in_with_yaml_merge_may_be_overridden(tmp_path: Path) -> None:
    path = tmp_path / "atalaia.yaml"
    path.write_text(textwrap.dedent("""\
        models:
          - &base
            name: a
            schedule: {every: 5m}
            window: 1h
            predictions: {path: ./preds, id: id, timestamp: ts, prediction: y}
            features: {numeric: [x]}
            reference: {rolling: 7d}
            detectors: [{type: psi}]
          - <<: *base
            name: b
            window: 2h
        """))
    cfg = load_config(path, env={})
    assert [(m.name, m.window) for m in cfg.models] == [("a", timedelta(hours=1)), ("b", timedelta(hours=2))]


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_a_config_without_repeated_keys_loads_as_before(path: Path) -> None:
    names = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", path.read_text()))
    env = {n: f"value-of-{n}" for n in names}
    expected = parse_config(yaml.safe_load(path.read_text()), env=env, base_dir=str(path.parent.resolve()))
    assert load_config(path, env=env) == expected


def test_validate_exits_2_naming_empty_paths_and_repeated_keys(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    import io

    from monitor.cli import main

    path = tmp_path / "atalaia.yaml"
    path.write_text(REPEATED_KEYS.replace("path: ./preds", 'path: ""'))
    capsys.readouterr()
    out = io.StringIO()
    assert main(["validate", "--config", str(path)], stdout=out) == 2
    err = capsys.readouterr().err
    assert out.getvalue() == ""
    assert err.startswith(f"atalaia: {path}: 5 configuration problems\n"), err
    for line in ("  state_dir: must be given once in its mapping, got it on lines 1 and 11",
                 "  models[0].window: must be given once in its mapping, got it on lines 5 and 7",
                 "  models[0].predictions.path: must not be empty, got ''",
                 "  models[0].detectors[0].warn: "):
        assert line in err, err


@pytest.mark.parametrize("value", ["s3://", "s3:///", "s3:// "], ids=["bare", "slash", "blank"])
@pytest.mark.parametrize(("key", "where"), PATH_SETTINGS[:3], ids=[k for k, _ in PATH_SETTINGS[:3]])
def test_a_uri_without_a_bucket_is_a_config_error_beside_other_errors(tmp_path: Path, key: str, where: str,
                                                                     value: str) -> None:
    """``s3://`` (a ``${BUCKET}`` left empty in ``s3://${BUCKET}``) names nothing to list: said at load,
    with the other problems, instead of an unreachable sink on every run."""
    found = _path_problems(tmp_path, key, where, value)
    assert found[where] == [f"names no bucket or host after 's3://', got {value!r}"]


def test_blank_column_names_are_config_errors_each_with_its_path(tmp_path: Path) -> None:
    """A column name of spaces (a ``${COLUMN}`` set to ' ') matches no column any writer meant; every
    such name is reported with its path, together."""
    model = base_model()
    model["predictions"] = model["predictions"] | {"id": "  "}
    model["features"] = {"numeric": ["x", " "], "categorical": ["\t"]}
    path = tmp_path / "atalaia.yaml"
    path.write_text(yaml.safe_dump({"state_dir": "state", "models": [model]}))
    with pytest.raises(ConfigError) as exc:
        load_config(path, env={})
    found = problems_of(exc)
    assert found["models[0].predictions.id"] == ["must not be empty or only whitespace, got '  '"]
    assert found["models[0].features.numeric[1]"] == ["must not be empty or only whitespace, got ' '"]
    assert found["models[0].features.categorical[0]"] == ["must not be empty or only whitespace, got '\\t'"]
    model["features"] = {"numeric": ["x ", "y"]}  # a trailing space is a name a writer can give
    model["predictions"] = model["predictions"] | {"id": "id"}
    path.write_text(yaml.safe_dump({"state_dir": "state", "models": [model]}))
    assert load_config(path, env={}).models[0].features.numeric == ["x ", "y"]

"""Configuration: YAML, validated once, every problem reported with its path.

>>> cfg = parse_config({"models": [{"name": "m", "schedule": {"every": "5m"}, "window": "1h",
...     "predictions": {"path": "p", "id": "id", "timestamp": "ts", "prediction": "y"},
...     "features": {"numeric": ["x"]}, "reference": {"rolling": "7d"},
...     "detectors": [{"type": "psi"}]}]})
>>> cfg.models[0].window
datetime.timedelta(seconds=3600)
>>> parse_config({"models": [{"name": "m", "window": "1h"}]})
Traceback (most recent call last):
...
detectors.errors.ConfigError: 5 configuration problems
  models[0].schedule: is required
  models[0].predictions: is required
  models[0].features: is required
  models[0].reference: is required
  models[0].detectors: is required
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from detectors.base import Detector
from detectors.errors import ConfigError, ParameterError
from detectors.registry import Registry

from .columns import Columns
from .durations import format_duration, parse_duration, parse_time

if TYPE_CHECKING:
    from apscheduler.triggers.base import BaseTrigger

__all__ = ["Config", "ModelConfig", "load_config", "parse_config", "parse_listen", "alert_routes_warning", "config_warnings", "Duration"]

Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
Time = Annotated[datetime, BeforeValidator(parse_time)]

#: how long after its last modification a Parquet file without a footer is taken as still being written
#: (left for a later run) rather than corrupt; unset: ``monitor.sources.parquet.IN_PROGRESS_SECONDS`` (5m)
InProgressGrace = Annotated[timedelta | None, BeforeValidator(functools.partial(parse_duration, zero=True))]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` as ``(host, port)``: the check of ``server.listen`` and of ``--listen``.

    An IPv6 host goes in brackets; an empty host means every IPv4 address.

    >>> parse_listen("127.0.0.1:9108"), parse_listen("[::1]:9108"), parse_listen(":9108")
    (('127.0.0.1', 9108), ('::1', 9108), ('0.0.0.0', 9108))
    >>> parse_listen("localhost")
    Traceback (most recent call last):
    ...
    ValueError: must be HOST:PORT (an IPv6 host in brackets, [::1]:9108), got 'localhost'
    """
    form = "must be HOST:PORT (an IPv6 host in brackets, [::1]:9108)"
    if not isinstance(text, str):
        raise ValueError(f"{form}, got {text!r}")
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{form}, got {text!r}")
    if host.startswith("[") or host.endswith("]"):
        inner = host[1:-1]
        try:
            ok = host.startswith("[") and host.endswith("]") and ipaddress.ip_address(inner).version == 6
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"{form}, got {text!r} (not an IPv6 address in brackets)")
        return inner, int(port)
    if ":" in host or any(c.isspace() or c in "[]/" for c in host):
        raise ValueError(f"{form}, got {text!r}")
    return host or "0.0.0.0", int(port)


class ServerConfig(_Strict):
    listen: str = "0.0.0.0:9108"
    #: at most this many distinct ``group`` label values per model; more is refused with an error
    max_groups: int = Field(100, ge=1)

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        parse_listen(v)
        return v

    @property
    def host_port(self) -> tuple[str, int]:
        return parse_listen(self.listen)


class LogConfig(_Strict):
    format: Literal["text", "json"] = "text"
    level: Literal["debug", "info", "warning", "error"] = "info"


class StorageConfig(_Strict):
    """Object-store access (``s3://`` paths); credentials come from the usual AWS variables."""

    endpoint_url: str | None = None
    region: str | None = None
    anonymous: bool = False
    connect_timeout: Duration = timedelta(seconds=10)
    request_timeout: Duration = timedelta(seconds=30)


class ScheduleConfig(_Strict):
    every: Duration | None = None
    #: five-field crontab(5) expression, UTC; weekdays as cron counts them (0 and 7 Sunday, 1 Monday)
    cron: str | None = None

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        if v is not None:
            from .cron import crontab_trigger  # APScheduler is imported by the daemon, not by every command

            try:
                trigger = crontab_trigger(v)
            except ValueError as exc:
                raise ValueError(f"must be a five-field crontab expression, got {v!r} ({exc})") from None
            if trigger.get_next_fire_time(None, datetime(2026, 1, 1, tzinfo=UTC)) is None:
                raise ValueError(f"must be a crontab expression that fires, got {v!r} (it never does)")
        return v

    @model_validator(mode="after")
    def _one(self) -> ScheduleConfig:
        if (self.every is None) == (self.cron is None):
            raise ValueError(f"must give exactly one of 'every' or 'cron', got {'both' if self.every else 'neither'}")
        return self

    def trigger(self) -> BaseTrigger:
        """The APScheduler trigger (UTC): an interval, or the cron expression with crontab(5) meaning."""
        from apscheduler.triggers.interval import IntervalTrigger

        from .cron import crontab_trigger

        if self.every is not None:
            return IntervalTrigger(seconds=self.every.total_seconds(), timezone=UTC)
        assert self.cron is not None
        return crontab_trigger(self.cron)

    def longest_interval(self, *, start: datetime) -> timedelta:
        """The interval; for cron, the longest gap between consecutive firings over the 7 days from
        ``start`` (so a schedule idle at night reports the night)."""
        if self.every is not None:
            return self.every
        assert self.cron is not None
        from .cron import longest_gap

        return longest_gap(self.cron, start=start) or timedelta(days=366)


Task = Literal["binary_classification", "multiclass_classification", "regression"]


def _not_blank(value: str) -> str:
    """A path or column setting: never empty or only whitespace, also after ``${VAR}`` substitution
    (an empty path would resolve to the configuration's own folder, read recursively as the sink; a
    blank column name matches no column any writer meant).

    >>> _not_blank("./preds")
    './preds'
    >>> _not_blank("  ")
    Traceback (most recent call last):
    ...
    ValueError: must not be empty or only whitespace, got '  '
    """
    if not value.strip():
        raise ValueError(f"must not be empty{' or only whitespace' if value else ''}, got {value!r}")
    return value


#: a column name: never empty or only whitespace (such a name matches no column any writer meant)
ColumnName = Annotated[str, AfterValidator(_not_blank)]


def _path(value: str) -> str:
    """A file or folder setting: not blank (:func:`_not_blank`), and a URI names what follows its scheme.

    >>> _path("s3://preds/model-a")
    's3://preds/model-a'
    >>> _path("s3:///")
    Traceback (most recent call last):
    ...
    ValueError: names no bucket or host after 's3://', got 's3:///'
    """
    _not_blank(value)
    scheme, sep, rest = value.partition("://")
    if sep and not rest.strip().strip("/"):
        raise ValueError(f"names no bucket or host after {scheme + sep!r}, got {value!r}")
    return value


#: a path (local, relative to the configuration's folder, or a URI): never empty or blank
PathStr = Annotated[str, AfterValidator(_path)]


class PredictionsConfig(_Strict):
    path: PathStr
    id: ColumnName
    timestamp: ColumnName
    prediction: ColumnName
    score: ColumnName | None = None
    task: Task = "binary_classification"
    in_progress_grace: InProgressGrace = None


class GroundTruthConfig(_Strict):
    path: PathStr
    id: ColumnName
    label: ColumnName
    timestamp: ColumnName
    max_delay: Duration = timedelta(days=3)
    in_progress_grace: InProgressGrace = None


class FeaturesConfig(_Strict):
    numeric: list[ColumnName] = []
    categorical: list[ColumnName] = []

    @model_validator(mode="after")
    def _some(self) -> FeaturesConfig:
        both = set(self.numeric) & set(self.categorical)
        if both:
            raise ValueError(f"must not list a column as both numeric and categorical, got {sorted(both)}")
        return self


class ReferenceConfig(_Strict):
    """A fixed Parquet dataset (``path``), a fixed range of the sink (``start``/``end``) or ``rolling``."""

    path: PathStr | None = None
    start: Time | None = None
    end: Time | None = None
    rolling: Duration | None = None
    #: with ``path`` only: a range or rolling reference is read from the predictions sink, under its grace
    in_progress_grace: InProgressGrace = None

    @model_validator(mode="after")
    def _one(self) -> ReferenceConfig:
        given = [k for k in ("path", "rolling") if getattr(self, k) is not None]
        if self.start is not None or self.end is not None:
            if self.start is None or self.end is None:
                raise ValueError(f"must give both 'start' and 'end' for a time-range reference, got only {'start' if self.start else 'end'!r}")
            if self.end <= self.start:
                raise ValueError(f"must have end after start, got start={self.start.isoformat()} end={self.end.isoformat()}")
            given.append("start/end")
        if len(given) != 1:
            raise ValueError(f"must give exactly one of 'path', 'start'+'end' or 'rolling', got {given or 'none'}")
        return self


class DetectorConfig(BaseModel):
    """``type`` plus the detector's own parameters (validated by the detector class)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    type: str

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class ModelAlerts(_Strict):
    for_: int = Field(2, alias="for", ge=1)
    routes: list[str] = []
    repeat_interval: Duration | None = None


class ModelConfig(_Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]+$", min_length=1)]
    schedule: ScheduleConfig
    window: Duration
    predictions: PredictionsConfig
    ground_truth: GroundTruthConfig | None = None
    features: FeaturesConfig
    sensitive: list[ColumnName] = []
    reference: ReferenceConfig
    detectors: list[DetectorConfig] = Field(min_length=1)
    alerts: ModelAlerts = ModelAlerts()
    #: a source read (or the whole evaluation) taking longer than this is abandoned for the run
    timeout: Duration = timedelta(minutes=2)
    #: rolling references are rebuilt when their end moves by this much
    reference_refresh: Duration = timedelta(hours=1)


class RouteConfig(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    type: Literal["slack", "pagerduty", "alertmanager", "webhook"]
    url: SecretStr | None = None
    routing_key: SecretStr | None = None


class AlertingConfig(_Strict):
    routes: dict[str, RouteConfig] = {}


class Config(_Strict):
    server: ServerConfig = ServerConfig()
    state_dir: PathStr = "./atalaia-state"
    log: LogConfig = LogConfig()
    storage: StorageConfig = StorageConfig()
    models: list[ModelConfig] = Field(min_length=1)
    alerting: AlertingConfig = AlertingConfig()
    #: where relative paths are resolved (the configuration file's folder)
    base_dir: str = "."

    def model(self, name: str) -> ModelConfig:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(f"no model named {name!r}; configured: {', '.join(m.name for m in self.models)}")

    def resolve(self, path: str) -> str:
        """A sink path: URIs as they are, relative local paths against ``base_dir``."""
        return resolve_path(path, self.base_dir)

    @property
    def state_path(self) -> Path:
        return Path(self.resolve(self.state_dir))


# --------------------------------------------------------------------------- loading

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _interpolate(node: Any, path: str, env: Mapping[str, str], problems: list[tuple[str, str]],
                 interpolated: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {k: _interpolate(v, _join(path, k), env, problems, interpolated) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate(v, f"{path}[{i}]", env, problems, interpolated) for i, v in enumerate(node)]
    if isinstance(node, str):
        def sub(m: re.Match[str]) -> str:
            name = m.group(1)
            if name not in env:
                problems.append((path, f"must name a set environment variable, got unset ${{{name}}}"))
                return ""
            return env[name]

        if _ENV.search(node):
            interpolated[path] = node  # the text as written
        return _ENV.sub(sub, node)
    return node


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else ("" if not out else ".") + str(part)
    return out


def _message(err: Mapping[str, Any]) -> str:
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    simple = {
        "missing": "is required",
        "extra_forbidden": "is not a known key",
    }
    if kind in simple:
        return simple[kind]
    bounds = {"greater_than": (">", "gt"), "greater_than_equal": (">=", "ge"),
              "less_than": ("<", "lt"), "less_than_equal": ("<=", "le")}
    if kind in bounds:
        op, key = bounds[kind]
        return f"must be {op} {ctx.get(key)}, got {value!r}"
    if kind == "literal_error":
        return f"must be {ctx.get('expected')}, got {value!r}"
    if kind == "too_short":
        return f"must have at least {ctx.get('min_length')} entr{'y' if ctx.get('min_length') == 1 else 'ies'}, got {len(value) if hasattr(value, '__len__') else value!r}"
    if kind == "string_too_short":
        return f"must not be empty, got {value!r}" if ctx.get("min_length") == 1 else \
            f"must have at least {ctx.get('min_length')} characters, got {value!r}"
    if kind == "string_pattern_mismatch":
        return f"must match {ctx.get('pattern')}, got {value!r}"
    if kind in ("value_error", "assertion_error"):
        return str(ctx.get("error", err["msg"]))
    return f"{err['msg'][0].lower()}{err['msg'][1:]}, got {value!r}"


def parse_config(data: Any, *, source: str | None = None, env: Mapping[str, str] | None = None,
                 registry: Registry | None = None, base_dir: str | None = None) -> Config:
    """Validate a configuration mapping; raise :class:`ConfigError` listing every problem."""
    problems: list[tuple[str, str]] = []
    if not isinstance(data, dict):
        raise ConfigError([("", f"must be a mapping at the top level, got {type(data).__name__}")], source=source)
    env = os.environ if env is None else env
    interpolated: dict[str, str] = {}
    data = _interpolate(data, "", env, problems, interpolated)
    unset = {p for p, _ in problems}  # values an unset variable left empty: said once, as unset

    if base_dir is not None:
        data = data | {"base_dir": base_dir}
    cfg: Config | None = None
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
            msg = _message(err)
            where = _loc(loc)
            if where in unset:
                continue
            blank = isinstance(err["input"], str) and not err["input"].strip()  # nothing secret in it
            if blank and where in interpolated:
                msg += f" (from {interpolated[where]!r})"
            elif any(p == where or p.startswith((where + ".", where + "[")) for p in interpolated):
                msg = msg.replace(repr(err["input"]), "<redacted>")
            problems.append((_loc(loc), msg))
    registry = registry or Registry()
    problems += _detector_problems(data, registry)
    problems += _semantic_problems(data, registry)
    problems += _state_dir_problems(data, base_dir)
    if problems:
        seen: set[tuple[str, str]] = set()
        unique = [p for p in problems if not (p in seen or seen.add(p))]
        raise ConfigError(unique, source=source)
    assert cfg is not None
    return cfg


def load_config(path: str | Path, *, env: Mapping[str, str] | None = None, registry: Registry | None = None,
                base_dir: str | Path | None = None) -> Config:
    """Read and validate a YAML file; relative paths resolve against its folder (or ``base_dir``)."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError([("", f"cannot read the configuration: {exc.strerror or exc}")], source=str(p)) from None
    loader = _UniqueKeyLoader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
        duplicates = _duplicate_key_problems(loader, root)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError([("", f"{where}must be valid YAML ({getattr(exc, 'problem', exc)})")], source=str(p)) from None
    finally:
        loader.dispose()
    try:
        cfg = parse_config(data, source=str(p), env=env, registry=registry,
                           base_dir=str(base_dir if base_dir is not None else p.parent.resolve()))
    except ConfigError as exc:  # a repeated key is reported together with every other problem
        if not duplicates:
            raise
        raise ConfigError(duplicates + exc.problems, source=str(p)) from None
    if duplicates:
        raise ConfigError(duplicates, source=str(p))
    return cfg


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that notes a key given twice in one mapping (which YAML forbids, and which
    PyYAML otherwise lets the last occurrence win silently), with the line of every occurrence.

    ``duplicates`` maps a mapping node's id to ``[(key, [mark, ...]), ...]``; keys merged in with
    ``<<`` are not counted (the mapping's own value overrides them, as YAML means).
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: dict[int, list[tuple[Any, list[yaml.Mark]]]] = {}
        self._own_pairs: dict[int, list[tuple[yaml.Node, yaml.Node]]] = {}

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        # the first call sees the mapping as written, before ``<<`` merges are spliced into it
        self._own_pairs.setdefault(id(node), list(node.value))
        super().flatten_mapping(node)

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            self.flatten_mapping(node)
            marks: dict[Any, list[yaml.Mark]] = {}
            for key_node, _ in self._own_pairs[id(node)]:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # a non-scalar key is refused by SafeConstructor as unhashable
                marks.setdefault(self.construct_object(key_node), []).append(key_node.start_mark)
            repeated = [(k, m) for k, m in marks.items() if len(m) > 1]
            if repeated:
                self.duplicates[id(node)] = repeated
        return super().construct_mapping(node, deep=deep)


def _duplicate_key_problems(loader: _UniqueKeyLoader, root: yaml.Node | None) -> list[tuple[str, str]]:
    """One problem per key given more than once in a mapping, at the key's path, naming each line."""
    out: list[tuple[int, str, str]] = []  # (first line, path, message): in the file's order
    seen: set[int] = set()

    def where(marks: list[yaml.Mark]) -> str:
        lines = [m.line + 1 for m in marks]
        if len(set(lines)) == len(lines):
            return "on lines " + ", ".join(map(str, lines[:-1])) + f" and {lines[-1]}"
        texts = [f"line {m.line + 1}, column {m.column + 1}" for m in marks]  # e.g. twice in one flow mapping
        return "at " + ", ".join(texts[:-1]) + " and " + texts[-1]

    def walk(node: yaml.Node, path: str) -> None:
        if id(node) in seen:  # an alias: reported where its anchor is
            return
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for key, marks in loader.duplicates.get(id(node), []):
                out.append((marks[0].line, _join(path, key),
                            f"must be given once in its mapping, got it {where(marks)} (the last would silently win)"))
            for key_node, value_node in node.value:
                key = loader.construct_object(key_node) if isinstance(key_node, yaml.ScalarNode) else key_node.value
                walk(value_node, _join(path, key))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, f"{path}[{i}]")

    if root is not None:
        walk(root, "")
    return [(path, msg) for _, path, msg in sorted(out)]


def _detector_problems(data: Any, registry: Registry) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, list):
        return out
    for i, m in enumerate(models):
        dets = m.get("detectors") if isinstance(m, dict) else None
        if not isinstance(dets, list):
            continue
        for j, d in enumerate(dets):
            if not isinstance(d, dict) or "type" not in d:
                continue
            params = {k: v for k, v in d.items() if k != "type"}
            for key, msg in registry.problems(str(d["type"]), params).items():
                out.append((f"models[{i}].detectors[{j}].{key}", msg))
    return out


def _names(value: Any) -> list[str] | None:
    """``value`` when it is a list of strings (or absent: ``[]``), else ``None`` (reported elsewhere)."""
    if value is None:
        return []
    return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else None


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _semantic_problems(data: dict[str, Any], registry: Registry) -> list[tuple[str, str]]:
    """Cross-references (unique names, known routes and columns, no duplicate series), read from the
    raw mapping so that they are reported together with every other problem of the same model."""
    out: list[tuple[str, str]] = []
    raw_models = data.get("models") if isinstance(data.get("models"), list) else []
    alerting = data.get("alerting", {})
    routes = alerting.get("routes", {}) if isinstance(alerting, dict) else None
    route_names = set(routes) if isinstance(routes, dict) else None  # None: malformed, reported elsewhere
    names = [m.get("name") if isinstance(m, dict) else None for m in raw_models]
    for i, n in enumerate(names):
        if n is not None and not isinstance(n, list | dict) and names.count(n) > 1:
            out.append((f"models[{i}].name", f"must be unique, got {n!r} more than once"))
    for i, m in enumerate(raw_models):
        if isinstance(m, dict):
            out += _model_cross_checks(f"models[{i}]", m, route_names, registry)
    return out


def _model_cross_checks(where: str, m: dict[str, Any], route_names: set[str] | None,
                        registry: Registry) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    preds = _mapping(m.get("predictions"))
    score, prediction = preds.get("score"), preds.get("prediction")
    is_class = preds.get("task", "binary_classification") != "regression"
    features = m.get("features")
    numeric = _names(_mapping(features).get("numeric"))
    categorical = _names(_mapping(features).get("categorical"))
    columns_known = isinstance(features, dict) and numeric is not None and categorical is not None
    numeric, categorical = numeric or [], categorical or []
    model_columns = {c for c in (score, prediction) if isinstance(c, str)}
    known = set(numeric) | set(categorical) | model_columns
    # the targets a detector scores by default: the columns of the kinds it applies to, as the evaluator has them
    roles = Columns(numeric=numeric, categorical=categorical, score=score if isinstance(score, str) else None,
                    prediction=prediction if isinstance(prediction, str) else None, prediction_is_class=is_class)
    by_kind = {"numeric": roles.numeric_targets, "categorical": roles.categorical_targets}
    dets = m.get("detectors") if isinstance(m.get("detectors"), list) else []
    scored: list[tuple[int, str, frozenset[str]]] = []
    for j, d in enumerate(dets):
        if not isinstance(d, dict):
            continue
        feats = _names(d.get("features"))
        if columns_known and feats:
            for f in feats:
                if f not in known:
                    out.append((f"{where}.detectors[{j}].features",
                                f"must name configured features or prediction columns, got {f!r}"))
        typ = d.get("type")
        if not isinstance(typ, str):
            continue
        try:
            cls = registry.get(typ)
        except ParameterError:  # an unknown type: reported with the detector's parameters
            continue
        if columns_known and feats:  # a column of a kind the detector does not score would get no finding at all
            kinds = sorted(cls.applies_to)
            # a joint detector reads the model's features only (Batch.numeric / categorical), not its score or prediction
            scorable = {"numeric": numeric, "categorical": categorical} if cls.joint else by_kind
            for f in feats:
                if f in known and not any(f in scorable.get(k, ()) for k in kinds):
                    have = next((k for k in ("numeric", "categorical") if f in by_kind[k]), "another kind")
                    if f in model_columns and cls.joint:
                        have = "a prediction column, which it does not read"
                    what = " features" if cls.joint else " columns"
                    out.append((f"{where}.detectors[{j}].features",
                                f"must name {' or '.join(kinds)}{what}, which {typ!r} scores; {f!r} is {have}"))
        targets = _detector_targets(cls, feats, by_kind)
        for k, other, other_targets in scored:
            overlap = targets & other_targets
            if other == typ and overlap:
                what = "the model as a whole" if _WHOLE in overlap else ", ".join(sorted(overlap))
                out.append((f"{where}.detectors[{j}]", f"must not score what {where}.detectors[{k}] already "
                            f"scores with {typ!r} ({what}): the two would export the same series; give them "
                            f"disjoint features or merge them, got a second {typ!r}"))
                break
        scored.append((j, typ, targets))
    # a column read under two kinds is refused in every file (the evaluator keeps one kind per column)
    for kind, names in (("numeric", numeric), ("categorical", categorical)):
        for j, f in enumerate(names):
            if f in (preds.get("id"), preds.get("timestamp")):
                out.append((f"{where}.features.{kind}[{j}]", f"must not be the id or timestamp column, got {f!r}"))
            elif f == prediction and kind == ("numeric" if is_class else "categorical"):
                task = "a classification's predicted class is categorical" if is_class \
                    else "a regression's prediction is numeric"
                out.append((f"{where}.features.{kind}[{j}]", f"must not be the prediction column ({task}), got {f!r}"))
            elif f == score and kind == "categorical":
                out.append((f"{where}.features.{kind}[{j}]", f"must not be the score column (numeric), got {f!r}"))
    # a model column that is also the id or the timestamp is read under two kinds: every file would be refused
    for key in ("score", "prediction"):
        col = preds.get(key)
        if isinstance(col, str) and col and col in (preds.get("id"), preds.get("timestamp")):
            which = "id" if col == preds.get("id") else "timestamp"
            out.append((f"{where}.predictions.{key}", f"must not be the {which} column, got {col!r}"))
    if is_class and isinstance(score, str) and score and score == prediction:
        out.append((f"{where}.predictions.score", "must not be the prediction column (a classification's score is "
                    f"numeric, its predicted class categorical), got {score!r}"))
    if isinstance(preds.get("id"), str) and preds.get("id") and preds.get("id") == preds.get("timestamp"):
        out.append((f"{where}.predictions.id", f"must not be the timestamp column, got {preds.get('id')!r}"))
    sensitive = _names(m.get("sensitive")) or []
    for j, f in enumerate(sensitive):
        if f in (preds.get("id"), preds.get("timestamp")):
            out.append((f"{where}.sensitive[{j}]", f"must not be the id or timestamp column, got {f!r}"))
    reference = _mapping(m.get("reference"))
    ranged = [k for k in ("start", "end", "rolling") if k in reference]
    if "in_progress_grace" in reference and ranged and "path" not in reference:
        out.append((f"{where}.reference.in_progress_grace", "must be given only with 'path' (a 'start'+'end' or "
                    "'rolling' reference is read from the predictions sink, under predictions.in_progress_grace), "
                    f"got it with {'+'.join(ranged)!r}"))
    alert_routes = _names(_mapping(m.get("alerts")).get("routes")) or []
    if route_names is not None:
        for j, r in enumerate(alert_routes):
            if r not in route_names:
                listed = ", ".join(sorted(route_names)) or "none defined"
                out.append((f"{where}.alerts.routes[{j}]",
                            f"must name a route under alerting.routes ({listed}), got {r!r}"))
    rolling, window = _mapping(m.get("reference")).get("rolling"), m.get("window")
    try:
        rolling_d, window_d = parse_duration(rolling), parse_duration(window)
    except (ValueError, TypeError):
        return out  # either is missing or malformed: reported by the schema
    if rolling_d < window_d:
        out.append((f"{where}.reference.rolling", f"must be at least the window "
                    f"({format_duration(window_d)}), got {format_duration(rolling_d)}"))
    return out


#: the target of a detector that scores the model as a whole rather than column by column
_WHOLE = "*"


def _detector_targets(cls: type[Detector], features: list[str] | None,
                      by_kind: Mapping[str, list[str]]) -> frozenset[str]:
    """What a detector's findings are keyed by besides its type: for a column-by-column detector its
    columns (``features``, by default every column of the kinds it applies to); for one without a
    ``features`` parameter, or one that scores its features jointly, the model as a whole."""
    if "features" not in cls.params or cls.joint:
        return frozenset({_WHOLE})
    if features:
        return frozenset(features)
    return frozenset(c for kind in sorted(cls.applies_to) for c in by_kind.get(kind, []))


def resolve_path(path: str, base_dir: str | None) -> str:
    """URIs as they are; local paths with ``~`` expanded and, when relative, against ``base_dir``."""
    if "://" in path:
        return path
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else (Path(base_dir or ".") / p).resolve())


def _state_dir_problems(data: dict[str, Any], base_dir: str | None) -> list[tuple[str, str]]:
    """``state_dir`` must be a folder or a path one can be created at (not under a regular file)."""
    state_dir = data.get("state_dir", Config.model_fields["state_dir"].default)
    if not isinstance(state_dir, str) or not state_dir or "://" in state_dir:
        return []
    given = data.get("base_dir", base_dir)
    path = Path(resolve_path(state_dir, given if isinstance(given, str) else base_dir))
    for existing in (path, *path.parents):
        if existing.exists():
            break
    else:  # pragma: no cover - the root exists
        return []
    if not existing.is_dir():
        why = "is not a folder" if existing == path else f"is under {existing}, which is not a folder"
        return [("state_dir", f"must be a folder the daemon can create and write, got {state_dir!r} ({why})")]
    # whether it is writable is left to the daemon's start (exit 2 naming state_dir): a configuration
    # is often validated on another machine (CI, a laptop) than the one it runs on
    return []


def config_warnings(config: Config) -> list[str]:
    """Settings this release accepts but does not act on, each said once (``validate`` prints them,
    ``run`` and ``demo`` log them): alert routes, and ground truth, which no detector reads yet."""
    out = [w for w in [alert_routes_warning(config)] if w]
    out += [f"models[{i}].ground_truth ({m.name}): accepted but not read: this release has no accuracy or "
            "fairness detector that uses labels" for i, m in enumerate(config.models) if m.ground_truth is not None]
    return out


def alert_routes_warning(config: Config) -> str | None:
    """The warning for configured alert routes, which this release accepts but does not deliver."""
    names = sorted(set(config.alerting.routes) | {r for m in config.models for r in m.alerts.routes})
    if not names:
        return None
    return (f"alert routes are configured ({', '.join(names)}) but this release of atalaia does not deliver "
            "alerts; alert through the Prometheus rules in deploy/prometheus/atalaia-rules.yml and Alertmanager")

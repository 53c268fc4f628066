"""The detector protocol: findings, declared parameters and the base classes.

A detector has a ``name`` (its registry key and ``type:`` in the config), a
``kind`` and declared parameters.  It works in two pure steps::

    summary = detector.summarise(reference_profile)      # once per reference
    findings = detector.score(summary, current_profile, context=ctx)

Profiles are mergeable partial counts (see :mod:`detectors.profile`); no
detector reads a file, a clock or the network.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, ClassVar, Literal, Protocol

import numpy as np

from .errors import ParameterError

__all__ = [
    "Batch",
    "Mergeable",
    "Status",
    "Kind",
    "Finding",
    "Context",
    "Param",
    "Detector",
    "STATUSES",
    "batch_extras",
]

Status = Literal["ok", "warn", "alert", "insufficient_data"]
Kind = Literal["drift", "performance", "fairness", "quality"]
STATUSES: tuple[Status, ...] = ("ok", "warn", "alert", "insufficient_data")
_SEVERITY = {"insufficient_data": -1, "ok": 0, "warn": 1, "alert": 2}

def severity(status: str) -> int:
    """Order statuses: insufficient_data < ok < warn < alert."""
    return _SEVERITY[status]

@dataclass(frozen=True, kw_only=True)
class Context:
    """What a detector is told about the run it scores (no clock: times are data)."""

    model: str
    window_start: datetime
    window_end: datetime

@dataclass(frozen=True, kw_only=True)
class Finding:
    """One result row: the record behind every metric and every line of ``check --format json``."""

    model: str
    detector: str
    kind: Kind
    target: str
    statistic: str
    value: float | None
    threshold: float | None
    p_value: float | None
    status: Status
    n_reference: int
    n_current: int
    window_start: str
    window_end: str
    group: str | None = None
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; NaN and inf become ``None``."""
        out = asdict(self)
        for key in ("value", "threshold", "p_value"):
            v = out[key]
            if v is not None and not math.isfinite(v):
                out[key] = None
        return out

    @property
    def key(self) -> tuple[str, str, str, str | None]:
        """The identity of a finding across runs: (detector, target, statistic, group)."""
        return (self.detector, self.target, self.statistic, self.group)

@dataclass(frozen=True, kw_only=True)
class Batch:
    """One record batch of a window (or the whole reference) as NumPy arrays.

    ``numeric`` columns are float arrays with NaN where the value was null;
    ``categorical`` columns are object arrays of ``str`` with ``None`` for
    null.  ``score``/``prediction``/``label`` are the model columns when the
    model has them (``label`` is a float array, NaN where no ground truth has
    arrived); ``timestamp`` is int64 nanoseconds since the epoch, UTC.
    ``sensitive`` holds the sensitive attributes like ``categorical``.
    """

    n_rows: int
    numeric: Mapping[str, np.ndarray]
    categorical: Mapping[str, np.ndarray]
    sensitive: Mapping[str, np.ndarray]
    timestamp: np.ndarray
    score: np.ndarray | None = None
    prediction: np.ndarray | None = None
    label: np.ndarray | None = None


class Mergeable(Protocol):
    """Partial counts: ``a.merge(b)`` is the counts of both batches."""

    def merge(self, other: Any, /) -> Any: ...


# --------------------------------------------------------------------------- parameters

Check = Callable[[Any], str | None]

@dataclass(frozen=True)
class Param:
    """A declared detector parameter: default and constraint.

    ``check`` returns ``None`` when a value is acceptable, else the message
    in the one form every constraint uses: ``"must be … got …"``.
    """

    default: Any
    check: Check
    doc: str = ""

def number(*, gt: float | None = None, ge: float | None = None,
           le: float | None = None, lt: float | None = None, integer: bool = False) -> Check:
    """A numeric constraint, e.g. ``number(gt=0, lt=1)``."""

    def check(v: Any) -> str | None:
        kind = "an integer" if integer else "a number"
        ok_type = isinstance(v, int) if integer else isinstance(v, int | float)
        if isinstance(v, bool) or not ok_type or (isinstance(v, float) and not math.isfinite(v)):
            return f"must be {kind}, got {v!r}"
        for bound, op, ok in ((gt, ">", lambda a, b: a > b), (ge, ">=", lambda a, b: a >= b),
                              (lt, "<", lambda a, b: a < b), (le, "<=", lambda a, b: a <= b)):
            if bound is not None and not ok(v, bound):
                return f"must be {op} {bound:g}, got {v!r}"
        return None

    return check

def one_of(*choices: Any) -> Check:
    def check(v: Any) -> str | None:
        if v not in choices:
            return f"must be one of {', '.join(map(repr, choices))}, got {v!r}"
        return None

    return check

def optional(inner: Check) -> Check:
    def check(v: Any) -> str | None:
        return None if v is None else inner(v)

    return check

def str_list(v: Any) -> str | None:
    if v is None:
        return None
    if not isinstance(v, list | tuple) or not all(isinstance(x, str) for x in v):
        return f"must be a list of names, got {v!r}"
    if len(v) == 0:
        return "must name at least one entry, got []"
    return None

def boolean(v: Any) -> str | None:
    return None if isinstance(v, bool) else f"must be true or false, got {v!r}"

# --------------------------------------------------------------------------- detector base

class Detector(ABC):
    """Base class of every detector.

    Subclasses declare ``name``, ``kind``, ``applies_to`` and ``params``; the
    constructor validates keyword parameters against ``params`` and raises a
    :class:`ParameterError` naming every bad one at once.
    """

    name: ClassVar[str]
    kind: ClassVar[Kind]
    #: which columns the detector reads: any of "numeric", "categorical", "score", "prediction"
    applies_to: ClassVar[frozenset[str]] = frozenset()
    params: ClassVar[Mapping[str, Param]] = {}

    def __init__(self, **params: Any) -> None:
        self.config = self.validate(params)
        for key, value in self.config.items():
            setattr(self, key, value)

    # -- parameters -------------------------------------------------------
    @classmethod
    def parameter_problems(cls, params: Mapping[str, Any]) -> dict[str, str]:
        """Every problem with ``params`` as ``{name: "must be … got …"}`` (empty when valid)."""
        problems: dict[str, str] = {}
        for key in params:
            if key not in cls.params:
                problems[key] = f"must be one of the parameters {', '.join(sorted(cls.params))}, got unknown {key!r}"
        merged = {k: p.default for k, p in cls.params.items()} | {k: v for k, v in params.items() if k in cls.params}
        for key, spec in cls.params.items():
            msg = spec.check(merged[key])
            if msg:
                problems[key] = msg
        if not problems:
            problems.update(cls.cross_check(merged))
        return problems

    @classmethod
    def cross_check(cls, params: Mapping[str, Any]) -> dict[str, str]:
        """Constraints between parameters; default: ``alert`` at least as strict as ``warn``."""
        warn, alert = params.get("warn"), params.get("alert")
        if warn is not None and alert is not None and alert < warn:
            return {"alert": f"must be >= warn ({warn:g}), got {alert:g}"}
        return {}

    @classmethod
    def validate(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        problems = cls.parameter_problems(params)
        if problems:
            raise ParameterError(cls.name, problems)
        return {k: p.default for k, p in cls.params.items()} | dict(params)

    # -- per-batch hooks for detectors that need more than column counts --
    #: set True to receive batches: ``reference_extra`` once, ``batch_extra`` per window batch
    uses_batches: ClassVar[bool] = False
    #: which parts of a :class:`Batch` the hooks read — any of "numeric", "categorical", "sensitive",
    #: "timestamp", "model" (score, prediction, label); the rest are left empty, unconverted
    batch_fields: ClassVar[frozenset[str]] = frozenset({"numeric", "categorical", "sensitive", "timestamp", "model"})

    #: True when ``batch_extra`` keeps raw values (memory grows with the window); the evaluator then
    #: keeps no partition profiles between runs
    keeps_raw_values: ClassVar[bool] = False
    #: True when the detector scores its features jointly: one finding for the model as a whole,
    #: whatever its ``features`` (so one such detector of a type per model)
    joint: ClassVar[bool] = False

    def reference_extra(self, reference: Batch) -> Any:
        """Summarise the whole reference (as one :class:`Batch`) once; stored in ``summary.extras``."""
        return None

    def batch_extra(self, reference_extra: Any, batch: Batch) -> Mergeable | None:
        """Partial counts of one window batch; merged and stored in ``current.extras``."""
        return None

    @property
    def key(self) -> str:
        """Where this detector's extras live in a profile: its name and parameters."""
        return f"{self.name}:{sorted(self.config.items())!r}"

    # -- the two pure steps ------------------------------------------------
    def summarise(self, reference: Any) -> Any:
        """Summarise the reference profile once; the default keeps it as it is."""
        return reference

    @abstractmethod
    def score(self, summary: Any, current: Any, *, context: Context) -> list[Finding]:
        """Score the current window's profile against the summary."""

    def targets(self, available: Iterable[str]) -> list[str]:
        """The targets this detector scores: ``features`` if given, else all available."""
        chosen = getattr(self, "features", None)
        avail = list(available)
        return [f for f in chosen if f in avail] if chosen else avail

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config.items())
        return f"{type(self).__name__}({args})"

def batch_extras(detectors: Iterable[Detector], reference_extras: Mapping[str, Any], batch: Batch
                 ) -> dict[str, Any]:
    """The partial extras of one window batch, by detector key, from the detectors that use batches
    (those returning ``None`` for it are left out).

    >>> batch = Batch(n_rows=0, numeric={}, categorical={}, sensitive={}, timestamp=np.zeros(0, np.int64))
    >>> batch_extras([], {}, batch)
    {}
    """
    extras: dict[str, Any] = {}
    for d in detectors:
        if d.uses_batches:
            part = d.batch_extra(reference_extras.get(d.key), batch)
            if part is not None:
                extras[d.key] = part
    return extras


def finding_fields() -> Sequence[str]:
    """Field names of :class:`Finding`, in record order."""
    return [f.name for f in Finding.__dataclass_fields__.values()]

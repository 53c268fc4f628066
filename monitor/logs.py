"""Logging set-up: plain text or one JSON object per line, to stderr.

In JSON every record of a model's run carries ``model`` (set for the run with :func:`model_context`, on
the run's threads too), and records about a file its ``file``, ``column`` and ``reason`` (passed as
``extra``, see :func:`source_fields`): a log pipeline can select a model's lines or a file's without
parsing the message.

APScheduler's own warnings for a firing it drops (the previous run still going; a firing missed by more
than the misfire grace time) are left out: the daemon logs each dropped firing itself, at WARNING,
naming the model and the outcome it is counted under (``skipped``), so each is logged once."""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import math
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from detectors.errors import SourceError

__all__ = ["setup_logging", "TextFormatter", "JsonFormatter", "utc_stamp", "drop_apscheduler_duplicates",
           "model_context", "add_context", "source_fields"]

#: the model whose run the current thread is working for (copied to the threads a run starts)
MODEL: contextvars.ContextVar[str | None] = contextvars.ContextVar("atalaia_model", default=None)

#: the attributes every log record has: anything else on a record came as ``extra`` (or from add_context)
_RECORD_FIELDS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}

#: APScheduler's messages for the firings it drops, which the daemon logs itself (see :mod:`.scheduler`)
_APSCHEDULER_DROPS = (
    'Execution of job "%s" skipped: maximum number of running instances reached (%d)',
    'Run time of job "%s" was missed by %s',
)


def utc_stamp(created: float) -> str:
    """A record's time as ISO-8601 UTC with a ``Z``: ``2026-11-27T12:00:00.123456Z``."""
    return datetime.fromtimestamp(created, UTC).isoformat().replace("+00:00", "Z")


@contextlib.contextmanager
def model_context(name: str) -> Iterator[None]:
    """Records logged in this context (and in threads started with a copy of it) name the model ``name``."""
    token = MODEL.set(name)
    try:
        yield
    finally:
        MODEL.reset(token)


def add_context(record: logging.LogRecord) -> bool:
    """A handler filter: give the record the ``model`` of the run it is logged in, unless it names one."""
    if not hasattr(record, "model") and (model := MODEL.get()) is not None:
        record.model = model
    return True


def source_fields(err: SourceError) -> dict[str, Any]:
    """A source error's ``file``, ``column`` and ``reason``, for a log record's ``extra`` (unset ones left out).

    >>> e = SourceError("bad", path="/d/a.parquet", reason="corrupt")
    >>> source_fields(e)
    {'file': '/d/a.parquet', 'reason': 'corrupt'}
    """
    fields = {"file": err.path, "column": err.column, "reason": err.reason}
    return {k: v for k, v in fields.items() if v is not None}


class TextFormatter(logging.Formatter):
    """``<UTC time>Z LEVEL logger: message``, whatever the host's time zone."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - stdlib name
        return utc_stamp(record.created)


#: the keys of a JSON line's own
_OWN_KEYS = frozenset({"time", "level", "logger", "message", "exception"})


def _plain(value: Any) -> Any:
    """A field's value as JSON holds it: a NumPy scalar as the number, a NaN or infinity as ``null``."""
    if hasattr(value, "item") and getattr(value, "shape", None) == ():  # NumPy scalars and 0-d arrays
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time`` (ISO-8601 UTC), ``level``, ``logger``, ``message``, then the
    record's own fields (``model``, ``file``, ``column``, ``reason``, a run's ``rows``…), then ``exception``."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": utc_stamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = {k: v for k, v in record.__dict__.items() if k not in _RECORD_FIELDS and not k.startswith("_")}
        for key, value in fields.items():  # one named like a key of the line's own is kept beside it
            doc[f"extra_{key}" if key in _OWN_KEYS else key] = _plain(value)
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        try:
            return json.dumps(doc, default=str, allow_nan=False)
        except (TypeError, ValueError, RecursionError) as exc:  # a value no JSON can hold: the line is not lost
            own = {k: doc[k] for k in _OWN_KEYS if k in doc}
            return json.dumps(own | {k: repr(v) for k, v in doc.items() if k not in own}
                              | {"log_error": f"{type(exc).__name__}: {exc}"}, default=str)


def drop_apscheduler_duplicates(record: logging.LogRecord) -> bool:
    """A handler filter: ``False`` for APScheduler's messages of a dropped firing (the daemon logs its own)."""
    return not (record.name.startswith("apscheduler") and record.msg in _APSCHEDULER_DROPS)


def setup_logging(*, fmt: str = "text", level: str = "info") -> None:
    """Log to stderr in ``fmt`` (text or json) from ``level`` up; APScheduler's own from warning up, less
    the two messages of a dropped firing (see :func:`drop_apscheduler_duplicates`)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(drop_apscheduler_duplicates)
    handler.addFilter(add_context)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("apscheduler").setLevel(max(logging.WARNING, root.level))

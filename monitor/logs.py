"""Logging set-up: plain text or one JSON object per line, to stderr.

APScheduler's own warnings for a firing it drops (the previous run still going; a firing missed by more
than the misfire grace time) are left out: the daemon logs each dropped firing itself, at WARNING,
naming the model and the outcome it is counted under (``skipped``), so each is logged once."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

__all__ = ["setup_logging", "TextFormatter", "JsonFormatter", "utc_stamp", "drop_apscheduler_duplicates"]

#: APScheduler's messages for the firings it drops, which the daemon logs itself (see :mod:`.scheduler`)
_APSCHEDULER_DROPS = (
    'Execution of job "%s" skipped: maximum number of running instances reached (%d)',
    'Run time of job "%s" was missed by %s',
)


def utc_stamp(created: float) -> str:
    """A record's time as ISO-8601 UTC with a ``Z``: ``2026-11-27T12:00:00.123456Z``."""
    return datetime.fromtimestamp(created, UTC).isoformat().replace("+00:00", "Z")


class TextFormatter(logging.Formatter):
    """``<UTC time>Z LEVEL logger: message``, whatever the host's time zone."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - stdlib name
        return utc_stamp(record.created)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time`` (ISO-8601 UTC), ``level``, ``logger``, ``message``."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "time": utc_stamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc)


def drop_apscheduler_duplicates(record: logging.LogRecord) -> bool:
    """A handler filter: ``False`` for APScheduler's messages of a dropped firing (the daemon logs its own)."""
    return not (record.name.startswith("apscheduler") and record.msg in _APSCHEDULER_DROPS)


def setup_logging(*, fmt: str = "text", level: str = "info") -> None:
    """Log to stderr in ``fmt`` (text or json) from ``level`` up; APScheduler's own from warning up, less
    the two messages of a dropped firing (see :func:`drop_apscheduler_duplicates`)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(drop_apscheduler_duplicates)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("apscheduler").setLevel(max(logging.WARNING, root.level))

"""Logging set-up: plain text or one JSON object per line, to stderr."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

__all__ = ["setup_logging", "TextFormatter", "JsonFormatter", "utc_stamp"]


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


def setup_logging(*, fmt: str = "text", level: str = "info") -> None:
    """Log to stderr in ``fmt`` (text or json) from ``level`` up; APScheduler's own from warning up."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("apscheduler").setLevel(max(logging.WARNING, root.level))

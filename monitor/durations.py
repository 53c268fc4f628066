"""Durations with a unit (``30s``, ``5m``, ``1h``, ``7d``) and ISO-8601 times (UTC by default)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

__all__ = ["parse_duration", "format_duration", "parse_time", "floor_time", "MAX_DURATION"]

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_RE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
#: the longest duration accepted: a century (windows and offsets must stay within datetime's range)
MAX_DURATION = timedelta(days=36500)


def parse_duration(text: str, *, zero: bool = False) -> timedelta:
    """``"5m"`` → ``timedelta(minutes=5)``; raises ``ValueError`` in the one message form.
    ``zero``: ``"0s"`` is allowed too (a grace that can be turned off).

    >>> parse_duration("90s")
    datetime.timedelta(seconds=90)
    >>> parse_duration("99999999999d")
    Traceback (most recent call last):
    ...
    ValueError: must be at most 36500d (100 years), got '99999999999d'
    """
    if isinstance(text, timedelta):
        if text < timedelta(0) or (text == timedelta(0) and not zero):
            raise ValueError(f"must be a {'non-negative' if zero else 'positive'} duration, got {text!r}")
        return text
    m = _RE.match(str(text)) if isinstance(text, str) else None
    if not m:
        raise ValueError(f"must be a duration with a unit (30s, 5m, 1h, 7d), got {text!r}")
    value = float(m.group(1)) * _UNITS[m.group(2)]
    if value < 0 or (value == 0 and not zero):
        raise ValueError(f"must be a {'duration of 0s or more' if zero else 'positive duration'}, got {text!r}")
    if value > MAX_DURATION.total_seconds():
        raise ValueError(f"must be at most {format_duration(MAX_DURATION)} (100 years), got {text!r}")
    return timedelta(seconds=value)


def format_duration(d: timedelta) -> str:
    """The shortest exact unit form: ``timedelta(hours=1)`` → ``"1h"``."""
    s = d.total_seconds()
    for unit in ("w", "d", "h", "m", "s"):
        if s % _UNITS[unit] == 0:
            return f"{int(s // _UNITS[unit])}{unit}"
    return f"{s}s"


def parse_time(text: str | datetime) -> datetime:
    """ISO-8601 → aware UTC datetime (naive input is taken as UTC).

    >>> parse_time("2026-01-02T03:04:05")
    datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    """
    if isinstance(text, datetime):
        dt = text
    else:
        try:
            dt = datetime.fromisoformat(str(text).strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"must be an ISO-8601 time such as 2026-01-02T03:00:00Z, got {text!r}") from None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def floor_time(t: datetime, step: timedelta) -> datetime:
    """Round ``t`` down to a multiple of ``step`` since the Unix epoch."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    n = (t - epoch) // step
    return epoch + n * step

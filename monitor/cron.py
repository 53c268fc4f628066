"""Five-field crontab(5) schedules as APScheduler triggers, with cron's own meaning.

APScheduler 3 counts weekdays from Monday (``0`` is Monday), so its
``CronTrigger.from_crontab("0 9 * * 1-5")`` fires Tuesday to Saturday.  Here the
day-of-week field is read as crontab(5) reads it — ``0`` and ``7`` are Sunday,
``1`` is Monday, names ``sun``..``sat`` (any case), ranges, lists and steps —
and handed to APScheduler as weekday names, which mean the same in both.  When
both the day of month and the day of week are restricted (neither starts with
``*``), cron fires when *either* matches; that is an ``OrTrigger`` of the two.

>>> from datetime import datetime, UTC
>>> trig = crontab_trigger("0 9 * * 1-5")
>>> trig.get_next_fire_time(None, datetime(2026, 11, 28, tzinfo=UTC)).strftime("%a %Y-%m-%d %H:%M")
'Mon 2026-11-30 09:00'
>>> longest_gap("*/15 9-17 * * *", start=datetime(2026, 11, 28, tzinfo=UTC))
datetime.timedelta(seconds=54900)
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger

__all__ = ["crontab_trigger", "firings", "weekdays", "longest_gap"]

#: crontab(5) weekday names, Sunday first (``sun`` is 0, and also 7 at the end of a range)
_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _weekday(text: str, *, range_end: bool = False) -> int:
    low = text.strip().lower()
    if low in _DAY_NAMES:
        day = _DAY_NAMES.index(low)
        return 7 if range_end and day == 0 else day
    if low.isdigit() and 0 <= int(low) <= 7:
        return int(low)
    raise ValueError(f"day of week must be 0-7 or sun-sat, got {text!r}")


def weekdays(field: str) -> frozenset[int]:
    """The days a crontab(5) day-of-week field selects, ``0`` = Sunday .. ``6`` = Saturday.

    >>> sorted(weekdays("1-5")), sorted(weekdays("7")), sorted(weekdays("sat-sun")), sorted(weekdays("*/3"))
    ([1, 2, 3, 4, 5], [0], [0, 6], [0, 3, 6])
    """
    days: set[int] = set()
    for item in field.split(","):
        span, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValueError(f"day of week step must be a positive whole number, got {item!r}")
            step = int(step_text)
        if span == "*":
            first, last = 0, 7
        elif "-" in span:
            a, b = span.split("-", 1)
            first, last = _weekday(a), _weekday(b, range_end=True)
            if first > last:
                raise ValueError(f"day of week range must run forwards, got {item!r}")
        else:
            first = _weekday(span)
            last = 7 if slash else first  # "1/2": from Monday to the end of the week, every other day
        days.update(d % 7 for d in range(first, last + 1, step))
    return frozenset(days)


def crontab_trigger(expression: str, *, timezone: tzinfo = UTC) -> BaseTrigger:
    """An APScheduler trigger firing exactly when cron would for ``expression`` (five fields).

    Raises ``ValueError`` for a malformed expression.
    """
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"wrong number of fields: got {len(fields)}, expected 5")
    minute, hour, dom, month, dow = fields
    names = ",".join(_DAY_NAMES[d] for d in sorted(weekdays(dow)))
    day_of_week = "*" if dow == "*" else names

    def cron(*, day: str, day_of_week: str) -> CronTrigger:
        return CronTrigger(minute=minute, hour=hour, day=day, month=month, day_of_week=day_of_week,
                           timezone=timezone)

    if not dom.startswith("*") and not dow.startswith("*"):
        # crontab(5): "if both fields are restricted, the command runs when either field matches"
        return OrTrigger([cron(day=dom, day_of_week="*"), cron(day="*", day_of_week=names)])
    return cron(day=dom, day_of_week=day_of_week)


def firings(trigger: BaseTrigger, start: datetime, end: datetime) -> list[datetime]:
    """Every fire time of ``trigger`` in ``[start, end)``."""
    out: list[datetime] = []
    t = trigger.get_next_fire_time(None, start)
    while t is not None and t < end:
        out.append(t)
        t = trigger.get_next_fire_time(t, t)
    return out


def longest_gap(expression: str, *, start: datetime, days: int = 7) -> timedelta | None:
    """The longest gap between consecutive firings of ``expression`` over the ``days`` from ``start``
    (UTC); ``None`` when it never fires.

    Bounded work whatever the expression: a firing day's times are the same every day (minutes x
    hours), so at most 84 minute and hour steps and about ``days`` + 1 day steps are taken.
    """
    minute, hour, dom, month, dow = expression.split()
    midnight = datetime(2026, 1, 1, tzinfo=UTC)
    minutes = [t.minute for t in firings(CronTrigger(minute=minute, hour="0", timezone=UTC),
                                         midnight, midnight + timedelta(hours=1))]
    hours = [t.hour for t in firings(CronTrigger(minute="0", hour=hour, timezone=UTC),
                                     midnight, midnight + timedelta(days=1))]
    if not minutes or not hours:
        return None
    daily = [timedelta(hours=h, minutes=m) for h in hours for m in minutes]
    gaps = [b - a for a, b in zip(daily, daily[1:], strict=False)]
    # the firing days: the same schedule fired once a day, at the day's first firing time
    first = daily[0]
    by_day = crontab_trigger(f"{first.seconds // 60 % 60} {first.seconds // 3600} {dom} {month} {dow}")
    day0 = start.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    end = day0 + timedelta(days=days + 1)
    # every firing day from start's through ``days`` on, then one more (at least two in all)
    firing_days: list[datetime] = []
    t = by_day.get_next_fire_time(None, day0)
    while t is not None:
        firing_days.append(t)
        if t >= end and len(firing_days) >= 2:
            break
        t = by_day.get_next_fire_time(t, t)
    if not firing_days:
        return None
    if len(firing_days) >= 2:
        span = daily[-1] - daily[0]
        gaps += [(b - a) - span for a, b in zip(firing_days, firing_days[1:], strict=False)]
    return max(gaps) if gaps else None

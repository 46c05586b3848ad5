"""When a source is synced: ``manual``, ``every 30m`` / ``every 6h`` / ``every 1d``, ``@hourly`` / ``@daily`` /
``@weekly``, or a five-field cron expression (``minute hour day-of-month month day-of-week``, UTC; numbers,
``*``, ``a-b``, ``*/n``, ``a-b/n`` and lists; day of week 0–6 from Sunday, 7 is Sunday too)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

_EVERY = re.compile(r"^every\s+(\d+)\s*(m|min|minutes?|h|hours?|d|days?)$")
_ALIASES = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@weekly": "0 0 * * 0"}
_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7))


def _field(text: str, name: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        match = re.fullmatch(r"(\*|\d+(?:-\d+)?)(?:/(\d+))?", part)
        if not match:
            raise ValueError(f"{name} '{part}' is not a number, a range, '*' or a step")
        base, step = match.group(1), int(match.group(2) or 1)
        if step < 1:
            raise ValueError(f"{name} step must be at least 1")
        if base == "*":
            start, end = low, high
        elif "-" in base:
            start, end = (int(x) for x in base.split("-"))
        else:
            start = end = int(base)
        if not low <= start <= end <= high:
            raise ValueError(f"{name} '{part}' is outside {low}-{high}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class Schedule:
    text: str
    interval: timedelta | None = None
    cron: tuple[frozenset[int], ...] | None = None

    @property
    def manual(self) -> bool:
        return self.interval is None and self.cron is None

    @classmethod
    def parse(cls, text: str | None) -> Schedule:
        """Raises ValueError saying what is wrong."""
        raw = " ".join((text or "manual").split()).lower()
        if raw in ("manual", "never", "off"):
            return cls("manual")
        every = _EVERY.match(raw)
        if every:
            n, unit = int(every.group(1)), every.group(2)[0]
            if n < 1:
                raise ValueError("an interval must be at least 1")
            return cls(raw, interval=timedelta(**{{"m": "minutes", "h": "hours", "d": "days"}[unit]: n}))
        expr = _ALIASES.get(raw, raw)
        parts = expr.split(" ")
        if len(parts) != 5:
            raise ValueError(f"'{text}' is not 'manual', 'every <n>m|h|d', an @alias or a five-field cron expression")
        fields = tuple(_field(p, name, low, high) for p, (name, low, high) in zip(parts, _FIELDS))
        if 7 in fields[4]:
            fields = (*fields[:4], fields[4] | {0})
        return cls(raw, cron=fields)

    def next_after(self, moment: datetime) -> datetime | None:
        """The first due time strictly after ``moment`` (None when manual). Interval schedules count from
        ``moment`` (the last run)."""
        if self.interval is not None:
            return moment + self.interval
        if self.cron is None:
            return None
        minute, hour, dom, month, dow = self.cron
        t = moment.replace(second=0, microsecond=0) + timedelta(minutes=1)
        for _ in range(366 * 24 * 60):  # at most a year of minutes; skips whole days and hours when they cannot match
            if t.month not in month or t.day not in dom or (t.isoweekday() % 7) not in dow:
                t = (t + timedelta(days=1)).replace(hour=0, minute=0)
                continue
            if t.hour not in hour:
                t = (t + timedelta(hours=1)).replace(minute=0)
                continue
            if t.minute in minute:
                return t
            t += timedelta(minutes=1)
        return None

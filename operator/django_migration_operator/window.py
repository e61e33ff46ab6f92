"""spec.window, the maintenance window: when a run may start stopping the app. Pure.

It follows the convention of a Kubernetes CronJob: `schedule` is a cron expression (five fields, or @daily and
the like) of when the window opens, read in `timeZone` (an IANA name, default UTC); `duration` says how long it
stays open ("2h", "90m", "1h30m"). A window that opens once gives `start` (RFC 3339) instead of `schedule`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_DURATION = re.compile(r"^(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?$")
_MACROS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
           "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}
_NAMES = {"jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6, "jul": 7, "aug": 8, "sep": 9, "oct": 10,
          "nov": 11, "dec": 12, "sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}
# (lowest, highest) of minute, hour, day of month, month, day of week (0 and 7 are Sunday).
_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
# Far enough for any schedule that matches at all (29 February recurs within eight years).
_SEARCH_DAYS = 366 * 8


@dataclass(frozen=True)
class Cron:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool  # day of month is *
    any_weekday: bool  # day of week is *

    @classmethod
    def parse(cls, expression: str) -> Cron:
        """Raises ValueError naming what is wrong."""
        fields = _MACROS.get(expression.strip(), expression).split()
        if len(fields) != 5:
            raise ValueError(f"{expression!r} has {len(fields)} fields; a schedule has five: minute hour "
                             "day-of-month month day-of-week, e.g. '0 2 * * 6' for Saturdays at 02:00")
        values = [_field(text, low, high) for text, (low, high) in zip(fields, _RANGES, strict=True)]
        weekdays = frozenset(day % 7 for day in values[4])
        return cls(values[0], values[1], values[2], values[3], weekdays, fields[2] == "*", fields[4] == "*")

    def matches_day(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        by_date, by_weekday = day.day in self.days, (day.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:  # cron: when both are restricted, either one matches
            return by_date and by_weekday
        return by_date or by_weekday


def _field(text: str, low: int, high: int) -> frozenset[int]:
    chosen: set[int] = set()
    for part in text.lower().split(","):
        base, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if base == "*":
            first, last = low, high
        else:
            first_text, _, last_text = base.partition("-")
            first = _number(first_text, low, high)
            last = _number(last_text, low, high) if last_text else (high if step_text else first)
        if step < 1 or first > last:
            raise ValueError(f"{part!r} is not a valid range")
        chosen.update(range(first, last + 1, step))
    return frozenset(chosen)


def _number(text: str, low: int, high: int) -> int:
    value = _NAMES[text] if text in _NAMES else int(text) if text.isdigit() else None
    if value is None or not low <= value <= high:
        raise ValueError(f"{text!r} is not a number from {low} to {high}")
    return value


@dataclass(frozen=True)
class Window:
    duration: timedelta
    zone: ZoneInfo
    cron: Cron | None = None  # recurring
    start: datetime | None = None  # once

    @classmethod
    def from_spec(cls, window: dict[str, Any]) -> Window:
        """Raises ValueError naming the field and the fix."""
        duration = _DURATION.match(str(window.get("duration", "")))
        if not duration or not any(duration.groups()):
            raise ValueError(f"window.duration: {window.get('duration')!r} is not a duration; write it as 2h, 90m "
                             "or 1h30m")
        seconds = int(duration["h"] or 0) * 3600 + int(duration["m"] or 0) * 60 + int(duration["s"] or 0)
        try:
            zone = ZoneInfo(window.get("timeZone") or "UTC")
        except (ZoneInfoNotFoundError, ValueError) as error:
            raise ValueError(f"window.timeZone: {window.get('timeZone')!r} is not a known time zone ({error}); "
                             "use an IANA name such as Europe/Berlin") from None
        if window.get("schedule"):
            try:
                cron = Cron.parse(str(window["schedule"]))
            except (ValueError, KeyError) as error:
                raise ValueError(f"window.schedule: {error}") from None
            return cls(timedelta(seconds=seconds), zone, cron=cron)
        try:
            start = datetime.fromisoformat(str(window.get("start", "")).replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"window.start: {window.get('start')!r} is not an RFC 3339 time, e.g. "
                             "2026-12-05T02:00:00+01:00; or give window.schedule for a recurring window") from None
        return cls(timedelta(seconds=seconds), zone, start=start if start.tzinfo else start.replace(tzinfo=zone))

    @property
    def recurs(self) -> bool:
        return self.cron is not None

    def opening(self, now: datetime, room: timedelta = timedelta(0)) -> tuple[datetime, datetime] | None:
        """The window open now with at least `room` left, else the next one that has it; None when none will.

        Returns (opens, closes) in UTC.
        """
        if room > self.duration:
            return None
        for opens in self._openings(now - self.duration):
            closes = opens + self.duration
            if closes - max(opens, now) >= room:
                return opens.astimezone(UTC), closes.astimezone(UTC)
        return None

    def _openings(self, after: datetime) -> Iterator[datetime]:
        """Every opening at or after `after`, in order."""
        if self.start is not None:
            if self.start >= after:
                yield self.start
            return
        assert self.cron is not None
        local = after.astimezone(self.zone)
        for offset in range(_SEARCH_DAYS):
            day = local.date() + timedelta(days=offset)
            if not self.cron.matches_day(day):
                continue
            for hour in sorted(self.cron.hours):
                for minute in sorted(self.cron.minutes):
                    opens = datetime(day.year, day.month, day.day, hour, minute, tzinfo=self.zone)
                    if opens >= after:
                        yield opens

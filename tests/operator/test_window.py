"""spec.window: cron schedules as a CronJob reads them, time zones, and the opening a run may start in."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

import pytest

from django_migration_operator.window import Cron, Window

SATURDAY_2AM_BERLIN = {"schedule": "0 2 * * sat", "duration": "2h", "timeZone": "Europe/Berlin"}


def test_cron_fields_lists_ranges_steps_and_names() -> None:
    cron = Cron.parse("*/15 1-3,22 * jan-mar mon-fri")
    assert cron.minutes == {0, 15, 30, 45} and cron.hours == {1, 2, 3, 22}
    assert cron.months == {1, 2, 3} and cron.weekdays == {1, 2, 3, 4, 5}
    assert Cron.parse("@daily") == Cron.parse("0 0 * * *")
    assert Cron.parse("0 0 * * 7").weekdays == {0}  # 7 is Sunday too


def test_cron_day_of_month_and_day_of_week_match_either_when_both_are_set() -> None:
    cron = Cron.parse("0 0 13 * fri")  # the 13th, or any Friday, as cron has it
    assert cron.matches_day(date(2026, 12, 13)) and cron.matches_day(date(2026, 12, 4))
    assert not cron.matches_day(date(2026, 12, 5))
    assert not Cron.parse("0 0 13 * *").matches_day(date(2026, 12, 4))


@pytest.mark.parametrize(("expression", "complaint"), [
    ("0 2 * *", "has 4 fields"), ("61 * * * *", "'61' is not a number from 0 to 59"),
    ("0 2 * * funday", "'funday' is not a number"), ("5-1 * * * *", "'5-1' is not a valid range"),
])
def test_a_bad_schedule_is_refused_naming_the_field(expression: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=r"window\.schedule") as refused:
        Window.from_spec({"schedule": expression, "duration": "1h"})
    assert complaint in str(refused.value)


@pytest.mark.parametrize(("window", "field"), [
    ({"schedule": "0 2 * * *", "duration": "two hours"}, "window.duration"),
    ({"schedule": "0 2 * * *", "duration": "1h", "timeZone": "Mars/Olympus"}, "window.timeZone"),
    ({"start": "next tuesday", "duration": "1h"}, "window.start"),
])
def test_bad_window_fields_are_named(window: dict[str, str], field: str) -> None:
    with pytest.raises(ValueError, match=re.escape(field)):
        Window.from_spec(window)


def test_a_weekly_window_in_its_time_zone() -> None:
    window = Window.from_spec(SATURDAY_2AM_BERLIN)
    friday = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    # 02:00 in Berlin in winter is 01:00 UTC.
    assert window.opening(friday) == (datetime(2026, 12, 5, 1, 0, tzinfo=UTC), datetime(2026, 12, 5, 3, 0, tzinfo=UTC))
    during = datetime(2026, 12, 5, 2, 30, tzinfo=UTC)
    assert window.opening(during) == (datetime(2026, 12, 5, 1, 0, tzinfo=UTC), datetime(2026, 12, 5, 3, 0, tzinfo=UTC))
    summer = window.opening(datetime(2026, 7, 3, 12, 0, tzinfo=UTC))
    assert summer is not None and summer[0] == datetime(2026, 7, 4, 0, 0, tzinfo=UTC)  # CEST: UTC+2


def test_a_window_with_too_little_left_gives_the_next_one() -> None:
    window = Window.from_spec(SATURDAY_2AM_BERLIN)
    late = datetime(2026, 12, 5, 2, 30, tzinfo=UTC)  # 30 minutes left
    this_week, next_week = datetime(2026, 12, 5, 1, 0, tzinfo=UTC), datetime(2026, 12, 12, 1, 0, tzinfo=UTC)
    assert window.opening(late, room=timedelta(minutes=20)) == (this_week, this_week + timedelta(hours=2))
    assert window.opening(late, room=timedelta(minutes=40)) == (next_week, next_week + timedelta(hours=2))
    assert window.opening(late, room=timedelta(hours=3)) is None  # longer than any window


def test_a_window_that_opens_once() -> None:
    window = Window.from_spec({"start": "2026-12-05T02:00:00+01:00", "duration": "90m"})
    assert not window.recurs
    before = datetime(2026, 12, 1, tzinfo=UTC)
    assert window.opening(before) == (datetime(2026, 12, 5, 1, 0, tzinfo=UTC), datetime(2026, 12, 5, 2, 30, tzinfo=UTC))
    assert window.opening(datetime(2026, 12, 5, 3, 0, tzinfo=UTC)) is None  # over

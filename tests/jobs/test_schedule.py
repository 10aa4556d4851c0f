"""Schedule maths: presets, cron validation, time zones and DST, catch-up windows."""

from datetime import UTC, datetime

import pytest

from jobs import schedule
from jobs.schedule import ScheduleError


def utc(*args):
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("kind", "kwargs", "cron"),
    [
        ("hourly", {"minute": 15}, "15 * * * *"),
        ("daily", {"minute": 30, "hour": 6}, "30 6 * * *"),
        ("weekly", {"minute": 0, "hour": 9, "weekday": 0}, "0 9 * * 1"),
        ("weekly", {"minute": 0, "hour": 9, "weekday": 6}, "0 9 * * 0"),
        ("monthly", {"minute": 5, "hour": 4, "day": 31}, "5 4 31 * *"),
    ],
)
def test_presets_compile_to_cron_and_back(kind, kwargs, cron):
    assert schedule.preset_to_cron(kind, **kwargs) == cron
    back = schedule.cron_to_preset(cron)
    assert back["kind"] == kind
    for key, value in kwargs.items():
        assert back[key] == value


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "* * * *",
        "61 * * * *",
        "* * * * * *",
        "a b c d e",
        "@reboot",
        "0 25 * * *",
        "0 0 30 2 *",
        "0 0 31 4,6 *",
    ],
)
def test_bad_cron_is_rejected_with_a_reason(bad):
    with pytest.raises(ScheduleError) as exc:
        schedule.validate_cron(bad)
    assert str(exc.value)


def test_cron_is_normalised():
    assert schedule.validate_cron("  */15   8-18 * *  1-5 ") == "*/15 8-18 * * 1-5"


@pytest.mark.parametrize("bad", ["", "Mars/Olympus", "utc+2", "Europe/Berln"])
def test_unknown_time_zone_is_rejected(bad):
    with pytest.raises(ScheduleError):
        schedule.validate_timezone(bad)


def test_out_of_range_presets_are_rejected():
    with pytest.raises(ScheduleError):
        schedule.preset_to_cron("daily", minute=0, hour=24)
    with pytest.raises(ScheduleError):
        schedule.preset_to_cron("monthly", day=0)
    with pytest.raises(ScheduleError):
        schedule.preset_to_cron("fortnightly")


def test_next_slot_is_in_the_jobs_time_zone():
    # 06:00 in Berlin is 05:00 UTC in winter.
    assert schedule.next_slot_after("0 6 * * *", "Europe/Berlin", utc(2026, 1, 10, 12)) == utc(
        2026, 1, 11, 5
    )


def test_daily_slot_follows_the_wall_clock_across_spring_forward():
    # Berlin moves from UTC+1 to UTC+2 on 2026-03-29: 06:00 local is 05:00 UTC before,
    # 04:00 UTC after.
    slots = schedule.upcoming_slots("0 6 * * *", "Europe/Berlin", utc(2026, 3, 27, 12), 3)
    assert slots == [utc(2026, 3, 28, 5), utc(2026, 3, 29, 4), utc(2026, 3, 30, 4)]


def test_slot_in_the_skipped_hour_runs_once_at_the_next_valid_time():
    # 02:30 does not exist in Berlin on 2026-03-29; the run happens that day, not skipped.
    slots = schedule.upcoming_slots("30 2 * * *", "Europe/Berlin", utc(2026, 3, 28, 12), 2)
    assert slots[0].date().isoformat() == "2026-03-29"
    assert slots[0] < slots[1]
    assert slots[1] == utc(2026, 3, 30, 0, 30)


def test_slot_in_the_repeated_hour_runs_once_on_fall_back():
    # 02:30 happens twice in Berlin on 2026-10-25; there is exactly one slot that day.
    slots = schedule.upcoming_slots("30 2 * * *", "Europe/Berlin", utc(2026, 10, 24, 12), 3)
    days = [s.astimezone(schedule.ZoneInfo("Europe/Berlin")).date().isoformat() for s in slots]
    assert days == ["2026-10-25", "2026-10-26", "2026-10-27"]


def test_slots_between_keeps_the_newest():
    after, until = utc(2026, 1, 1, 0, 0), utc(2026, 1, 1, 5, 30)
    assert schedule.slots_between("0 * * * *", "UTC", after, until, limit=100) == [
        utc(2026, 1, 1, h) for h in range(1, 6)
    ]
    assert schedule.slots_between("0 * * * *", "UTC", after, until, limit=2) == [
        utc(2026, 1, 1, 4),
        utc(2026, 1, 1, 5),
    ]


def test_description_in_words_names_the_zone():
    words = schedule.describe("0 6 * * 1", "Europe/Berlin")
    assert "06:00" in words and "Monday" in words and "Europe/Berlin" in words


def test_hourly_jobs_keep_their_interval_through_the_repeated_hour():
    # A wildcard hour runs every real hour, both 02:00 CEST (00:00 UTC) and 02:00 CET (01:00 UTC).
    slots = schedule.slots_between(
        "0 * * * *", "Europe/Berlin", utc(2026, 10, 24, 22), utc(2026, 10, 25, 22), limit=100
    )
    assert slots == [utc(2026, 10, 24, 23)] + [utc(2026, 10, 25, h) for h in range(0, 23)]


def test_memoised_slots_tell_the_two_repeated_hours_apart():
    from zoneinfo import ZoneInfo

    berlin = ZoneInfo("Europe/Berlin")
    first = datetime(2026, 10, 25, 2, 30, tzinfo=berlin)  # CEST, 00:30 UTC
    second = first.replace(fold=1)  # CET, 01:30 UTC: equal as a key before, an hour later
    assert schedule.next_slot_after("*/15 * * * *", "UTC", first) == datetime(
        2026, 10, 25, 0, 45, tzinfo=UTC
    )
    assert schedule.next_slot_after("*/15 * * * *", "UTC", second) == datetime(
        2026, 10, 25, 1, 45, tzinfo=UTC
    )

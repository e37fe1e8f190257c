"""Calendar arithmetic for billing periods: month ends clamp to the anchor day, as Stripe bills."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta

SECONDS_PER_DAY = 86400


def add_interval(anchor: int, interval: str, count: int, periods: int) -> int:
    """Return the timestamp ``periods`` billing intervals after ``anchor``, keeping the anchor's day and time."""
    start = datetime.fromtimestamp(anchor, UTC)
    steps = count * periods
    if interval == "day":
        return int((start + timedelta(days=steps)).timestamp())
    if interval == "week":
        return int((start + timedelta(weeks=steps)).timestamp())
    months = steps * (12 if interval == "year" else 1)
    if interval not in ("month", "year"):
        raise ValueError(f"unknown interval {interval!r}")
    month_index = start.month - 1 + months
    year, month = start.year + month_index // 12, month_index % 12 + 1
    # Jan 31 + 1 month is Feb 28 (or 29); the next period returns to the 31st, like Stripe's anchor.
    day = min(start.day, calendar.monthrange(year, month)[1])
    return int(start.replace(year=year, month=month, day=day).timestamp())

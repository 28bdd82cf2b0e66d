"""Time windows and buckets: ``"24h"`` → a half-open UTC interval, cut into buckets.

Every metric is computed over a ``TimeWindow`` ``[start, end)``. Series are cut into
``minute``, ``hour`` or ``day`` buckets with ``date_trunc``, which both DuckDB and
PostgreSQL evaluate identically on the naive-UTC timestamps the stores keep.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, get_args

Bucket = Literal["minute", "hour", "day"]
BUCKETS: tuple[Bucket, ...] = get_args(Bucket)
BUCKET_SIZE: dict[Bucket, timedelta] = {
    "minute": timedelta(minutes=1),
    "hour": timedelta(hours=1),
    "day": timedelta(days=1),
}
#: The most buckets one series may have (a 7-day window by the minute is too many).
MAX_BUCKETS = 20_000

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)$")
_UNITS = {"s": "seconds", "m": "minutes", "min": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class WindowError(ValueError):
    """A window, duration or bucket is malformed; the message names it."""


def parse_duration(text: str, *, name: str = "window") -> timedelta:
    """``"30m"``, ``"24h"``, ``"7d"``, ``"2w"``, ``"90s"`` → a positive timedelta."""
    match = _DURATION.match(str(text).strip().lower())
    if not match:
        raise WindowError(f"{name}: {text!r} is not a duration like 5m, 2h, 24h or 7d")
    try:
        value = timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
    except OverflowError:
        raise WindowError(f"{name}: {text!r} is too long a duration") from None
    if value <= timedelta(0):
        raise WindowError(f"{name}: {text!r} must be longer than zero")
    if value > timedelta(days=3660):
        raise WindowError(f"{name}: {text!r} is longer than ten years")
    return value


def format_duration(value: timedelta) -> str:
    """The shortest of ``"90s"``, ``"5m"``, ``"2h"``, ``"7d"`` that states ``value`` exactly."""
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def parse_time(text: str, *, name: str = "end") -> datetime:
    """An ISO-8601 time (``Z`` or an offset; naive means UTC) → an aware UTC datetime."""
    try:
        value = datetime.fromisoformat(str(text).strip().replace("Z", "+00:00"))
    except ValueError:
        raise WindowError(f"{name}: {text!r} is not an ISO-8601 time") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def naive(value: datetime) -> datetime:
    """The naive-UTC form the stores compare against."""
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value


def aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def parse_bucket(text: str | None) -> Bucket | None:
    if text is None or text == "" or text == "none":
        return None
    if text not in BUCKETS:
        raise WindowError(f"bucket: {text!r} is not one of {', '.join(BUCKETS)}")
    return text


@dataclass(frozen=True)
class TimeWindow:
    """The half-open interval ``[start, end)`` in UTC (aware datetimes)."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise WindowError("window: start and end must be timezone-aware")
        if self.end <= self.start:
            raise WindowError("window: end must be after start")

    @classmethod
    def last(cls, duration: str | timedelta, *, end: datetime | None = None) -> TimeWindow:
        """The ``duration`` ending at ``end`` (default: now)."""
        length = parse_duration(duration) if isinstance(duration, str) else duration
        stop = aware(end) if end is not None else datetime.now(UTC)
        return cls(stop - length, stop)

    @property
    def length(self) -> timedelta:
        return self.end - self.start

    def before(self, duration: str | timedelta) -> TimeWindow:
        """The window of ``duration`` that ends where this one starts (a baseline)."""
        length = (
            parse_duration(duration, name="baseline") if isinstance(duration, str) else duration
        )
        return TimeWindow(self.start - length, self.start)

    def contains(self, value: datetime) -> bool:
        return self.start <= aware(value) < self.end

    def bucket_starts(self, bucket: Bucket) -> list[datetime]:
        """Every bucket start that overlaps the window, oldest first."""
        return list(_iter_buckets(self, bucket))

    def to_dict(self) -> dict[str, str]:
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "length": format_duration(self.length),
        }


def truncate(value: datetime, bucket: Bucket) -> datetime:
    """``date_trunc(bucket, value)`` in Python (UTC)."""
    value = aware(value)
    if bucket == "minute":
        return value.replace(second=0, microsecond=0)
    if bucket == "hour":
        return value.replace(minute=0, second=0, microsecond=0)
    return value.replace(hour=0, minute=0, second=0, microsecond=0)


def _iter_buckets(window: TimeWindow, bucket: Bucket) -> Iterator[datetime]:
    step = BUCKET_SIZE[bucket]
    if window.length / step > MAX_BUCKETS:
        raise WindowError(
            f"bucket: a {format_duration(window.length)} window has more than {MAX_BUCKETS} "
            f"{bucket} buckets; choose a coarser bucket"
        )
    current = truncate(window.start, bucket)
    while current < window.end:
        yield current
        current += step


def default_bucket(window: TimeWindow) -> Bucket:
    """Minutes up to 3 hours, hours up to 14 days, days beyond."""
    if window.length <= timedelta(hours=3):
        return "minute"
    if window.length <= timedelta(days=14):
        return "hour"
    return "day"


def bucket_sql(bucket: Bucket, column: str) -> str:
    """SQL for the bucket start of ``column`` (the same on DuckDB and PostgreSQL)."""
    if bucket not in BUCKETS:  # guards the literal against injection
        raise WindowError(f"bucket: {bucket!r} is not one of {', '.join(BUCKETS)}")
    return f"date_trunc('{bucket}', {column})"

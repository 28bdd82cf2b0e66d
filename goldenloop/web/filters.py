"""Query-string → SessionFilter, shared by the JSON API, the pages and the CLI."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from goldenloop.model import SLICE_DIMENSIONS, SessionFilter

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
RESERVED_PARAMS = frozenset({"project", "since", "until", "limit", "offset", "format"})
MAX_PAGE = 500


class FilterError(ValueError):
    """A filter parameter is malformed; the message names it."""


def parse_duration(text: str) -> timedelta:
    match = _DURATION.match(text.strip().lower())
    if not match:
        raise FilterError(f"{text!r} is not a duration like 30m, 24h or 7d")
    try:
        return timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
    except OverflowError:
        raise FilterError(f"{text!r} is too long a duration") from None


def parse_time(name: str, text: str, now: datetime | None = None) -> datetime:
    """An ISO-8601 time, or a duration meaning that long before now."""
    now = now or datetime.now(UTC)
    if _DURATION.match(text.strip().lower()):
        try:
            return now - parse_duration(text)
        except (FilterError, OverflowError):  # OverflowError: before year 1
            raise FilterError(f"{name}: {text!r} is too long a duration") from None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise FilterError(
            f"{name}: {text!r} is neither an ISO-8601 time nor a duration like 24h"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def parse_session_query(
    params: Iterable[tuple[str, str]], *, default_limit: int = 50
) -> tuple[SessionFilter, int, int]:
    """(filter, limit, offset) from query parameters.

    Besides project/since/until/limit/offset, any slice dimension (``locale=de-DE``),
    ``attr.KEY=VALUE`` for a raw span attribute and ``flag.KEY=VARIANT`` for a feature
    flag are accepted; anything else is an error naming the parameter.
    """
    project = since = until = None
    limit, offset = default_limit, 0
    dims: list[tuple[str, str]] = []
    attrs: list[tuple[str, str]] = []
    flags: list[tuple[str, str]] = []
    for key, value in params:
        if key == "project":
            project = value
        elif key == "since":
            since = parse_time("since", value)
        elif key == "until":
            until = parse_time("until", value)
        elif key in ("limit", "offset"):
            try:
                number = int(value)
            except ValueError:
                raise FilterError(f"{key}: expected an integer, got {value!r}") from None
            if key == "limit" and not 1 <= number <= MAX_PAGE:
                raise FilterError(f"limit: must be between 1 and {MAX_PAGE}")
            if number < 0:
                raise FilterError(f"{key}: must not be negative")
            limit, offset = (number, offset) if key == "limit" else (limit, number)
        elif key == "format":
            continue
        elif key.startswith("attr.") and len(key) > 5:
            attrs.append((key[5:], value))
        elif key.startswith("flag.") and len(key) > 5:
            flags.append((key[5:], value))
        elif key in SLICE_DIMENSIONS or key in ("session_id", "status", "name"):
            dims.append((key, value))
        else:
            raise FilterError(
                f"unknown filter {key!r}: use project, since, until, limit, offset, one of "
                f"{', '.join(SLICE_DIMENSIONS)}, attr.NAME or flag.NAME"
            )
    flt = SessionFilter(
        project=project,
        since=since,
        until=until,
        dimensions=tuple(dims),
        attributes=tuple(attrs),
        feature_flags=tuple(flags),
    )
    return flt, limit, offset

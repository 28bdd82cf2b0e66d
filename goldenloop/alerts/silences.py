"""Silences: label matchers that mute matching alerts until an end time.

A silenced alert still changes state (and shows on the alerts page as silenced), but
no notifier hears about it. As in Alertmanager, a silence needs at least one matcher
that does not match the empty string, so one silence cannot mute everything by
accident. Expiring a silence ends it now.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from goldenloop.alerts.matchers import Matcher, MatcherError, matches_all, parse_matchers
from goldenloop.alerts.model import aware, iso
from goldenloop.metrics.windows import naive
from goldenloop.store.base import Store

SilenceState = Literal["pending", "active", "expired"]
_COLUMNS = "id, matchers, starts_at, ends_at, created_by, comment, created_at, expired_at"


class SilenceError(ValueError):
    """A silence request is invalid; the message names the field."""


@dataclass
class Silence:
    id: str
    matchers: tuple[Matcher, ...]
    starts_at: datetime
    ends_at: datetime
    created_by: str | None
    comment: str | None
    created_at: datetime
    expired_at: datetime | None = None

    def state(self, now: datetime) -> SilenceState:
        if self.expired_at is not None or now >= self.ends_at:
            return "expired"
        return "active" if now >= self.starts_at else "pending"

    def mutes(self, labels: Mapping[str, str], now: datetime) -> bool:
        return self.state(now) == "active" and matches_all(self.matchers, labels)

    def to_dict(self, now: datetime) -> dict[str, Any]:
        return {
            "id": self.id,
            "matchers": [str(m) for m in self.matchers],
            "starts_at": iso(self.starts_at),
            "ends_at": iso(self.ends_at),
            "created_by": self.created_by,
            "comment": self.comment,
            "created_at": iso(self.created_at),
            "expired_at": iso(self.expired_at),
            "state": self.state(now),
        }

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Silence:
        matchers = tuple(Matcher.build(m["name"], m["op"], m["value"]) for m in json.loads(row[1]))
        starts, ends, created = (aware(v) for v in (row[2], row[3], row[6]))
        assert starts is not None and ends is not None and created is not None
        return cls(str(row[0]), matchers, starts, ends, row[4], row[5], created, aware(row[7]))


def create_silence(
    store: Store,
    matchers: Any,
    *,
    now: datetime,
    ends_at: datetime | None = None,
    duration: timedelta | None = None,
    starts_at: datetime | None = None,
    created_by: str | None = None,
    comment: str | None = None,
) -> Silence:
    """Validate and store a silence; ``ends_at`` or ``duration`` (from ``starts_at``)."""
    try:
        parsed = parse_matchers(matchers)
    except MatcherError as exc:
        raise SilenceError(str(exc)) from None
    if not parsed:
        raise SilenceError("matchers: give at least one (e.g. alertname=refund-burn)")
    if all(m.matches({}) for m in parsed):
        raise SilenceError(
            "matchers: at least one matcher must not match an empty label, or the silence "
            "would mute every alert"
        )
    now = aware(now) or now
    start = aware(starts_at) or now
    if (ends_at is None) == (duration is None):
        raise SilenceError("ends_at: give exactly one of ends_at or duration")
    end = aware(ends_at) if ends_at is not None else start + (duration or timedelta(0))
    assert end is not None
    if end <= start:
        raise SilenceError("ends_at: must be after starts_at")
    if end <= now:
        raise SilenceError("ends_at: must be in the future")
    silence = Silence(uuid.uuid4().hex, parsed, start, end, created_by, comment, now)
    store.execute(
        f"INSERT INTO alert_silences ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            silence.id,
            json.dumps([m.to_dict() for m in parsed]),
            naive(start),
            naive(end),
            created_by,
            comment,
            naive(now),
            None,
        ],  # fmt: skip
    )
    return silence


def expire_silence(store: Store, silence_id: str, *, now: datetime) -> bool:
    """End a silence now; False when it does not exist or already ended."""
    rows = store.fetch(
        "SELECT 1 FROM alert_silences WHERE id = ? AND expired_at IS NULL AND ends_at > ?",
        [silence_id, naive(now)],
    )
    if not rows:
        return False
    store.execute("UPDATE alert_silences SET expired_at = ? WHERE id = ?", [naive(now), silence_id])
    return True


def list_silences(store: Store, *, now: datetime, include_expired: bool = False,
                  expired_since: timedelta = timedelta(days=7)) -> list[Silence]:  # fmt: skip
    """Silences, newest first; expired ones from the last week when asked."""
    if include_expired:
        rows = store.fetch(
            f"SELECT {_COLUMNS} FROM alert_silences WHERE ends_at >= ? OR expired_at >= ? "
            "ORDER BY created_at DESC, id",
            [naive(now - expired_since), naive(now - expired_since)],
        )
    else:
        rows = store.fetch(
            f"SELECT {_COLUMNS} FROM alert_silences WHERE expired_at IS NULL AND ends_at > ? "
            "ORDER BY created_at DESC, id",
            [naive(now)],
        )
    return [Silence.from_row(r) for r in rows]


def silenced_by(silences: Sequence[Silence], labels: Mapping[str, str], now: datetime) -> list[str]:
    """Ids of the silences muting ``labels`` now."""
    return [s.id for s in silences if s.mutes(labels, now)]

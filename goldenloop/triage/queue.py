"""The triage queue: items, their impact ranking, and reads for the CLI, API and page.

An item groups flagged sessions that share a dedupe key (``goldenloop.flags.feedback``
builds them). Impact is ``frequency × revenue-tier weight × severity``; the queue is
ordered by impact, then most recent, then id, so the same data always gives the same
order.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from goldenloop.flags._sql import utcnow
from goldenloop.model import SessionDetail
from goldenloop.store.base import Store

#: Item life cycle: backlog (grouped, not yet in the annotation queue) → open →
#: labelled → resolved (a linked golden case passed in holdout, or closed by hand).
ITEM_STATUSES: tuple[str, ...] = ("backlog", "open", "labelled", "resolved")

ITEM_COLUMNS: tuple[str, ...] = (
    "id", "dedupe_key", "project", "source", "primary_rule", "rules", "category", "title",
    "question", "prompt_hash", "session_id", "trace_id", "frequency", "revenue_tier",
    "tier_weight", "severity", "impact", "priority", "status", "first_seen_at",
    "last_seen_at", "created_at", "queued_at", "due_at", "label", "owner", "notes",
    "failure_modes", "criteria", "labelled_at", "golden_case_id", "case_merged_at",
    "resolved_at", "resolution", "updated_at",
)  # fmt: skip
_SELECT = ", ".join(ITEM_COLUMNS)
#: Deterministic queue order.
RANK_ORDER = "impact DESC, last_seen_at DESC, id"


def impact_of(frequency: int, tier_weight: float, severity: int) -> float:
    return round(float(frequency) * float(tier_weight) * float(severity), 6)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() + "Z" if value is not None else None


@dataclass
class TriageItem:
    id: str
    dedupe_key: str
    project: str
    source: str
    primary_rule: str
    rules: list[str]
    category: str | None
    title: str
    question: str | None
    prompt_hash: str | None
    session_id: str
    trace_id: str | None
    frequency: int
    revenue_tier: str | None
    tier_weight: float
    severity: int
    impact: float
    priority: str
    status: str
    first_seen_at: datetime
    last_seen_at: datetime
    created_at: datetime
    queued_at: datetime | None
    due_at: datetime | None
    label: str | None
    owner: str | None
    notes: str | None
    failure_modes: list[str]
    criteria: str | None
    labelled_at: datetime | None
    golden_case_id: str | None
    case_merged_at: datetime | None
    resolved_at: datetime | None
    resolution: str | None
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> TriageItem:
        values = dict(zip(ITEM_COLUMNS, row, strict=True))
        values["rules"] = json.loads(values["rules"] or "[]")
        values["failure_modes"] = json.loads(values["failure_modes"] or "[]")
        values["frequency"] = int(values["frequency"])
        values["severity"] = int(values["severity"])
        values["impact"] = float(values["impact"])
        values["tier_weight"] = float(values["tier_weight"])
        return cls(**values)

    def is_overdue(self, now: datetime | None = None) -> bool:
        """A P0 item whose time-to-eval target passed without a merged golden case."""
        now = now or utcnow()
        return (
            self.due_at is not None
            and self.case_merged_at is None
            and self.status != "resolved"
            and self.label not in ("expected-behavior", "known-issue")
            and now > self.due_at
        )

    @property
    def time_to_eval_hours(self) -> float | None:
        """Hours from the first report/flag to the merged golden case."""
        if self.case_merged_at is None:
            return None
        return round((self.case_merged_at - self.first_seen_at) / timedelta(hours=1), 2)

    def age_hours(self, now: datetime | None = None) -> float:
        return round(((now or utcnow()) - self.first_seen_at) / timedelta(hours=1), 2)

    def golden_source(self) -> str:
        """The ``source`` a golden case promoted from this item carries."""
        day = self.first_seen_at.date().isoformat()
        return f"thumbs-down-{day}" if self.source == "feedback" else "manual"

    def to_dict(self, now: datetime | None = None) -> dict[str, Any]:
        now = now or utcnow()
        data: dict[str, Any] = {name: getattr(self, name) for name in ITEM_COLUMNS}
        for key, value in data.items():
            if isinstance(value, datetime):
                data[key] = _iso(value)
        data["overdue"] = self.is_overdue(now)
        data["time_to_eval_hours"] = self.time_to_eval_hours
        data["age_hours"] = self.age_hours(now)
        data["golden_source"] = self.golden_source()
        return data


@dataclass
class FlagSummary:
    id: str
    rule: str
    session_id: str
    reason: str
    score: float | None
    severity: int
    status: str
    event_time: datetime
    trace_id: str | None
    details: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "rule": self.rule,
            "session_id": self.session_id,
            "reason": self.reason,
            "score": self.score,
            "severity": self.severity,
            "status": self.status,
            "event_time": _iso(self.event_time),
            "trace_id": self.trace_id,
            "details": self.details,
        }


@dataclass
class LabelRecord:
    id: str
    label: str
    owner: str | None
    notes: str | None
    failure_modes: list[str]
    criteria: str | None
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "label": self.label,
            "owner": self.owner,
            "notes": self.notes,
            "failure_modes": self.failure_modes,
            "criteria": self.criteria,
            "created_at": _iso(self.created_at),
        }


@dataclass
class ItemDetail:
    """One item with everything a reviewer needs: its flags, member sessions, label
    history and the trace replay of its representative session."""

    item: TriageItem
    flags: list[FlagSummary]
    sessions: list[str]
    labels: list[LabelRecord]
    replay: SessionDetail | None
    now: datetime = field(default_factory=utcnow)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.item.to_dict(self.now),
            "flags": [f.to_dict() for f in self.flags],
            "sessions": self.sessions,
            "labels": [label.to_dict() for label in self.labels],
            "replay": self.replay.to_dict() if self.replay is not None else None,
        }


@dataclass(frozen=True)
class QueueFilter:
    statuses: tuple[str, ...] = ("open",)
    project: str | None = None
    priority: str | None = None
    label: str | None = None
    overdue_only: bool = False
    #: Only items with a flag at or after this time.
    seen_since: datetime | None = None

    def __post_init__(self) -> None:
        bad = [s for s in self.statuses if s not in ITEM_STATUSES]
        if bad:
            raise ValueError(f"status: unknown {bad}; use {', '.join(ITEM_STATUSES)}")
        if self.priority is not None and self.priority not in ("P0", "P1", "P2", "P3"):
            raise ValueError(f"priority: must be P0, P1, P2 or P3, got {self.priority!r}")


def list_items(
    store: Store,
    flt: QueueFilter | None = None,
    *,
    limit: int = 50,
    offset: int = 0,
    now: datetime | None = None,
) -> list[TriageItem]:
    """Items in queue order (impact, then recency, then id)."""
    flt = flt or QueueFilter()
    now = now or utcnow()
    clauses = [f"status IN ({', '.join('?' for _ in flt.statuses)})"]
    params: list[Any] = list(flt.statuses)
    for column in ("project", "priority", "label"):
        value = getattr(flt, column)
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if flt.seen_since is not None:
        clauses.append("last_seen_at >= ?")
        params.append(flt.seen_since)
    if flt.overdue_only:
        clauses.append(
            "due_at IS NOT NULL AND case_merged_at IS NULL AND status <> 'resolved' "
            "AND (label IS NULL OR label NOT IN ('expected-behavior', 'known-issue')) "
            "AND due_at < ?"
        )
        params.append(now)
    rows = store.fetch(
        f"SELECT {_SELECT} FROM triage_items WHERE {' AND '.join(clauses)} "
        f"ORDER BY {RANK_ORDER} LIMIT ? OFFSET ?",
        [*params, limit, offset],
    )
    return [TriageItem.from_row(r) for r in rows]


def count_items(store: Store) -> dict[str, int]:
    rows = store.fetch("SELECT status, count(*) FROM triage_items GROUP BY status")
    counts = {status: 0 for status in ITEM_STATUSES}
    counts.update({str(r[0]): int(r[1]) for r in rows})
    return counts


def get_item(store: Store, item_id: str) -> TriageItem | None:
    rows = store.fetch(f"SELECT {_SELECT} FROM triage_items WHERE id = ?", (item_id,))
    return TriageItem.from_row(rows[0]) if rows else None


def item_flags(store: Store, item_id: str) -> list[FlagSummary]:
    rows = store.fetch(
        "SELECT id, rule, session_id, reason, score, severity, status, event_time, trace_id, "
        "details FROM flags WHERE item_id = ? ORDER BY severity DESC, event_time, id",
        (item_id,),
    )
    return [
        FlagSummary(
            id=r[0],
            rule=r[1],
            session_id=r[2],
            reason=r[3],
            score=r[4],
            severity=int(r[5]),
            status=r[6],
            event_time=r[7],
            trace_id=r[8],
            details=json.loads(r[9] or "{}"),
        )  # fmt: skip
        for r in rows
    ]


def item_sessions(store: Store, item_id: str) -> list[str]:
    rows = store.fetch(
        "SELECT session_id FROM triage_members WHERE item_id = ? ORDER BY added_at, session_id",
        (item_id,),
    )
    return [str(r[0]) for r in rows]


def item_labels(store: Store, item_id: str) -> list[LabelRecord]:
    rows = store.fetch(
        "SELECT id, label, owner, notes, failure_modes, criteria, created_at FROM triage_labels "
        "WHERE item_id = ? ORDER BY created_at DESC, id",
        (item_id,),
    )
    return [LabelRecord(r[0], r[1], r[2], r[3], json.loads(r[4] or "[]"), r[5], r[6]) for r in rows]


def item_detail(store: Store, item_id: str, *, now: datetime | None = None) -> ItemDetail | None:
    item = get_item(store, item_id)
    if item is None:
        return None
    return ItemDetail(
        item=item,
        flags=item_flags(store, item_id),
        sessions=item_sessions(store, item_id),
        labels=item_labels(store, item_id),
        replay=store.get_session(item.session_id),
        now=now or utcnow(),
    )

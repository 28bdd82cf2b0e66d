"""The thumbs-down → golden-case pipeline, and the queue refresh that feeds triage.

1. **Capture**: feedback arrives through ``POST /api/v1/feedback`` or
   ``goldenloop.sdk.feedback`` (session, message, category, prompt/model hashes) and the
   ``thumbs_down`` rule flags the session, severity by category (P0 for unsafe and
   billing-wrong).
2. **Queue**: ``refresh_queue`` (nightly in ``goldenloop serve``, or on demand) folds
   queued flags into triage items. Flags whose session, failure (rule, or rule and
   feedback category), prompt hash and normalized question agree share an item, so a
   hundred identical complaints are one item with frequency 100. Items are ranked by
   ``frequency × revenue-tier weight × severity``; the ``top_n`` highest backlog items
   (and every P0) enter the annotation queue.
3. **Label** and 4. **Promote**: ``goldenloop.triage.labels``; an ``add-to-eval`` item is
   what golden-set promotion picks up (``items_ready_for_promotion``).
5. **Close the loop**: ``goldenloop.flags.closeloop``.

Time-to-eval runs from an item's first report to its merged golden case; P0 items get
a due time (``p0_target_hours``, 72 by default) and show as overdue after it.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from goldenloop.flags._sql import insert_rows, is_root, naive, utcnow
from goldenloop.flags.config import QueueSettings
from goldenloop.flags.rules import priority_of, rule_names
from goldenloop.store.base import Store
from goldenloop.triage.queue import (
    ITEM_COLUMNS,
    RANK_ORDER,
    QueueFilter,
    TriageItem,
    impact_of,
    list_items,
)

_CHUNK = 400
_QUESTION_LOOKBACK = timedelta(days=2)
_NUMBER = re.compile(r"\d+")
_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


def normalize_question(text: str | None, limit: int = 160) -> str:
    """What makes two user messages "the same complaint": case, digits (order numbers,
    amounts) and punctuation do not matter."""
    if not text:
        return ""
    words = _NON_WORD.sub(" ", text.lower())
    return " ".join(_NUMBER.sub("#", words).split())[:limit]


def dedupe_key(project: str, family: str, prompt_hash: str | None, question: str) -> str:
    return "|".join((project, family, prompt_hash or "-", question))


def item_id_for(key: str) -> str:
    return hashlib.md5(key.encode("utf-8")).hexdigest()[:12]


@dataclass
class QueueRefresh:
    id: str
    started_at: datetime
    finished_at: datetime | None = None
    flags_folded: int = 0
    items_created: int = 0
    items_updated: int = 0
    items_reopened: int = 0
    items_opened: int = 0
    items_resolved: int = 0
    resolved: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "started_at": self.started_at.isoformat() + "Z",
            "finished_at": self.finished_at.isoformat() + "Z" if self.finished_at else None,
            "flags_folded": self.flags_folded,
            "items_created": self.items_created,
            "items_updated": self.items_updated,
            "items_reopened": self.items_reopened,
            "items_opened": self.items_opened,
            "items_resolved": self.items_resolved,
            "resolved": self.resolved,
        }


@dataclass
class _Flag:
    id: str
    rule: str
    session_id: str
    project: str
    tier: str | None
    trace_id: str | None
    reason: str
    score: float
    severity: int
    event_time: datetime
    category: str | None


_PENDING = "status = 'queued' AND item_id IS NULL"


def _pending_flags(store: Store) -> list[_Flag]:
    rows = store.fetch(
        "SELECT id, rule, session_id, project, customer_tier, trace_id, reason, score, "
        f"severity, event_time, details FROM flags WHERE {_PENDING} ORDER BY event_time, id"
    )
    flags = []
    for r in rows:
        details = json.loads(r[10] or "{}")
        category = details.get("category") if r[1] == "thumbs_down" else None
        flags.append(
            _Flag(
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                r[5],
                r[6],
                float(r[7] or 0.0),
                int(r[8]),
                r[9],
                category,
            )  # fmt: skip
        )
    return flags


def _turn_context(
    store: Store, floor: datetime
) -> tuple[dict[tuple[str, str], tuple[str | None, str | None]], dict[str, str]]:
    """(session, trace) → (question, prompt hash), and session → its first trace."""
    rows = store.fetch(
        f"SELECT session_id, trace_id, max(CASE WHEN {is_root()} THEN input_text END), "
        "max(prompt_hash), min(start_time) FROM spans "
        f"WHERE start_time >= ? AND session_id IN (SELECT session_id FROM flags WHERE {_PENDING}) "
        "GROUP BY session_id, trace_id",
        (floor,),
    )
    turns: dict[tuple[str, str], tuple[str | None, str | None]] = {}
    first: dict[str, tuple[datetime, str]] = {}
    for session_id, trace_id, question, prompt_hash, started in rows:
        turns[(session_id, trace_id)] = (question, prompt_hash)
        if session_id not in first or (started, trace_id) < first[session_id]:
            first[session_id] = (started, trace_id)
    return turns, {s: t for s, (_, t) in first.items()}


def _chunks(values: Sequence[Any]) -> list[Sequence[Any]]:
    return [values[i : i + _CHUNK] for i in range(0, len(values), _CHUNK)]


def _items_where(store: Store, column: str, values: Sequence[str]) -> dict[str, TriageItem]:
    found: dict[str, TriageItem] = {}
    for chunk in _chunks(sorted(set(values))):
        marks = ", ".join("?" for _ in chunk)
        rows = store.fetch(
            f"SELECT {', '.join(ITEM_COLUMNS)} FROM triage_items WHERE {column} IN ({marks})",
            list(chunk),
        )
        for row in rows:
            item = TriageItem.from_row(row)
            found[getattr(item, column)] = item
    return found


def _memberships(store: Store) -> dict[str, str]:
    rows = store.fetch(
        "SELECT session_id, min(item_id) FROM triage_members WHERE session_id IN "
        f"(SELECT session_id FROM flags WHERE {_PENDING}) GROUP BY session_id"
    )
    return {str(r[0]): str(r[1]) for r in rows}


def _primary(flags: list[_Flag], order: dict[str, int]) -> _Flag:
    return max(flags, key=lambda f: (f.severity, -order.get(f.rule, 99), f.score, f.id))


def _new_item(key: str, flag: _Flag, question: str | None, prompt_hash: str | None,
              now: datetime) -> TriageItem:  # fmt: skip
    family = flag.rule + (f" ({flag.category})" if flag.category else "")
    title = flag.reason if len(flag.reason) <= 160 else flag.reason[:157] + "…"
    return TriageItem(
        id=item_id_for(key), dedupe_key=key, project=flag.project,
        source="feedback" if flag.rule == "thumbs_down" else "flag", primary_rule=flag.rule,
        rules=[], category=flag.category, title=title or family,
        question=(question or "")[:500] or None, prompt_hash=prompt_hash,
        session_id=flag.session_id, trace_id=flag.trace_id, frequency=0, revenue_tier=None,
        tier_weight=1.0, severity=flag.severity, impact=0.0, priority=priority_of(flag.severity),
        status="backlog", first_seen_at=flag.event_time, last_seen_at=flag.event_time,
        created_at=now, queued_at=None, due_at=None, label=None, owner=None, notes=None,
        failure_modes=[], criteria=None, labelled_at=None, golden_case_id=None,
        case_merged_at=None, resolved_at=None, resolution=None, updated_at=now,
    )  # fmt: skip


def _fold(store: Store, settings: QueueSettings, now: datetime, result: QueueRefresh) -> None:
    flags = _pending_flags(store)
    if not flags:
        return
    turns, first_trace = _turn_context(store, min(f.event_time for f in flags) - _QUESTION_LOOKBACK)
    members = _memberships(store)
    order = {name: i for i, name in enumerate(rule_names())}
    by_session: dict[str, list[_Flag]] = defaultdict(list)
    for flag in flags:
        by_session[flag.session_id].append(flag)

    # Which item each session joins: its current item, else the item of its dedupe key.
    target_of: dict[str, str] = {}
    keys: dict[str, tuple[_Flag, str | None, str | None]] = {}
    for session_id, session_flags in by_session.items():
        if session_id in members:
            target_of[session_id] = members[session_id]
            continue
        primary = _primary(session_flags, order)
        trace = primary.trace_id or first_trace.get(session_id)
        question, prompt_hash = turns.get((session_id, trace or ""), (None, None))
        family = primary.rule + (":" + primary.category if primary.category else "")
        key = dedupe_key(primary.project, family, prompt_hash, normalize_question(question))
        keys.setdefault(key, (primary, question, prompt_hash))
        target_of[session_id] = item_id_for(key)

    items = _items_where(store, "id", list(set(target_of.values())))
    for key, (primary, question, prompt_hash) in keys.items():
        if item_id_for(key) not in items:
            items[item_id_for(key)] = _new_item(key, primary, question, prompt_hash, now)
            result.items_created += 1

    touched: dict[str, TriageItem] = {}
    new_members: list[tuple[str, str, datetime]] = []
    flag_items: list[tuple[str, str]] = []
    for session_id, session_flags in by_session.items():
        item = items[target_of[session_id]]
        if session_id not in members:
            new_members.append((item.id, session_id, now))
        for flag in session_flags:
            flag_items.append((flag.id, item.id))
            if flag.rule not in item.rules:
                item.rules.append(flag.rule)
            item.severity = max(item.severity, flag.severity)
            item.first_seen_at = min(item.first_seen_at, flag.event_time)
            item.last_seen_at = max(item.last_seen_at, flag.event_time)
            weight = settings.weight_of(flag.tier)
            if item.revenue_tier is None or weight > item.tier_weight:
                item.revenue_tier, item.tier_weight = flag.tier, weight
        touched[item.id] = item

    insert_rows(store, "triage_members", ("item_id", "session_id", "added_at"), new_members)
    counts = _member_counts(store, list(touched))
    for item in touched.values():
        if item.created_at != now:
            result.items_updated += 1
        item.frequency = counts.get(item.id, 1)
        item.rules.sort(key=lambda r: order.get(r, 99))
        item.priority = priority_of(item.severity)
        item.impact = impact_of(item.frequency, item.tier_weight, item.severity)
        if item.priority == "P0" and item.due_at is None:
            item.due_at = item.first_seen_at + timedelta(hours=settings.p0_target_hours)
        if item.status == "resolved" and any(m[0] == item.id for m in new_members):
            item.status = "open"
            item.resolution = f"reopened {now:%Y-%m-%d}: recurred after it was resolved"
            result.items_reopened += 1
        item.updated_at = now
    _upsert_items(store, list(touched.values()))
    store_flag_items(store, flag_items)
    result.flags_folded = len(flags)


def _member_counts(store: Store, item_ids: Sequence[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for chunk in _chunks(list(item_ids)):
        marks = ", ".join("?" for _ in chunk)
        rows = store.fetch(
            f"SELECT item_id, count(*) FROM triage_members WHERE item_id IN ({marks}) "
            "GROUP BY item_id",
            list(chunk),
        )
        counts.update({str(r[0]): int(r[1]) for r in rows})
    return counts


def _upsert_items(store: Store, items: Sequence[TriageItem]) -> None:
    mutable = [c for c in ITEM_COLUMNS if c not in ("id", "dedupe_key", "created_at")]
    rows = []
    for item in items:
        values = []
        for column in ITEM_COLUMNS:
            value = getattr(item, column)
            values.append(json.dumps(value) if column in ("rules", "failure_modes") else value)
        rows.append(values)
    insert_rows(
        store,
        "triage_items",
        ITEM_COLUMNS,
        rows,
        on_conflict="(id) DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in mutable),
        chunk=100,
    )


def store_flag_items(store: Store, pairs: Sequence[tuple[str, str]]) -> None:
    for chunk in _chunks(list(pairs)):
        values = ", ".join("(CAST(? AS VARCHAR), CAST(? AS VARCHAR))" for _ in chunk)
        store.execute(
            f"UPDATE flags SET item_id = v.item_id FROM (VALUES {values}) AS v(id, item_id) "
            "WHERE flags.id = v.id",
            [x for pair in chunk for x in pair],
        )


def _open_top(store: Store, settings: QueueSettings, now: datetime) -> int:
    rows = store.fetch(
        f"SELECT id FROM triage_items WHERE status = 'backlog' ORDER BY {RANK_ORDER} LIMIT ?",
        (settings.top_n,),
    )
    p0 = store.fetch("SELECT id FROM triage_items WHERE status = 'backlog' AND priority = 'P0'")
    ids = sorted({str(r[0]) for r in rows} | {str(r[0]) for r in p0})
    for chunk in _chunks(ids):
        marks = ", ".join("?" for _ in chunk)
        store.execute(
            f"UPDATE triage_items SET status = 'open', queued_at = ?, updated_at = ? "
            f"WHERE id IN ({marks})",
            [now, now, *chunk],
        )
    return len(ids)


def refresh_queue(
    store: Store,
    settings: QueueSettings | None = None,
    *,
    now: datetime | None = None,
    notify: Sequence[Any] = (),
) -> QueueRefresh:
    """The nightly job: fold new flags into items (dedupe), rank them, open the top
    items, and close the loop on items whose golden case now passes in holdout."""
    from goldenloop.flags.closeloop import close_the_loop

    settings = settings or QueueSettings()
    clock = naive(now) if now else utcnow()
    result = QueueRefresh(id=uuid.uuid4().hex, started_at=utcnow())
    _fold(store, settings, clock, result)
    result.items_opened = _open_top(store, settings, clock)
    result.resolved = close_the_loop(store, settings, notify=notify, now=clock)
    result.items_resolved = len(result.resolved)
    result.finished_at = utcnow()
    store.execute(
        "INSERT INTO triage_runs (id, started_at, finished_at, flags_folded, items_created, "
        "items_opened, items_resolved) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (result.id, result.started_at, result.finished_at, result.flags_folded,
         result.items_created, result.items_opened, result.items_resolved),
    )  # fmt: skip
    return result


def last_refresh_at(store: Store) -> datetime | None:
    rows = store.fetch("SELECT max(finished_at) FROM triage_runs")
    return rows[0][0] if rows else None


def pending_flag_count(store: Store) -> int:
    return int(store.fetch(f"SELECT count(*) FROM flags WHERE {_PENDING}")[0][0])


def items_ready_for_promotion(store: Store, *, limit: int = 100) -> list[TriageItem]:
    """Items labelled ``add-to-eval`` with no golden case yet, highest impact first: the
    hand-over to golden-set promotion (``TriageItem.golden_source()`` gives the source,
    ``thumbs-down-YYYY-MM-DD`` for feedback items)."""
    rows = list_items(store, QueueFilter(statuses=("labelled", "open")), limit=10_000, now=utcnow())
    ready = [i for i in rows if i.label == "add-to-eval" and i.golden_case_id is None]
    return ready[:limit]


@dataclass
class TimeToEval:
    """Time-to-eval across items: merged cases and the P0 clock."""

    merged: int
    median_hours: float | None
    p90_hours: float | None
    p0_open: list[TriageItem]
    p0_overdue: list[TriageItem]
    target_hours: int
    now: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "merged": self.merged,
            "median_hours": self.median_hours,
            "p90_hours": self.p90_hours,
            "target_hours": self.target_hours,
            "p0_open": [i.to_dict(self.now) for i in self.p0_open],
            "p0_overdue": [i.to_dict(self.now) for i in self.p0_overdue],
        }


def time_to_eval(
    store: Store, settings: QueueSettings | None = None, *, now: datetime | None = None
) -> TimeToEval:
    settings = settings or QueueSettings()
    clock = naive(now) if now else utcnow()
    rows = store.fetch(
        "SELECT case_merged_at, first_seen_at FROM triage_items WHERE case_merged_at IS NOT NULL"
    )
    hours = sorted(float((merged - first) / timedelta(hours=1)) for merged, first in rows)

    def pct(q: float) -> float | None:
        if not hours:
            return None
        return round(hours[min(len(hours) - 1, int(q * (len(hours) - 1) + 0.5))], 2)

    p0 = list_items(
        store, QueueFilter(statuses=("backlog", "open", "labelled"), priority="P0"),
        limit=1000, now=clock,
    )  # fmt: skip
    open_p0 = [i for i in p0 if i.case_merged_at is None]
    overdue = [i for i in open_p0 if i.is_overdue(clock)]
    return TimeToEval(len(hours), pct(0.5), pct(0.9), open_p0, overdue,
                      settings.p0_target_hours, clock)  # fmt: skip

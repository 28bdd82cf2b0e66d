"""Close the loop: link triage items to the golden cases promoted from them, resolve an
item once its case passes in holdout, and run the notification hooks.

Links come from the golden-set index when it exists (``golden_cases.flag_id`` naming
one of the item's flags or the item itself, or ``golden_cases.feedback_id`` naming
feedback on one of its sessions) or from ``goldenloop.triage.labels.link_golden_case``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from goldenloop.flags._sql import naive, table_columns, table_exists, utcnow
from goldenloop.flags.config import NotifierSpec, QueueSettings
from goldenloop.flags.notify import NOTIFIERS, LoopEvent, Reporter
from goldenloop.store.base import Store
from goldenloop.triage.queue import TriageItem, get_item

log = logging.getLogger("goldenloop.flags")


def sync_golden_links(store: Store) -> int:
    """Copy links recorded by golden-set promotion onto items; return how many."""
    if not table_exists(store, "golden_cases"):
        return 0
    columns = table_columns(store, "golden_cases")
    merged = "coalesce(g.promoted_at, g.created_at)" if "promoted_at" in columns else "g.created_at"
    live = " AND g.removed_at IS NULL" if "removed_at" in columns else ""
    sources = []
    if "flag_id" in columns:
        sources.append(
            f"SELECT t.id AS item_id, g.case_id, {merged} AS merged_at FROM triage_items t "
            "JOIN flags f ON f.item_id = t.id "
            f"JOIN golden_cases g ON (g.flag_id = f.id OR g.flag_id = t.id){live} "
            "WHERE t.golden_case_id IS NULL"
        )
    if "feedback_id" in columns:
        sources.append(
            f"SELECT t.id AS item_id, g.case_id, {merged} AS merged_at FROM triage_items t "
            "JOIN triage_members m ON m.item_id = t.id "
            "JOIN feedback fb ON fb.session_id = m.session_id "
            f"JOIN golden_cases g ON g.feedback_id = fb.id{live} "
            "WHERE t.golden_case_id IS NULL"
        )
    if not sources:
        return 0
    rows = store.fetch(
        "SELECT item_id, min(case_id), min(merged_at) FROM ("
        + " UNION ALL ".join(sources)
        + ") AS links GROUP BY item_id"
    )
    for item_id, case_id, merged_at in rows:
        store.execute(
            "UPDATE triage_items SET golden_case_id = ?, case_merged_at = ?, updated_at = ? "
            "WHERE id = ? AND golden_case_id IS NULL",
            (case_id, merged_at, utcnow(), item_id),
        )
    return len(rows)


def _passed_in(store: Store, splits: Sequence[str]) -> list[tuple[str, str, datetime]]:
    """(item id, run id, run time) for unresolved items whose case passed in ``splits``
    after it merged."""
    if not splits or not (table_exists(store, "eval_results") and table_exists(store, "eval_runs")):
        return []
    marks = ", ".join("?" for _ in splits)
    rows = store.fetch(
        "SELECT t.id, min(e.id), min(e.started_at) FROM triage_items t "
        "JOIN eval_results r ON r.case_id = t.golden_case_id "
        "JOIN eval_runs e ON e.id = r.run_id "
        f"WHERE t.status <> 'resolved' AND r.passed AND r.split IN ({marks}) "
        "AND (t.case_merged_at IS NULL OR e.started_at >= t.case_merged_at) "
        "GROUP BY t.id ORDER BY t.id",
        list(splits),
    )
    return [(str(r[0]), str(r[1]), r[2]) for r in rows]


def reporters_of(store: Store, item_id: str) -> tuple[Reporter, ...]:
    rows = store.fetch(
        "SELECT fb.id, fb.session_id, fb.user_id, fb.message_id, fb.category FROM feedback fb "
        "JOIN triage_members m ON m.session_id = fb.session_id "
        "WHERE m.item_id = ? AND fb.rating = 'down' ORDER BY fb.created_at, fb.id",
        (item_id,),
    )
    return tuple(Reporter(r[0], r[1], r[2], r[3], r[4]) for r in rows)


def notify_all(
    store: Store, event: LoopEvent, specs: Sequence[NotifierSpec | Mapping[str, Any]]
) -> list[tuple[str, bool, str | None]]:
    """Run every configured notifier; failures are logged and recorded, never raised."""
    results = []
    for spec in specs:
        kind, options = (
            (spec.type, spec.options)
            if isinstance(spec, NotifierSpec)
            else (str(spec["type"]), {k: v for k, v in spec.items() if k != "type"})
        )
        error = None
        try:
            NOTIFIERS[kind](event, options)
        except Exception as exc:  # a dead webhook must not stop resolution
            error = f"{type(exc).__name__}: {exc}"
            log.warning("notifier %s failed for item %s: %s", kind, event.item_id, error)
        store.execute(
            "INSERT INTO triage_notifications (id, item_id, notifier, event, ok, error, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (uuid.uuid4().hex, event.item_id, kind, event.event, error is None, error, utcnow()),
        )
        results.append((kind, error is None, error))
    return results


def resolve_item(
    store: Store,
    item_id: str,
    resolution: str,
    *,
    notify: Sequence[NotifierSpec | Mapping[str, Any]] = (),
    now: datetime | None = None,
) -> TriageItem:
    """Mark an item resolved and run the notification hooks."""
    item = get_item(store, item_id)
    if item is None:
        raise LookupError(f"no triage item {item_id!r}")
    when = naive(now) if now else utcnow()
    store.execute(
        "UPDATE triage_items SET status = 'resolved', resolved_at = ?, resolution = ?, "
        "updated_at = ? WHERE id = ?",
        (when, resolution, when, item_id),
    )
    resolved = get_item(store, item_id)
    assert resolved is not None
    if notify:
        event = LoopEvent(
            event="resolved", item_id=item_id, project=resolved.project, title=resolved.title,
            priority=resolved.priority, golden_case_id=resolved.golden_case_id,
            resolution=resolution, at=when, reporters=reporters_of(store, item_id),
        )  # fmt: skip
        notify_all(store, event, notify)
    return resolved


def close_the_loop(
    store: Store,
    settings: QueueSettings | None = None,
    *,
    notify: Sequence[NotifierSpec | Mapping[str, Any]] = (),
    now: datetime | None = None,
) -> list[str]:
    """Resolve every item whose linked golden case passed in holdout; return their ids."""
    settings = settings or QueueSettings()
    sync_golden_links(store)
    resolved = []
    for item_id, run_id, _run_at in _passed_in(store, settings.resolve_splits):
        item = get_item(store, item_id)
        splits = "/".join(settings.resolve_splits)
        text = f"golden case {item.golden_case_id if item else '?'} passed in {splits} (eval run {run_id})"
        resolve_item(store, item_id, text, notify=notify, now=now)
        resolved.append(item_id)
    return resolved

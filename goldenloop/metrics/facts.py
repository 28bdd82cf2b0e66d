"""Keeping ``metric_turns`` and ``metric_sessions`` in step with spans and events.

Turn and session metrics read these facts instead of regrouping millions of spans by
trace and session on every query. ``ensure_turn_facts`` runs before each metrics query:

1. **Fresh?** It compares ``max(ingested_at)`` and the number of spans ingested since
   the last watermark (minus ``OVERLAP``) with what the last refresh saw, and the
   feedback/outcome counts likewise; when nothing changed it returns at once.
2. **Incremental spans**: the traces of every span ingested since
   ``watermark − OVERLAP`` are recomputed from all their spans (a late child span
   updates its turn), then their sessions from all their turns, in one transaction. The
   overlap covers spans normalized before the watermark but committed after the last
   refresh read it.
3. **Incremental events**: feedback and outcome events created since the last refresh's
   cutoff (its newest event minus ``EVENT_OVERLAP``) update their sessions' counts. If
   events appeared *before* that cutoff (counted by ``created_at``), every session's
   counts are recomputed.
4. **Full rebuild** when there is no state yet or the signal configuration changed
   (the facts' fingerprint is the SQL that computes them).

A session's facts cover all of its turns and all of its events. Spans written without
``ingested_at`` are only picked up by a full rebuild. A store that cannot be written (a
read-only DuckDB file) or is not SQL-backed makes the metrics fall back to aggregating
spans on the fly; results are the same.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from goldenloop.metrics.dimensions import Dimension
from goldenloop.metrics.signals import SignalConfig, SqlEnv
from goldenloop.metrics.turns import turn_rows_sql
from goldenloop.store.base import Store
from goldenloop.store.schema.metrics import (
    SESSION_EVENT_COUNTS,
    TURN_FACT_DIMENSIONS,
    TURN_FACT_FEATURES,
)
from goldenloop.store.sql import SqlStore

#: Re-read spans ingested this long before the watermark (commit lag of the writer).
OVERLAP = timedelta(seconds=30)
#: Events created this long before the newest one are re-read on the next refresh.
EVENT_OVERLAP = timedelta(hours=1)
#: Spans of a recomputed trace are read this far around the new spans' start times.
TRACE_SPAN = timedelta(hours=1)
_STATE = "turn_facts"
_VERSION = "3"
_LOCKS: dict[int, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()
_FEATURES = tuple(n for n, _ in TURN_FACT_FEATURES)
_COLUMNS = ("trace_id", "session_id", "ts", *TURN_FACT_DIMENSIONS, *_FEATURES)
_SESSION_COLUMNS = ("session_id", "turn_count", "ts", *TURN_FACT_DIMENSIONS, *_FEATURES)
#: table → (count columns, their SQL over the table's rows)
EVENT_COUNTS: dict[str, tuple[tuple[str, str], ...]] = {
    "feedback": (
        ("fb_up", "sum(CASE WHEN rating = 'up' THEN 1 ELSE 0 END)"),
        ("fb_down", "sum(CASE WHEN rating = 'down' THEN 1 ELSE 0 END)"),
    ),
    "outcomes": (
        ("oc_succeeded", "sum(CASE WHEN success THEN 1 ELSE 0 END)"),
        ("oc_failed", "sum(CASE WHEN success THEN 0 ELSE 1 END)"),
    ),
}
assert tuple(c for counts in EVENT_COUNTS.values() for c, _ in counts) == SESSION_EVENT_COUNTS
_STATE_SQL = (
    "INSERT INTO metric_state (name, value, updated_at) VALUES (?, ?, ?) "
    "ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at"
)
Statements = list[tuple[str, Sequence[Any]]]


def _lock(store: Store) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(id(store), threading.Lock())


def fingerprint(env: SqlEnv) -> str:
    """Changes whenever the SQL that computes the facts would change."""
    digest = hashlib.sha256(_VERSION.encode())
    digest.update(_rows_sql(env, "TRUE").encode())
    return digest.hexdigest()[:16]


def _rows_sql(env: SqlEnv, where: str) -> str:
    dims = [(name, Dimension(name, name)) for name in TURN_FACT_DIMENSIONS]
    return turn_rows_sql(env, dims, _FEATURES, where)


def _insert_sql(env: SqlEnv, where: str) -> str:
    columns = ", ".join(_COLUMNS)
    return f"INSERT INTO metric_turns ({columns}) SELECT {columns} FROM ({_rows_sql(env, where)}) r"


def event_counts_sql(table: str, where: str = "TRUE") -> str:
    """Per-session event counts of ``table`` (columns: session_id and the counts)."""
    counts = ", ".join(f"{sql} AS {name}" for name, sql in EVENT_COUNTS[table])
    return f"SELECT session_id, {counts} FROM {table} WHERE {where} GROUP BY session_id"


def _session_insert_sql(where: str) -> str:
    """Session facts from the turn facts (first turn's start, the largest value of each
    dimension, every feature summed) plus the session's event counts."""
    select = ["session_id", "count(*) AS turn_count", "min(ts) AS ts"]
    select += [f"max({d}) AS {d}" for d in TURN_FACT_DIMENSIONS]
    select += [f"sum({f}) AS {f}" for f in _FEATURES]
    sessions = (
        f"SELECT {', '.join(select)} FROM metric_turns WHERE session_id IS NOT NULL "
        f"AND {where} GROUP BY session_id"
    )
    joins, counts = "", []
    for alias, table in (("f", "feedback"), ("o", "outcomes")):
        scope = f"session_id IN (SELECT session_id FROM ({sessions}) s_{alias})"
        joins += f" LEFT JOIN ({event_counts_sql(table, scope)}) {alias} ON {alias}.session_id = s.session_id"
        counts += [f"coalesce({alias}.{name}, 0)" for name, _ in EVENT_COUNTS[table]]
    columns = ", ".join([*_SESSION_COLUMNS, *SESSION_EVENT_COUNTS])
    picked = ", ".join([*(f"s.{c}" for c in _SESSION_COLUMNS), *counts])
    return f"INSERT INTO metric_sessions ({columns}) SELECT {picked} FROM ({sessions}) s{joins}"


def _event_update(table: str, scope: str | None) -> Statements:
    """Recompute one table's counts for the sessions in ``scope`` (SQL selecting
    session ids, with one ``?``), or for every session when None."""
    names = [name for name, _ in EVENT_COUNTS[table]]
    only = f" WHERE session_id IN ({scope})" if scope else ""
    reset = f"UPDATE metric_sessions SET {', '.join(f'{n} = 0' for n in names)}{only}"
    counts = event_counts_sql(table, f"session_id IN ({scope})" if scope else "TRUE")
    update = (
        f"UPDATE metric_sessions SET {', '.join(f'{n} = e.{n}' for n in names)} "
        f"FROM ({counts}) e WHERE metric_sessions.session_id = e.session_id"
    )
    return [(reset, ()), (update, ())]


def _read_state(store: Store) -> dict[str, Any]:
    rows = store.fetch("SELECT value FROM metric_state WHERE name = ?", [_STATE])
    data: dict[str, Any] = json.loads(rows[0][0]) if rows else {}
    return data


def _tail_count(store: Store, since: datetime) -> int:
    return int(store.fetch("SELECT count(*) FROM spans WHERE ingested_at >= ?", [since])[0][0])


def _read_only(exc: Exception) -> bool:
    text = str(exc).lower()
    return "read-only" in text or "read only" in text or "permission denied" in text


def ensure_turn_facts(store: Store, env: SqlEnv) -> bool:
    """Bring the turn and session facts up to date; False when they cannot be used."""
    if not isinstance(store, SqlStore):
        return False
    with _lock(store):
        try:
            return _refresh(store, env)
        except Exception as exc:
            if _read_only(exc):
                return False
            raise


def refresh_facts(store: Store, signals: SignalConfig | None = None) -> bool:
    """Bring the facts up to date now (e.g. right after a bulk load or at server start,
    so the first metrics query does not pay for a full build)."""
    return ensure_turn_facts(store, SqlEnv(store.dialect, signals or SignalConfig()))


def _refresh(store: SqlStore, env: SqlEnv) -> bool:
    state = _read_state(store)
    mark = fingerprint(env)
    newest = store.fetch("SELECT max(ingested_at) FROM spans")[0][0]
    # Counted before any work: spans committed meanwhile change the count, so the next
    # refresh sees them even when their ingested_at is not newer than ``newest``.
    tail = _tail_count(store, newest - OVERLAP) if newest is not None else 0
    previous = datetime.fromisoformat(state["watermark"]) if state.get("watermark") else None
    statements: Statements = []
    rebuild = state.get("fingerprint") != mark or (newest is not None and previous is None)
    if rebuild:
        statements = [
            ("DELETE FROM metric_turns", ()),
            (_insert_sql(env, "TRUE"), ()),
            ("DELETE FROM metric_sessions", ()),
            (_session_insert_sql("TRUE"), ()),
        ]
    elif newest is not None and previous is not None:
        if newest != previous or tail != state.get("tail"):
            statements = _incremental(store, env, previous - OVERLAP)
    events: dict[str, dict[str, Any]] = {}
    for table in EVENT_COUNTS:
        marks, update = _event_plan(store, table, (state.get("events") or {}).get(table), rebuild)
        events[table] = marks
        statements += update
    if not statements and not rebuild:
        return True
    value = json.dumps({
        "fingerprint": mark,
        "watermark": newest.isoformat() if newest is not None else None,
        "tail": tail,
        "events": events,
    })  # fmt: skip
    now = datetime.now(UTC).replace(tzinfo=None)
    store._run_in_transaction([*statements, (_STATE_SQL, [_STATE, value, now])])
    return True


def _event_plan(
    store: Store, table: str, previous: dict[str, Any] | None, rebuild: bool
) -> tuple[dict[str, Any], Statements]:
    """(new marks, statements) for one event table."""
    total, newest = store.fetch(f"SELECT count(*), max(created_at) FROM {table}")[0]
    cutoff = newest - EVENT_OVERLAP if newest is not None else None
    head = (
        int(store.fetch(f"SELECT count(*) FROM {table} WHERE created_at < ?", [cutoff])[0][0])
        if cutoff is not None
        else 0
    )
    marks = {"total": int(total), "cutoff": cutoff.isoformat() if cutoff else None, "head": head}
    if rebuild:
        return marks, []  # the session inserts count every event
    if previous is None:
        return marks, _event_update(table, None)
    if int(total) == previous.get("total"):
        return marks, []
    old_cutoff = previous.get("cutoff")
    if old_cutoff is None:
        return marks, _event_update(table, None)
    before = store.fetch(
        f"SELECT count(*) FROM {table} WHERE created_at < ?", [datetime.fromisoformat(old_cutoff)]
    )[0][0]
    if int(before) != previous.get("head"):
        return marks, _event_update(table, None)  # an event arrived with an old timestamp
    since = datetime.fromisoformat(old_cutoff).isoformat(sep=" ")  # our own value, re-formatted
    scope = f"SELECT session_id FROM {table} WHERE created_at >= TIMESTAMP '{since}'"
    return marks, _event_update(table, scope)


def _incremental(store: SqlStore, env: SqlEnv, since: datetime) -> Statements:
    bounds = store.fetch(
        "SELECT min(start_time), max(start_time) FROM spans WHERE ingested_at >= ?", [since]
    )[0]
    if bounds[0] is None:
        return []
    lo, hi = bounds[0] - TRACE_SPAN, bounds[1] + TRACE_SPAN
    touched = "SELECT trace_id FROM spans WHERE ingested_at >= ?"
    where = f"start_time >= ? AND start_time <= ? AND trace_id IN ({touched})"
    params = [lo, hi, since]
    sessions = "SELECT session_id FROM spans WHERE ingested_at >= ? AND session_id IS NOT NULL"
    return [
        (f"DELETE FROM metric_turns WHERE trace_id IN ({touched})", [since]),
        (_insert_sql(env, where), params + params),
        (f"DELETE FROM metric_sessions WHERE session_id IN ({sessions})", [since]),
        (_session_insert_sql(f"session_id IN ({sessions})"), [since] * 3),
    ]

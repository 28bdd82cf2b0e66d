"""The flag engine: run rules over new data (incremental) or a time range (backfill).

Incremental runs keep a watermark, the ``ingested_at`` of the newest span already
evaluated. Each run looks only at sessions that received spans since then (minus a
small overlap for writers that commit slightly out of order), plus, for time-based
rules, sessions that went quiet since the previous run. The first run has no
watermark and evaluates everything once.

Every rule's candidates go through the same SQL wrapper: one flag per (rule, session)
ever (the id is ``md5(rule:session)``), a deterministic sample (``sample_rate``),
``min_score``, and a daily cap per rule that keeps the highest scores. Held-back flags
are stored too (``sampled_out`` / ``capped``), so a burst is visible without flooding
the queue. All of it runs inside the database: nothing loops over sessions in Python.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from goldenloop.flags._sql import dumps, hash_bucket, naive, utcnow
from goldenloop.flags.rules import (
    CANDIDATE_COLUMNS,
    ConfiguredRule,
    RuleContext,
    Scope,
    default_rules,
)
from goldenloop.store.base import Dialect, Store

log = logging.getLogger("goldenloop.flags")

ENGINE_STATE = "engine"
#: Spans ingested up to this long before the watermark are looked at again, in case a
#: writer committed them after a newer batch.
DEFAULT_OVERLAP = timedelta(minutes=2)
#: How far before the earliest new span a session's older spans are read.
DEFAULT_LOOKBACK = timedelta(hours=24)
STATUSES = ("queued", "sampled_out", "capped")


@dataclass
class RuleOutcome:
    new: int = 0
    queued: int = 0
    sampled_out: int = 0
    capped: int = 0
    seconds: float = 0.0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "new": self.new,
            "queued": self.queued,
            "sampled_out": self.sampled_out,
            "capped": self.capped,
            "seconds": round(self.seconds, 4),
            "error": self.error,
        }


@dataclass
class FlagRun:
    """What one engine run did."""

    id: str
    mode: str
    started_at: datetime
    finished_at: datetime | None = None
    range_from: datetime | None = None
    range_to: datetime | None = None
    watermark: datetime | None = None
    spans_seen: int = 0
    by_rule: dict[str, RuleOutcome] = field(default_factory=dict)

    @property
    def flags_new(self) -> int:
        return sum(o.new for o in self.by_rule.values())

    @property
    def flags_queued(self) -> int:
        return sum(o.queued for o in self.by_rule.values())

    @property
    def errors(self) -> dict[str, str]:
        return {name: o.error for name, o in self.by_rule.items() if o.error}

    @property
    def seconds(self) -> float:
        if self.finished_at is None:
            return 0.0
        return (self.finished_at - self.started_at).total_seconds()

    def to_dict(self) -> dict[str, Any]:
        iso = _iso
        return {
            "id": self.id,
            "mode": self.mode,
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "seconds": round(self.seconds, 3),
            "range_from": iso(self.range_from),
            "range_to": iso(self.range_to),
            "watermark": iso(self.watermark),
            "spans_seen": self.spans_seen,
            "flags_new": self.flags_new,
            "flags_queued": self.flags_queued,
            "by_rule": {name: o.to_dict() for name, o in self.by_rule.items()},
            "errors": self.errors,
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() + "Z" if value is not None else None


def insert_flags_sql(configured: ConfiguredRule, candidate_sql: str, dialect: Dialect) -> str:
    """Wrap a rule's candidate SQL with dedupe, sampling, min_score, the daily cap and
    the insert. Placeholders, in order: run id, created_at, default severity, rule
    name (sampling), rule name, the candidate's own, min_score (when set), rule name
    (cap lookup)."""
    policy = configured.policy
    threshold = int(round(policy.sample_rate * 10_000))
    bucket = hash_bucket(dialect, "? || ':' || c0.session_id")
    columns = ", ".join(CANDIDATE_COLUMNS)
    min_score = " AND c0.score >= ?" if policy.min_score is not None else ""
    if policy.daily_cap is None:
        status = "CASE WHEN NOT r.sampled THEN 'sampled_out' ELSE 'queued' END"
    else:
        status = (
            "CASE WHEN NOT r.sampled THEN 'sampled_out' "
            f"WHEN r.rnk + coalesce(u.used, 0) > {int(policy.daily_cap)} THEN 'capped' "
            "ELSE 'queued' END"
        )
    return f"""
        INSERT INTO flags (id, rule, session_id, project, customer_tier, trace_id, reason,
                           score, severity, status, event_time, event_day, details, run_id,
                           created_at)
        SELECT r.id, r.rule, r.session_id, r.project, r.customer_tier, r.trace_id, r.reason,
               r.score, r.severity, {status}, r.event_time, r.event_day, r.details, ?, ?
        FROM (
            SELECT c.*, row_number() OVER (PARTITION BY c.event_day, c.sampled
                                           ORDER BY c.score DESC NULLS LAST, c.id) AS rnk
            FROM (
                SELECT md5(c0.rule || ':' || c0.session_id) AS id, c0.rule, c0.session_id,
                       coalesce(c0.project, 'default') AS project, c0.customer_tier,
                       c0.trace_id, c0.score, coalesce(c0.severity, ?) AS severity,
                       coalesce(c0.reason, c0.rule) AS reason, c0.event_time,
                       date_trunc('day', c0.event_time) AS event_day, c0.details,
                       {bucket} < {threshold} AS sampled
                FROM (
                    SELECT CAST(? AS VARCHAR) AS rule, CAST(c1.session_id AS VARCHAR) AS session_id,
                           CAST(c1.project AS VARCHAR) AS project,
                           CAST(c1.customer_tier AS VARCHAR) AS customer_tier,
                           CAST(c1.trace_id AS VARCHAR) AS trace_id,
                           CAST(c1.score AS DOUBLE PRECISION) AS score,
                           CAST(c1.severity AS INTEGER) AS severity,
                           CAST(c1.reason AS VARCHAR) AS reason,
                           CAST(c1.event_time AS TIMESTAMP) AS event_time,
                           CAST(c1.details AS VARCHAR) AS details,
                           row_number() OVER (PARTITION BY c1.session_id
                                              ORDER BY c1.score DESC NULLS LAST) AS one
                    FROM ({candidate_sql}) AS c1({columns})
                    WHERE c1.session_id IS NOT NULL AND c1.event_time IS NOT NULL
                ) AS c0
                WHERE c0.one = 1{min_score}
                  AND NOT EXISTS (SELECT 1 FROM flags f
                                  WHERE f.rule = c0.rule AND f.session_id = c0.session_id)
            ) AS c
        ) AS r
        LEFT JOIN (
            SELECT event_day, count(*) AS used FROM flags
            WHERE rule = ? AND status = 'queued' GROUP BY event_day
        ) AS u ON u.event_day = r.event_day
        ON CONFLICT DO NOTHING
    """


def _run_rule(
    store: Store, ctx: RuleContext, configured: ConfiguredRule, run_id: str
) -> RuleOutcome:
    outcome = RuleOutcome()
    started = time.perf_counter()
    query = configured.rule.candidates(ctx)
    sql = insert_flags_sql(configured, query.sql, store.dialect)
    policy = configured.policy
    params: list[Any] = [run_id, ctx.now, configured.severity]
    params += [configured.name, configured.name, *query.params]
    if policy.min_score is not None:
        params.append(policy.min_score)
    params.append(configured.name)
    store.execute(sql, params)
    outcome.seconds = time.perf_counter() - started
    return outcome


def _count_new(store: Store, run: FlagRun) -> None:
    """Per rule and status, the flags this run stored (one query for all rules)."""
    rows = store.fetch(
        "SELECT rule, status, count(*) FROM flags WHERE run_id = ? GROUP BY rule, status",
        (run.id,),
    )
    for rule, status, count in rows:
        outcome = run.by_rule.get(rule)
        if outcome is not None and status in STATUSES:
            setattr(outcome, status, int(count))
    for outcome in run.by_rule.values():
        outcome.new = outcome.queued + outcome.sampled_out + outcome.capped


def _state(store: Store) -> tuple[datetime | None, datetime | None]:
    rows = store.fetch(
        "SELECT watermark, last_run_at FROM flag_state WHERE name = ?", (ENGINE_STATE,)
    )
    return (rows[0][0], rows[0][1]) if rows else (None, None)


def _save_state(store: Store, watermark: datetime | None, now: datetime) -> None:
    store.execute(
        "INSERT INTO flag_state (name, watermark, last_run_at, updated_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (name) DO UPDATE SET watermark = excluded.watermark, "
        "last_run_at = excluded.last_run_at, updated_at = excluded.updated_at",
        (ENGINE_STATE, watermark, now, utcnow()),
    )


def _record(store: Store, run: FlagRun) -> None:
    store.execute(
        "INSERT INTO flag_runs (id, mode, started_at, finished_at, range_from, range_to, "
        "watermark, spans_seen, flags_new, flags_queued, by_rule, errors) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            run.id, run.mode, run.started_at, run.finished_at, run.range_from, run.range_to,
            run.watermark, run.spans_seen, run.flags_new, run.flags_queued,
            dumps({k: v.to_dict() for k, v in run.by_rule.items()}),
            dumps(run.errors) if run.errors else None,
        ),
    )  # fmt: skip


def _execute(store: Store, ctx: RuleContext, rules: Sequence[ConfiguredRule], run: FlagRun) -> None:
    for configured in rules:
        if not configured.policy.enabled:
            continue
        try:
            run.by_rule[configured.name] = _run_rule(store, ctx, configured, run.id)
        except Exception as exc:  # one broken rule must not stop the others
            log.exception("flag rule %s failed", configured.name)
            run.by_rule[configured.name] = RuleOutcome(error=f"{type(exc).__name__}: {exc}")
    _count_new(store, run)


def _session_floor(store: Store, lo: datetime, hi: datetime, earliest: datetime) -> datetime:
    """The first span of any session that got new spans: every rule reads from here, so
    a batch of fresh sessions reads only its own row groups."""
    rows = store.fetch(
        "SELECT min(start_time) FROM spans WHERE start_time >= ? AND session_id IN "
        "(SELECT session_id FROM spans WHERE ingested_at > ? AND ingested_at <= ? "
        "AND session_id IS NOT NULL)",
        (earliest, lo, hi),
    )
    found: datetime | None = rows[0][0] if rows else None
    return found if found is not None else earliest


def run_incremental(
    store: Store,
    rules: Sequence[ConfiguredRule] | None = None,
    *,
    now: datetime | None = None,
    overlap: timedelta = DEFAULT_OVERLAP,
    lookback: timedelta = DEFAULT_LOOKBACK,
) -> FlagRun:
    """Evaluate the sessions that changed since the last run and advance the watermark.

    The first run (no watermark yet) evaluates every stored session once."""
    rules = default_rules() if rules is None else rules
    clock = naive(now) if now is not None else utcnow()
    watermark, last_run_at = _state(store)
    run = FlagRun(id=uuid.uuid4().hex, mode="incremental", started_at=utcnow())
    if watermark is None:
        rows = store.fetch("SELECT max(ingested_at), count(*) FROM spans")
        hi, seen = rows[0][0], int(rows[0][1])
        scope = Scope(mode="all")
        run.mode = "full"
    else:
        lo = watermark - overlap
        rows = store.fetch(
            "SELECT max(ingested_at), min(start_time), count(*) FROM spans WHERE ingested_at > ?",
            (lo,),
        )
        hi = rows[0][0] or watermark
        seen = int(rows[0][2])
        floor = _session_floor(store, lo, hi, rows[0][1] - lookback) if seen else clock - lookback
        scope = Scope(
            mode="ingested",
            lo=lo,
            hi=hi,
            start_floor=floor,
            previous_run_at=last_run_at or watermark,
        )
    run.spans_seen = seen
    ctx = RuleContext(store=store, scope=scope, now=clock, lookback=lookback)
    _execute(store, ctx, rules, run)
    run.watermark = hi
    run.finished_at = utcnow()
    if not run.by_rule or len(run.errors) < len(run.by_rule):
        _save_state(store, hi, clock)
    _record(store, run)
    return run


def backfill(
    store: Store,
    start: datetime,
    end: datetime,
    rules: Sequence[ConfiguredRule] | None = None,
    *,
    now: datetime | None = None,
    lookback: timedelta = DEFAULT_LOOKBACK,
) -> FlagRun:
    """Evaluate every session with a span that started in ``[start, end)``. Sessions
    already flagged by a rule are left alone; the watermark does not move."""
    rules = default_rules() if rules is None else rules
    lo, hi = naive(start), naive(end)
    if hi <= lo:
        raise ValueError(
            f"backfill range is empty: {start.isoformat()} is not before {end.isoformat()}"
        )
    clock = naive(now) if now is not None else utcnow()
    run = FlagRun(
        id=uuid.uuid4().hex, mode="backfill", started_at=utcnow(), range_from=lo, range_to=hi
    )
    run.spans_seen = int(
        store.fetch(
            "SELECT count(*) FROM spans WHERE start_time >= ? AND start_time < ?", (lo, hi)
        )[0][0]
    )
    scope = Scope(
        mode="range", lo=lo, hi=hi, start_floor=lo - lookback, start_ceiling=hi + lookback
    )
    ctx = RuleContext(store=store, scope=scope, now=clock, lookback=lookback)
    _execute(store, ctx, rules, run)
    run.finished_at = utcnow()
    _record(store, run)
    return run


def reset_watermark(store: Store) -> None:
    """Forget the watermark: the next incremental run evaluates everything again
    (already flagged sessions stay flagged once)."""
    store.execute("DELETE FROM flag_state WHERE name = ?", (ENGINE_STATE,))

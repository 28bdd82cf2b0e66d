"""Rolling P95 baselines of a per-session metric, per cohort (project × customer tier).

The baseline of day D is the P95 over sessions that started in the ``window_days``
days ending with D (D included), so a backfill judges each day against the traffic
around it and an incremental run judges today against the past week. Baselines are
cached in ``flag_baselines``; a day is recomputed when it has none, when the window
changed, or when it was computed before the day was over and is older than
``refresh``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from goldenloop.model import BILLABLE_KINDS
from goldenloop.store.base import Store

_BILLABLE = ", ".join(f"'{k}'" for k in BILLABLE_KINDS)
_DAY = timedelta(days=1)
#: A day's baseline computed this long after the day ended is final.
_SETTLE = timedelta(hours=2)


@dataclass(frozen=True)
class SessionMetric:
    """A number per session, computed in SQL from that session's spans."""

    name: str
    label: str

    def values_sql(self, spans_sql: str) -> str:
        """``SELECT session_id, project, customer_tier, started, value`` over the spans
        selected by ``spans_sql`` (which must select every span column used here)."""
        raise NotImplementedError


@dataclass(frozen=True)
class SessionCost(SessionMetric):
    name: str = "cost_usd"
    label: str = "session cost"

    def values_sql(self, spans_sql: str) -> str:
        return (
            "SELECT session_id, min(project) AS project, coalesce(max(customer_tier), '') "
            "AS customer_tier, min(start_time) AS started, "
            f"sum(CASE WHEN kind IN ({_BILLABLE}) THEN coalesce(cost_usd, 0) ELSE 0 END) AS value "
            f"FROM ({spans_sql}) AS ms GROUP BY session_id"
        )


@dataclass(frozen=True)
class TurnIterations(SessionMetric):
    """The most agent steps (spans of ``kinds``) any single turn of the session took."""

    name: str = "iterations"
    label: str = "iterations in one turn"
    kinds: tuple[str, ...] = ("llm", "tool")

    def values_sql(self, spans_sql: str) -> str:
        kinds = ", ".join("'" + k.replace("'", "''") + "'" for k in self.kinds)
        return (
            "SELECT session_id, min(project) AS project, coalesce(max(customer_tier), '') "
            "AS customer_tier, min(started) AS started, max(steps) AS value FROM ("
            # Grouping by the trace id alone (unique across sessions) is much cheaper
            # than by (session, trace).
            "SELECT trace_id, min(session_id) AS session_id, min(project) AS project, "
            "max(customer_tier) AS customer_tier, min(start_time) AS started, "
            f"sum(CASE WHEN kind IN ({kinds}) THEN 1 ELSE 0 END) AS steps "
            f"FROM ({spans_sql}) AS ms GROUP BY trace_id) AS per_turn GROUP BY session_id"
        )


SPAN_COLUMNS_USED = "session_id, trace_id, project, customer_tier, start_time, kind, cost_usd"


def day_of(value: datetime) -> datetime:
    return value.replace(hour=0, minute=0, second=0, microsecond=0)


def stale_days(
    store: Store,
    metric_key: str,
    days: Sequence[datetime],
    window_days: int,
    now: datetime,
    refresh: timedelta,
) -> list[datetime]:
    if not days:
        return []
    marks = ", ".join("?" for _ in days)
    rows = store.fetch(
        "SELECT day, min(window_days), min(computed_at) FROM flag_baselines "
        f"WHERE metric = ? AND day IN ({marks}) GROUP BY day",
        [metric_key, *days],
    )
    known = {row[0]: (int(row[1]), row[2]) for row in rows}
    stale = []
    for day in days:
        entry = known.get(day)
        if entry is None or entry[0] != window_days:
            stale.append(day)
            continue
        computed_at = entry[1]
        final = computed_at >= day + _DAY + _SETTLE
        if not final and computed_at < now - refresh:
            stale.append(day)
    return stale


def ensure_baselines(
    store: Store,
    metric: SessionMetric,
    metric_key: str,
    days: Sequence[datetime],
    *,
    window_days: int,
    now: datetime,
    refresh: timedelta,
) -> int:
    """Compute missing or stale baselines for ``days``; return how many days were
    (re)computed."""
    todo = stale_days(store, metric_key, sorted(set(days)), window_days, now, refresh)
    if not todo:
        return 0
    lo = min(todo) - timedelta(days=window_days - 1)
    hi = max(todo) + _DAY
    spans = (
        f"SELECT {SPAN_COLUMNS_USED} FROM spans WHERE session_id IS NOT NULL "
        "AND start_time >= ? AND start_time < ?"
    )
    values = metric.values_sql(spans)
    day_rows = " UNION ALL ".join("SELECT CAST(? AS TIMESTAMP) AS day" for _ in todo)
    sql = f"""
        INSERT INTO flag_baselines
            (project, customer_tier, metric, day, window_days, p95, samples, computed_at)
        SELECT v.project, v.customer_tier, ?, d.day, ?,
               percentile_cont(0.95) WITHIN GROUP (ORDER BY v.value), count(*), ?
        FROM ({day_rows}) AS d
        JOIN ({values}) AS v
          ON v.started >= d.day - INTERVAL '{window_days - 1} days'
         AND v.started < d.day + INTERVAL '1 day'
        GROUP BY v.project, v.customer_tier, d.day
        ON CONFLICT (project, customer_tier, metric, day) DO UPDATE SET
            window_days = excluded.window_days, p95 = excluded.p95,
            samples = excluded.samples, computed_at = excluded.computed_at
    """
    store.execute(sql, [metric_key, window_days, now, *todo, lo, hi])
    return len(todo)

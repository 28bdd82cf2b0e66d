"""The rows each metric source aggregates, as SQL subqueries both stores run.

``build_relation(source, spec)`` returns a ``Relation``: a subquery with a ``ts``
column (the time the row is bucketed by), one ``_dN`` column per requested dimension,
and the source's columns (span columns, turn features, feedback/outcome columns).
Filters are applied inside. See ``catalog`` for what one row of each source is.

Time attribution: a span by its start; a turn by its root span's start; a session by
its first turn; feedback and outcomes by their creation time.

Turns and sessions come from the facts tables (``facts``: every span of a turn, every
turn and event of a session). Without them they are computed from the spans: a turn
from its spans up to ``slack`` past the window, a session from its turns between
``slack`` before and ``slack`` after the window (so one that began just before is not
mistaken for a new one) — the same rows unless a turn or session outlasts the slack.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from goldenloop.metrics.catalog import Source
from goldenloop.metrics.dimensions import Dimension, Filter
from goldenloop.metrics.facts import EVENT_COUNTS, event_counts_sql
from goldenloop.metrics.signals import SqlEnv
from goldenloop.metrics.success import SUCCESS_RULE_SQL
from goldenloop.metrics.turns import (
    apply_filters,
    fact_turns,
    facts_cover,
    json_key_sql,
    raw_turns,
)
from goldenloop.metrics.windows import TimeWindow, naive
from goldenloop.store.schema.metrics import SESSION_EVENT_COUNTS

#: How far past (and, for sessions, before) the window spans of its turns are read.
SLACK = timedelta(hours=1)
#: How far back feedback and outcome events look for their session's dimensions.
CONTEXT_LOOKBACK = timedelta(days=1)
_EVENT_OWN = {
    "feedback": frozenset({"project", "session_id", "prompt_hash", "user_id"}),
    "outcomes": frozenset({"project", "session_id", "name"}),
}


@dataclass
class RelationSpec:
    env: SqlEnv
    window: TimeWindow
    dims: Sequence[Dimension] = ()
    filters: Sequence[Filter] = ()
    features: Iterable[str] = ()
    slack: timedelta = SLACK
    #: Read turns from ``metric_turns`` (the caller refreshed them).
    facts: bool = False


@dataclass
class Relation:
    sql: str
    params: list[Any] = field(default_factory=list)
    dim_columns: list[str] = field(default_factory=list)


def build_relation(source: Source, spec: RelationSpec) -> Relation:
    builder = {
        "spans": spans_relation,
        "turns": turns_relation,
        "sessions": sessions_relation,
        "feedback": feedback_relation,
        "outcomes": outcomes_relation,
    }[source]
    return builder(spec)


def _range(start: datetime, end: datetime) -> list[Any]:
    return [naive(start), naive(end)]


# -- spans -------------------------------------------------------------------------------
def spans_relation(spec: RelationSpec) -> Relation:
    """Spans starting in the window. Context dimensions (not span-own, not stamped on
    every span) fall back to the span's turn's value."""
    wanted = [*spec.dims, *(f.dimension for f in spec.filters)]
    context = [d for d in dict.fromkeys(wanted) if not d.span_own and not d.propagated]
    exprs: dict[str, str] = {}
    for dim in dict.fromkeys(wanted):
        own = dim.sql("s")
        if dim in context:
            exprs[dim.name] = f"coalesce({own}, c._c{context.index(dim)})"
        else:
            exprs[dim.name] = own
    params: list[Any] = []
    join = ""
    if context:
        # Context values come from each span's turn.
        turns = TimeWindow(spec.window.start - spec.slack, spec.window.end)
        relation = turns_relation(
            RelationSpec(spec.env, turns, context, (), (), spec.slack, spec.facts)
        )
        cols = ", ".join(f"_d{i} AS _c{i}" for i in range(len(context)))
        join = (
            f" LEFT JOIN (SELECT trace_id AS c_trace_id, {cols} FROM ({relation.sql}) ct) c "
            "ON c.c_trace_id = s.trace_id"
        )
        params += relation.params
    select_dims = "".join(f", {exprs[d.name]} AS _d{i}" for i, d in enumerate(spec.dims))
    clauses, filter_params = apply_filters(
        spec.filters, [exprs[f.dimension.name] for f in spec.filters]
    )
    where = "".join(" AND " + c for c in clauses)
    sql = (
        f"SELECT s.*, s.start_time AS ts{select_dims} FROM spans s{join} "
        f"WHERE s.start_time >= ? AND s.start_time < ?{where}"
    )
    params += _range(spec.window.start, spec.window.end) + filter_params
    return Relation(sql, params, [f"_d{i}" for i in range(len(spec.dims))])


# -- turns -------------------------------------------------------------------------------
def turns_relation(spec: RelationSpec, *, start: datetime | None = None) -> Relation:
    """Turns whose root span starts in the window (or from ``start``): from the turn
    facts when ``spec.facts`` and they cover the query, else from the spans."""
    lo = start or spec.window.start
    hi = spec.window.end
    features = list(dict.fromkeys(spec.features))
    dims = list(spec.dims)
    if spec.facts and facts_cover([*dims, *(f.dimension for f in spec.filters)], features):
        sql, params = fact_turns(dims, features, spec.filters, lo, hi)
    else:
        sql, params = raw_turns(spec.env, dims, features, spec.filters, lo, hi, hi + spec.slack)
    return Relation(sql, params, [f"_d{i}" for i in range(len(dims))])


# -- sessions ----------------------------------------------------------------------------
SESSION_FEATURES: tuple[str, ...] = ("judge_scored", "judge_score_sum")
_RAW_FLAGS = Dimension("feature_flags", "feature_flags")


def _session_rows(spec: RelationSpec, features: list[str]) -> tuple[str, list[Any]]:
    """One row per session whose first turn starts in the window: session_id, ts,
    turn_count, features (summed), _d0 … (largest value among its turns); filters
    apply to those session values."""
    window = spec.window
    dims = list(spec.dims)
    filter_dims = [f.dimension for f in spec.filters]
    wanted = list(dict.fromkeys([*dims, *filter_dims]))
    if (
        spec.facts
        and facts_cover(wanted, features)
        and not any(d.is_json and not d.is_flag for d in wanted)
    ):
        exprs = {d.name: (json_key_sql("s.feature_flags", d.key) if d.is_flag and d.key
                          else f"s.{d.column}") for d in wanted}  # fmt: skip
        cols = "".join(f", {exprs[d.name]} AS _d{i}" for i, d in enumerate(dims))
        sums = "".join(f", s.{n}" for n in [*features, *SESSION_EVENT_COUNTS])
        clauses, filter_params = apply_filters(spec.filters, [exprs[d.name] for d in filter_dims])
        where = "".join(" AND " + c for c in clauses)
        sql = (
            f"SELECT s.session_id, s.ts, s.turn_count{cols}{sums} FROM metric_sessions s "
            f"WHERE s.ts >= ? AND s.ts < ?{where}"
        )
        return sql, [*_range(window.start, window.end), *filter_params]
    # From the turns: flags are compared on the session's largest flags JSON (as the
    # facts do), so turns carry the raw flags and sessions extract the key.
    turn_dims = list(dict.fromkeys(_RAW_FLAGS if d.is_flag else d for d in wanted))
    turns = turns_relation(
        RelationSpec(spec.env, TimeWindow(window.start, window.end + spec.slack), turn_dims, (),
                     features, spec.slack, spec.facts),
        start=window.start - spec.slack,
    )  # fmt: skip
    exprs = {}
    for d in wanted:
        raw = f"max(t._d{turn_dims.index(_RAW_FLAGS if d.is_flag else d)})"
        exprs[d.name] = json_key_sql(raw, d.key) if d.is_flag and d.key else raw
    cols = "".join(f", {exprs[d.name]} AS _d{i}" for i, d in enumerate(dims))
    sums = "".join(f", sum(t.{n}) AS {n}" for n in features)
    having, filter_params = apply_filters(spec.filters, [exprs[d.name] for d in filter_dims])
    grouped = (
        f"SELECT t.session_id, min(t.ts) AS ts, count(*) AS turn_count{cols}{sums} "
        f"FROM ({turns.sql}) t WHERE t.session_id IS NOT NULL GROUP BY t.session_id "
        f"HAVING min(t.ts) >= ? AND min(t.ts) < ?{''.join(' AND ' + c for c in having)}"
    )
    # every event of the session counts (as in the session facts)
    counts = ", ".join(
        f"coalesce({alias}.{name}, 0) AS {name}"
        for alias, table in (("fe", "feedback"), ("ou", "outcomes"))
        for name, _ in EVENT_COUNTS[table]
    )
    sql = (
        f"SELECT g.*, {counts} FROM ({grouped}) g "
        f"LEFT JOIN ({event_counts_sql('feedback')}) fe ON fe.session_id = g.session_id "
        f"LEFT JOIN ({event_counts_sql('outcomes')}) ou ON ou.session_id = g.session_id"
    )
    return sql, [*turns.params, *_range(window.start, window.end), *filter_params]


def sessions_relation(spec: RelationSpec) -> Relation:
    """Sessions whose first turn starts in the window, with summed turn features, their
    feedback and outcome counts, and the combined ``success`` verdict."""
    features = list(dict.fromkeys([*spec.features, *SESSION_FEATURES]))
    per_session, params = _session_rows(spec, features)
    sql = f"SELECT x.*, {spec.env.render(SUCCESS_RULE_SQL)} AS success FROM ({per_session}) x"
    return Relation(sql, params, [f"_d{i}" for i in range(len(spec.dims))])


# -- feedback and outcomes -----------------------------------------------------------------
def _event_relation(table: str, spec: RelationSpec) -> Relation:
    own = _EVENT_OWN[table]
    wanted = list(dict.fromkeys([*spec.dims, *(f.dimension for f in spec.filters)]))
    context = [d for d in wanted if d.name not in own]
    exprs: dict[str, str] = {}
    for dim in wanted:
        if dim.name in own:
            exprs[dim.name] = f"e.{dim.column}"
        else:
            index = context.index(dim)
            exprs[dim.name] = f"c._c{index}"
    params: list[Any] = []
    join = ""
    if context:
        # A session's dimensions, as the sessions source defines them, for sessions
        # that started up to CONTEXT_LOOKBACK before the window.
        sessions = TimeWindow(spec.window.start - CONTEXT_LOOKBACK, spec.window.end)
        rows, row_params = _session_rows(
            RelationSpec(spec.env, sessions, context, (), (), spec.slack, spec.facts), []
        )
        cols = ", ".join(f"cs._d{i} AS _c{i}" for i in range(len(context)))
        join = (
            f" LEFT JOIN (SELECT cs.session_id AS c_session_id, {cols} FROM ({rows}) cs) c "
            "ON c.c_session_id = e.session_id"
        )
        params += row_params
    select_dims = "".join(f", {exprs[d.name]} AS _d{i}" for i, d in enumerate(spec.dims))
    clauses, filter_params = apply_filters(
        spec.filters, [exprs[f.dimension.name] for f in spec.filters]
    )
    where = "".join(" AND " + c for c in clauses)
    sql = (
        f"SELECT e.*, e.created_at AS ts{select_dims} FROM {table} e{join} "
        f"WHERE e.created_at >= ? AND e.created_at < ?{where}"
    )
    params += _range(spec.window.start, spec.window.end) + filter_params
    return Relation(sql, params, [f"_d{i}" for i in range(len(spec.dims))])


def feedback_relation(spec: RelationSpec) -> Relation:
    return _event_relation("feedback", spec)


def outcomes_relation(spec: RelationSpec) -> Relation:
    return _event_relation("outcomes", spec)

"""Per-slice statistics for a window and a baseline, in one scan per metric source.

For every metric, every slice (one dimension = one value, plus "all traffic") and both
periods this collects additive statistics: numerator and denominator for rates,
histogram bin counts for distributions, and the number of sessions behind them. One
statement per source groups by ``GROUPING SETS ((period), (period, dim1), …)``.

Feature flags are grouped by the raw ``feature_flags`` JSON (a handful of distinct
combinations) and expanded into ``flag.NAME=VARIANT`` slices here, which is exact
because every statistic is a sum.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from goldenloop.metrics.catalog import MetricDef, Source
from goldenloop.metrics.compute import aggregate_columns, features_for, number
from goldenloop.metrics.dimensions import NONE_VALUE, Dimension, Filter
from goldenloop.metrics.relations import Relation, RelationSpec, build_relation
from goldenloop.metrics.signals import SqlEnv
from goldenloop.metrics.stats import histogram_bin_sql
from goldenloop.metrics.windows import TimeWindow, naive
from goldenloop.store.base import Store

#: ("locale", "de-DE"), or None for all traffic.
Slice = tuple[str, str] | None
_RAW_FLAGS = Dimension("feature_flags", "feature_flags")


@dataclass
class SliceStat:
    """Rates: ``num`` / ``den``. Distributions: ``num`` = sum of the values, ``den`` =
    their count, ``bins`` = histogram. ``sessions``: sessions behind the rows."""

    num: float = 0.0
    den: float = 0.0
    bins: dict[int, float] = field(default_factory=dict)
    sessions: float = 0.0

    @property
    def count(self) -> float:
        return self.den


#: (metric name, slice, period) → statistics; period 1 = window, 0 = baseline.
SliceStats = dict[tuple[str, Slice, int], SliceStat]


def discover_flags(store: Store, window: TimeWindow, *, facts: bool = False) -> list[str]:
    """Feature-flag names seen on the turns (root spans) of the window."""
    sql = (
        "SELECT DISTINCT feature_flags FROM metric_turns WHERE ts >= ? AND ts < ?"
        if facts
        else "SELECT DISTINCT feature_flags FROM spans WHERE parent_id IS NULL "
        "AND start_time >= ? AND start_time < ?"
    )
    rows = store.fetch(
        sql + " AND feature_flags IS NOT NULL", [naive(window.start), naive(window.end)]
    )
    names: set[str] = set()
    for (raw,) in rows:
        names.update(_flags(raw))
    return sorted(names)


_FLAG_CACHE: dict[str, dict[str, str]] = {}


def _flags(raw: str | None) -> dict[str, str]:
    if not raw:
        return {}
    cached = _FLAG_CACHE.get(raw)
    if cached is None:
        try:
            data = json.loads(raw)
        except ValueError:
            data = {}
        cached = {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
        if len(_FLAG_CACHE) < 10_000:
            _FLAG_CACHE[raw] = cached
    return cached


def _sql_dims(dims: Sequence[Dimension]) -> list[Dimension]:
    plain = [d for d in dims if not d.is_flag]
    return plain + ([_RAW_FLAGS] if len(plain) < len(dims) else [])


#: Sessions per slice and period, from the sessions relation: the gate for
#: ``min_sessions`` and the design factor of every metric of that slice.
SESSION_COUNT = MetricDef(
    "_sessions", "Sessions", "count", "sessions", "rate", expr="TRUE", test="proportion"
)


def _block(
    env: SqlEnv,
    relation: Relation,
    n_dims: int,
    metrics: Sequence[MetricDef],
    periods: tuple[TimeWindow, TimeWindow],
) -> tuple[str, list[Any]]:
    """One statement. ``_b`` tags the source's rows with their period ``_p``; every
    statistic is a sum, so the rows are first summed per (period, every dimension) —
    a few thousand combinations instead of millions of rows — and the grouping sets
    (period, one dimension) run over those sums. Histograms do the same with the bin."""
    window, baseline = periods
    base = (
        f"SELECT r.*, CASE WHEN r.ts >= ? AND r.ts < ? THEN 1 ELSE 0 END AS _p "
        f"FROM ({relation.sql}) r WHERE (r.ts >= ? AND r.ts < ?) OR (r.ts >= ? AND r.ts < ?)"
    )
    params: list[Any] = [naive(window.start), naive(window.end), *relation.params]
    params += [naive(window.start), naive(window.end), naive(baseline.start), naive(baseline.end)]
    ordered = _ordered(metrics)
    dists = [m for m in ordered if m.significance_test == "distribution"]
    width = len(ordered)
    keys = ", ".join(["_p", *(f"_d{i}" for i in range(n_dims))])
    grouping = "".join(f", GROUPING(_d{i}) AS _g{i}" for i in range(n_dims))
    dims = "".join(f", _d{i}" for i in range(n_dims))

    def sets(extra: str) -> str:
        groups = [f"(_p{extra})"] + [f"(_p, _d{i}{extra})" for i in range(n_dims)]
        return "GROUPING SETS (" + ", ".join(groups) + ")"

    inner = [f"{c.split(' AS ')[0]} AS _s{i}" for i, c in
             enumerate(c for m in ordered for c in _stat_columns(m, env))]  # fmt: skip
    outer = [f"sum(_s{i})" for i in range(len(inner))]
    ctes = [f"_b AS MATERIALIZED ({base})",
            f"_c AS (SELECT {keys}, {', '.join(inner)} FROM _b GROUP BY {keys})"]  # fmt: skip
    selects = [
        f"SELECT _p{grouping}{dims}, CAST(NULL AS BIGINT) AS _m, CAST(NULL AS BIGINT) AS _bin, "
        f"{', '.join(outer)} FROM _c GROUP BY {sets('')}"
    ]
    for index, metric in enumerate(dists):
        where, expr = env.render(metric.where), env.render(metric.expr)
        ctes.append(
            f"_h{index} AS (SELECT {keys}, {histogram_bin_sql(expr)} AS _bin, count(*) AS _n "
            f"FROM _b WHERE ({where}) AND ({expr}) IS NOT NULL GROUP BY {keys}, _bin)"
        )
        pad = ", ".join(["sum(_n)"] + ["CAST(NULL AS DOUBLE PRECISION)"] * (2 * width - 1))
        selects.append(
            f"SELECT _p{grouping}{dims}, CAST({index} AS BIGINT) AS _m, _bin, {pad} "
            f"FROM _h{index} GROUP BY {sets(', _bin')}"
        )
    return f"WITH {', '.join(ctes)} " + " UNION ALL ".join(selects), params


def _ordered(metrics: Sequence[MetricDef]) -> list[MetricDef]:
    return [m for m in metrics if m.significance_test in ("proportion", "distribution")]


def _stat_columns(metric: MetricDef, env: SqlEnv) -> list[str]:
    """(numerator, denominator) for rates; (sum, count) of the values for distributions."""
    if metric.significance_test == "proportion":
        return aggregate_columns(metric, env, "x")
    where, expr = env.render(metric.where), env.render(metric.expr)
    return [
        f"sum(CASE WHEN ({where}) THEN ({expr}) END) AS x_a",
        f"count(CASE WHEN ({where}) THEN ({expr}) END) AS x_b",
    ]


def collect_slice_stats(
    store: Store,
    env: SqlEnv,
    metrics: Sequence[MetricDef],
    dims: Sequence[Dimension],
    where: Sequence[Filter],
    window: TimeWindow,
    baseline: TimeWindow,
    *,
    facts: bool = False,
    session_counts: bool = True,
) -> SliceStats:
    """Statistics for every metric × slice × period. Each stat's ``sessions`` is the
    number of sessions of its slice that started in that period (with
    ``session_counts``). ``facts``: read turns and sessions from the facts tables
    (refreshed by the caller)."""
    sql_dims = _sql_dims(dims)
    flag_keys = [d.key for d in dims if d.is_flag and d.key]
    span = TimeWindow(min(window.start, baseline.start), max(window.end, baseline.end))
    by_source: dict[Source, list[MetricDef]] = {}
    for metric in [*([SESSION_COUNT] if session_counts else []), *_ordered(metrics)]:
        by_source.setdefault(metric.source, []).append(metric)
    stats: SliceStats = {}
    for source in ("turns", "sessions", "spans", "feedback", "outcomes"):
        if source not in by_source:
            continue
        spec = RelationSpec(
            env, span, sql_dims, where, features_for(by_source[source]), facts=facts
        )
        relation = build_relation(source, spec)
        sql, params = _block(env, relation, len(sql_dims), by_source[source], (window, baseline))
        rows = store.fetch(sql, params)
        _absorb(stats, rows, by_source[source], sql_dims, flag_keys)
    for (_, slice_, period), stat in stats.items():
        sessions = stats.get((SESSION_COUNT.name, slice_, period))
        stat.sessions = sessions.den if sessions is not None else 0.0
    return stats


def _absorb(
    stats: SliceStats,
    rows: list[tuple[Any, ...]],
    metrics: Sequence[MetricDef],
    dims: Sequence[Dimension],
    flag_keys: Sequence[str],
) -> None:
    n = len(dims)
    ordered = _ordered(metrics)
    dists = [m for m in ordered if m.significance_test == "distribution"]
    for row in rows:
        period = int(row[0])
        groups, values = row[1 : 1 + n], row[1 + n : 1 + 2 * n]
        m_index, bin_number = row[1 + 2 * n : 3 + 2 * n]
        aggs = row[3 + 2 * n :]
        for slice_ in _slices_of(groups, values, dims, flag_keys):
            if m_index is None:
                for i, metric in enumerate(ordered):
                    stat = stats.setdefault((metric.name, slice_, period), SliceStat())
                    stat.num += number(aggs[2 * i]) or 0.0
                    stat.den += number(aggs[2 * i + 1]) or 0.0
            else:
                metric = dists[int(m_index)]
                stat = stats.setdefault((metric.name, slice_, period), SliceStat())
                key = int(bin_number)
                stat.bins[key] = stat.bins.get(key, 0.0) + (number(aggs[0]) or 0.0)


def _slices_of(
    groups: Sequence[Any],
    values: Sequence[Any],
    dims: Sequence[Dimension],
    flag_keys: Sequence[str],
) -> list[Slice]:
    grouped = [i for i, g in enumerate(groups) if int(g) == 0]
    if not grouped:
        return [None]
    dim, value = dims[grouped[0]], values[grouped[0]]
    if dim is _RAW_FLAGS:
        flags = _flags(value)
        return [(f"flag.{k}", flags.get(k, NONE_VALUE)) for k in flag_keys]
    return [(dim.name, NONE_VALUE if value is None else str(value))]


def project_shares(
    store: Store,
    env: SqlEnv,
    dims: Sequence[Dimension],
    where: Sequence[Filter],
    window: TimeWindow,
    *,
    facts: bool = False,
) -> dict[Slice, dict[str, float]]:
    """Turns per project for every slice in the window (one grouping-sets query)."""
    project = Dimension("project", "project")
    sql_dims = [d for d in _sql_dims(dims) if d.name != "project"]
    if not sql_dims:
        return {}
    flag_keys = [d.key for d in dims if d.is_flag and d.key]
    spec = RelationSpec(env, window, [*sql_dims, project], where, facts=facts)
    relation = build_relation("turns", spec)
    k = len(sql_dims)
    grouping = ", ".join(f"GROUPING(_d{i})" for i in range(k))
    cols = ", ".join(f"_d{i}" for i in range(k))
    sets = ", ".join(f"(_d{i}, _d{k})" for i in range(k))
    rows = store.fetch(
        f"SELECT {grouping}, {cols}, _d{k}, count(*) FROM ({relation.sql}) r "
        f"GROUP BY GROUPING SETS ({sets})",
        relation.params,
    )
    shares: dict[Slice, dict[str, float]] = {}
    for row in rows:
        groups, values, name, count = row[:k], row[k : 2 * k], row[2 * k], row[2 * k + 1]
        for slice_ in _slices_of(groups, values, sql_dims, flag_keys):
            bucket = shares.setdefault(slice_, {})
            key = NONE_VALUE if name is None else str(name)
            bucket[key] = bucket.get(key, 0.0) + float(count)
    return shares

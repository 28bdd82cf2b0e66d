"""Metrics over a window, grouped by dimensions, filtered, optionally bucketed in time.

``compute_metrics(store, MetricsQuery(...))`` runs one aggregate query per metric
source (spans, turns, sessions, feedback, outcomes) and merges the rows by
(bucket, dimension values). Every statement is portable SQL; values are exact
(``percentile_cont`` for quantiles).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from goldenloop.metrics.catalog import METRICS, MetricDef, Source, resolve_metrics
from goldenloop.metrics.dimensions import Dimension, Filter
from goldenloop.metrics.facts import ensure_turn_facts
from goldenloop.metrics.relations import RelationSpec, build_relation
from goldenloop.metrics.signals import SignalConfig, SqlEnv
from goldenloop.metrics.windows import Bucket, TimeWindow, aware, bucket_sql
from goldenloop.store.base import Store

#: What ``goldenloop metrics`` shows when no metric is named.
DEFAULT_METRICS: tuple[str, ...] = (
    "turns", "sessions", "task_success_rate", "feedback_success_rate", "outcome_success_rate",
    "judge_pass_rate", "turn_latency_p50", "turn_latency_p95", "turn_latency_p99",
    "cost_usd", "cost_per_session", "cost_per_successful_task", "turn_error_rate",
    "tool_error_rate", "parse_error_rate", "guardrail_block_rate", "empty_response_rate",
    "injection_attempt_rate", "policy_violation_rate", "escalation_rate",
    "circuit_breaker_rate", "max_tokens_rate", "tool_calls_per_successful_task",
    "redundant_call_rate", "argument_validity_rate", "iterations_per_turn",
)  # fmt: skip


@dataclass(frozen=True)
class MetricsQuery:
    window: TimeWindow
    metrics: tuple[str, ...] = DEFAULT_METRICS
    by: tuple[Dimension, ...] = ()
    where: tuple[Filter, ...] = ()
    bucket: Bucket | None = None
    #: Fill empty buckets so every series has one point per bucket.
    fill: bool = True
    #: With a bucket: also the whole-window rows (``bucket`` None), from the same scan.
    totals: bool = False


@dataclass
class MetricValue:
    value: float | None
    n: int
    numerator: float | None = None
    denominator: float | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"value": self.value, "n": self.n}
        if self.numerator is not None:
            data["numerator"] = self.numerator
            data["denominator"] = self.denominator
        return data


@dataclass
class MetricRow:
    bucket: datetime | None
    dims: tuple[str | None, ...]
    values: dict[str, MetricValue] = field(default_factory=dict)


@dataclass
class MetricsResult:
    query: MetricsQuery
    metrics: list[MetricDef]
    rows: list[MetricRow]

    @property
    def dims(self) -> tuple[Dimension, ...]:
        return self.query.by

    def value(self, metric: str, *dims: str | None, bucket: datetime | None = None) -> MetricValue:
        """The value for one dimension combination and bucket (None: the whole window)."""
        for row in self.rows:
            if row.dims == tuple(dims) and row.bucket == bucket:
                return row.values[metric]
        raise KeyError(f"no row for {dims!r} at {bucket}")

    def series(self, metric: str, *dims: str | None) -> list[tuple[datetime, float | None]]:
        return [
            (row.bucket, row.values[metric].value)
            for row in self.rows
            if row.bucket is not None and row.dims == tuple(dims)
        ]

    def to_dict(self) -> dict[str, Any]:
        q = self.query
        return {
            "window": q.window.to_dict(),
            "bucket": q.bucket,
            "by": [d.name for d in q.by],
            "where": [str(f) for f in q.where],
            "metrics": [m.to_dict() for m in self.metrics],
            "rows": [
                {
                    "bucket": row.bucket.isoformat() if row.bucket else None,
                    "dims": {d.name: v for d, v in zip(q.by, row.dims, strict=True)},
                    "values": {k: v.to_dict() for k, v in row.values.items()},
                }
                for row in self.rows
            ],
        }


def number(value: Any) -> float | None:
    """Driver values → float (PostgreSQL returns Decimal for numeric sums and averages)."""
    if value is None:
        return None
    if isinstance(value, Decimal | int | float):
        return float(value)
    if isinstance(value, bool):
        return float(value)
    return float(value)


def aggregate_columns(
    metric: MetricDef, env: SqlEnv, prefix: str, siblings: Sequence[MetricDef] = ()
) -> list[str]:
    """SQL select items for one metric: ``{prefix}_a`` and ``{prefix}_b``.

    rate/ratio: (numerator, denominator); mean/quantile: (value, n); sum: (value, n);
    count: (n, n). On DuckDB the quantiles of one expression among ``siblings`` share
    one ``quantile_cont(x, [q1, q2, …])`` (one sort instead of one per quantile; the
    identical aggregate is computed once), with the same values as ``percentile_cont``."""
    where = env.render(metric.where)
    expr = env.render(metric.expr)
    agg = metric.aggregation
    if agg == "rate":
        a = f"sum(CASE WHEN ({where}) AND ({expr}) THEN 1 ELSE 0 END)"
        b = f"sum(CASE WHEN ({where}) THEN 1 ELSE 0 END)"
    elif agg == "ratio":
        assert metric.denominator is not None
        den = env.render(metric.denominator)
        a = f"sum(CASE WHEN ({where}) THEN ({expr}) ELSE 0 END)"
        b = f"sum(CASE WHEN ({where}) THEN ({den}) ELSE 0 END)"
    elif agg == "mean":
        a = f"avg(CASE WHEN ({where}) THEN ({expr}) END)"
        b = f"count(CASE WHEN ({where}) THEN ({expr}) END)"
    elif agg == "quantile" and env.dialect == "duckdb":
        listed = ", ".join(repr(q) for q in sibling_quantiles(metric, siblings))
        # The whole list: identical aggregates are computed once (an index into it is not
        # recognised as the same aggregate), metric_value picks this metric's element.
        a = f"quantile_cont(CASE WHEN ({where}) THEN ({expr}) END, [{listed}])"
        b = f"count(CASE WHEN ({where}) THEN ({expr}) END)"
    elif agg == "quantile":
        a = (
            f"percentile_cont({metric.quantile!r}) WITHIN GROUP "
            f"(ORDER BY CASE WHEN ({where}) THEN ({expr}) END)"
        )
        b = f"count(CASE WHEN ({where}) THEN ({expr}) END)"
    elif agg == "sum":
        a = f"sum(CASE WHEN ({where}) THEN ({expr}) END)"
        b = f"count(CASE WHEN ({where}) THEN 1 END)"
    else:
        a = b = f"sum(CASE WHEN ({where}) THEN 1 ELSE 0 END)"
    return [f"{a} AS {prefix}_a", f"{b} AS {prefix}_b"]


def sibling_quantiles(metric: MetricDef, siblings: Sequence[MetricDef]) -> list[float]:
    """The quantiles of the same expression among ``siblings`` (sorted), ``metric``'s included."""
    return sorted({
        m.quantile for m in (*siblings, metric)
        if m.aggregation == "quantile" and m.quantile is not None
        and (m.where, m.expr) == (metric.where, metric.expr)
    })  # fmt: skip


def metric_value(
    metric: MetricDef, a: Any, b: Any, siblings: Sequence[MetricDef] = ()
) -> MetricValue:
    if isinstance(a, list):  # DuckDB's quantile list (see aggregate_columns)
        quantiles = sibling_quantiles(metric, siblings)
        a = a[quantiles.index(metric.quantile)] if a and metric.quantile in quantiles else None
    first, second = number(a), number(b)
    agg = metric.aggregation
    if agg in ("rate", "ratio"):
        den = second or 0.0
        value = (first or 0.0) / den if den else None
        return MetricValue(value, int(den), first or 0.0, den)
    if agg == "count":
        return MetricValue(first or 0.0, int(first or 0))
    if agg == "sum":
        return MetricValue(first if first is not None else 0.0, int(second or 0))
    return MetricValue(first, int(second or 0))


def empty_value(metric: MetricDef) -> MetricValue:
    if metric.aggregation in ("count", "sum"):
        return MetricValue(0.0, 0)
    if metric.aggregation in ("rate", "ratio"):
        return MetricValue(None, 0, 0.0, 0.0)
    return MetricValue(None, 0)


def features_for(metrics: Sequence[MetricDef]) -> list[str]:
    return list(dict.fromkeys(n for m in metrics for n in m.needs))


@dataclass(frozen=True)
class View:
    """One grouping of a multi-view computation: dimensions and an optional bucket."""

    by: tuple[Dimension, ...] = ()
    bucket: Bucket | None = None


def _view_query(
    source: Source,
    metrics: Sequence[MetricDef],
    env: SqlEnv,
    window: TimeWindow,
    views: Sequence[View],
    where: Sequence[Filter],
    facts: bool,
) -> tuple[str, list[Any], list[str]]:
    """One statement for the metrics of one source and every view: one SELECT per view
    (``UNION ALL``), each tagged with its view number ``_v``. Separate aggregations are
    faster than GROUPING SETS once quantiles are involved (holistic aggregates).
    Returns (sql, params, key names); rows are (_v, keys…, aggregates…)."""
    dims = list(dict.fromkeys(d for v in views for d in v.by))
    spec = RelationSpec(env, window, dims, where, features_for(metrics), facts=facts)
    relation = build_relation(source, spec)
    buckets = list(dict.fromkeys(v.bucket for v in views if v.bucket))
    exprs = {f"b:{b}": bucket_sql(b, "r.ts") for b in buckets}
    exprs.update({f"d:{d.name}": f"r._d{i}" for i, d in enumerate(dims)})
    keys = list(exprs)
    aggs = ", ".join(
        col for i, m in enumerate(metrics) for col in aggregate_columns(m, env, f"m{i}", metrics)
    )
    selects = []
    for index, view in enumerate(views):
        mine = ([f"b:{view.bucket}"] if view.bucket else []) + [f"d:{d.name}" for d in view.by]
        cols = [
            exprs[k]
            if k in mine
            else ("CAST(NULL AS TIMESTAMP)" if k[0] == "b" else "CAST(NULL AS TEXT)")
            for k in keys
        ]
        group = f" GROUP BY {', '.join(exprs[k] for k in mine)}" if mine else ""
        selects.append(
            f"SELECT {', '.join([str(index), *cols, aggs])} FROM ({relation.sql}) r{group}"
        )
    return " UNION ALL ".join(selects), relation.params * len(views), keys


Merged = dict[tuple[datetime | None, tuple[str | None, ...]], MetricRow]


def compute_views(
    store: Store,
    window: TimeWindow,
    metric_names: Sequence[str],
    views: Sequence[View],
    where: Sequence[Filter] = (),
    *,
    signals: SignalConfig | None = None,
    fill: bool = True,
) -> list[MetricsResult]:
    """The metrics for several groupings at once: one statement per metric source."""
    metrics = resolve_metrics(metric_names)
    unique = list(dict.fromkeys(views))
    env = SqlEnv(store.dialect, signals or SignalConfig())
    facts = ensure_turn_facts(store, env)
    per_span = any(d.span_own for v in unique for d in v.by) or any(
        f.dimension.span_own for f in where
    )
    by_source: dict[Source, list[MetricDef]] = {}
    for metric in metrics:
        used = metric.span_variant if per_span and metric.span_variant else metric
        by_source.setdefault(used.source, []).append(used)
    merged: list[Merged] = [{} for _ in unique]
    for source, defs in by_source.items():
        sql, params, keys = _view_query(source, defs, env, window, unique, where, facts)
        for row in store.fetch(sql, params):
            index = int(row[0])
            values = dict(zip(keys, row[1 : 1 + len(keys)], strict=True))
            aggs = row[1 + len(keys) :]
            view = unique[index]
            raw_bucket = values.get(f"b:{view.bucket}") if view.bucket else None
            bucket = aware(raw_bucket) if raw_bucket is not None else None
            dims = tuple(_text(values[f"d:{d.name}"]) for d in view.by)
            target = merged[index].setdefault((bucket, dims), MetricRow(bucket, dims))
            for i, metric in enumerate(defs):
                target.values[metric.name] = metric_value(
                    metric, aggs[2 * i], aggs[2 * i + 1], defs
                )
    results = []
    for view, rows in zip(unique, merged, strict=True):
        query = MetricsQuery(window, tuple(m.name for m in metrics), view.by, tuple(where),
                             view.bucket, fill)  # fmt: skip
        results.append(_result(query, metrics, rows))
    return [results[unique.index(v)] for v in views]


def _result(query: MetricsQuery, metrics: list[MetricDef], merged: Merged) -> MetricsResult:
    if query.bucket and query.fill:
        _fill_buckets(merged, query)
    rows = sorted(merged.values(), key=_row_order)
    for row in rows:
        for metric in metrics:
            row.values.setdefault(metric.name, empty_value(metric))
        row.values = {m.name: row.values[m.name] for m in metrics}
    return MetricsResult(query, metrics, rows)


def compute_metrics(
    store: Store, query: MetricsQuery, *, signals: SignalConfig | None = None
) -> MetricsResult:
    """One grouping (plus whole-window rows with ``totals``)."""
    views = [View(query.by, query.bucket)]
    if query.bucket and query.totals:
        views.append(View(query.by, None))
    results = compute_views(store, query.window, query.metrics, views, query.where,
                            signals=signals, fill=query.fill)  # fmt: skip
    rows = results[0].rows + (results[1].rows if len(results) > 1 else [])
    rows.sort(key=_row_order)
    return MetricsResult(query, results[0].metrics, rows)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _fill_buckets(merged: Merged, query: MetricsQuery) -> None:
    assert query.bucket is not None
    groups = {dims for _, dims in merged} or ({()} if not query.by else set())
    for start in query.window.bucket_starts(query.bucket):
        for dims in groups:
            merged.setdefault((start, dims), MetricRow(start, dims))


def _row_order(row: MetricRow) -> tuple[Any, ...]:
    bucket_key = row.bucket.timestamp() if row.bucket else 0.0
    return (bucket_key, tuple((v is None, v or "") for v in row.dims))


def metric_names() -> list[str]:
    return sorted(METRICS)

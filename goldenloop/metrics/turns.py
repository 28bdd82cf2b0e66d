"""Turn rows: one per trace, from the spans table or from the turn facts.

A turn's time is its root span's start. Its dimensions: the root span's value, else
the largest among its spans (for model, model_version and provider: among its LLM
calls); feature flags are read from the root's flags (else the largest flags JSON of
the trace); ``attr.NAME`` is the root span's attribute. Its features are
``catalog.TURN_FEATURES``: aggregates over all of its spans.

``turn_rows_sql`` is the one definition; ``facts`` stores its output in
``metric_turns`` and ``turns_relation`` reads the facts when they are fresh and hold
every feature a query needs, else aggregates the spans of the window itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from goldenloop.metrics.catalog import TURN_FEATURES
from goldenloop.metrics.dimensions import Dimension, Filter
from goldenloop.metrics.signals import SqlEnv, sql_literal
from goldenloop.metrics.trajectory import REDUNDANT_CALLS_SQL
from goldenloop.metrics.windows import naive
from goldenloop.store.schema.metrics import TURN_FACT_DIMENSIONS, TURN_FACT_FEATURES

ROOT_START = "min(CASE WHEN parent_id IS NULL THEN start_time END)"
FACT_FEATURES: frozenset[str] = frozenset(name for name, _ in TURN_FACT_FEATURES)
FACT_COLUMNS: frozenset[str] = frozenset({"session_id", *TURN_FACT_DIMENSIONS})
_LLM_DIMS = frozenset({"model", "model_version", "provider"})
_RAW_FLAGS = "coalesce(max(CASE WHEN parent_id IS NULL THEN feature_flags END), max(feature_flags))"


def json_key_sql(expr: str, key: str) -> str:
    """``expr ->> key`` for JSON text, guarded by a substring test."""
    needle = sql_literal('%"' + key + '"%')
    return f"(CASE WHEN {expr} LIKE {needle} THEN ({expr}::json ->> {sql_literal(key)}) END)"


def turn_dim_sql(dim: Dimension) -> str:
    """The aggregate over a trace's spans that gives the turn's value of ``dim``."""
    if dim.is_flag:
        return _RAW_FLAGS if dim.key is None else json_key_sql(_RAW_FLAGS, dim.key)
    if dim.is_json:
        return f"max(CASE WHEN parent_id IS NULL THEN {dim.sql()} END)"
    value = dim.sql()
    fallback = f"CASE WHEN kind = 'llm' THEN {value} END" if dim.column in _LLM_DIMS else value
    return f"coalesce(max(CASE WHEN parent_id IS NULL THEN {value} END), max({fallback}))"


def turn_rows_sql(
    env: SqlEnv,
    dims: Sequence[tuple[str, Dimension]],
    features: Sequence[str],
    where: str,
    having: str = "",
) -> str:
    """SELECT trace_id, session_id, ts, <dims as aliases>, <features> for the traces of
    the spans matching ``where``. ``where`` appears twice when ``redundant_calls`` is
    asked for (its parameters must be given twice, ``having``'s in between)."""
    cols = "".join(f", {turn_dim_sql(d)} AS {alias}" for alias, d in dims)
    plain = [n for n in features if not TURN_FEATURES[n].repeat_join]
    repeat = [n for n in features if TURN_FEATURES[n].repeat_join]
    cols += "".join(f", {env.render(TURN_FEATURES[n].sql)} AS {n}" for n in plain)
    condition = f"{ROOT_START} IS NOT NULL" + (f" AND {having}" if having else "")
    inner = (
        f"SELECT trace_id, max(session_id) AS session_id, {ROOT_START} AS ts{cols} "
        f"FROM spans WHERE {where} GROUP BY trace_id HAVING {condition}"
    )
    if not repeat:
        return inner
    extra = "".join(f", coalesce(rc.rc_redundant, 0) AS {n}" for n in repeat)
    return (
        f"SELECT t.*{extra} FROM ({inner}) t LEFT JOIN ("
        f"{REDUNDANT_CALLS_SQL.format(where=where)}) rc ON rc.rc_trace_id = t.trace_id"
    )


def raw_turns(
    env: SqlEnv,
    dims: Sequence[Dimension],
    features: Sequence[str],
    filters: Sequence[Filter],
    lo: datetime,
    hi: datetime,
    read_until: datetime,
) -> tuple[str, list[Any]]:
    """Turns with a root starting in [lo, hi), from spans up to ``read_until``, with
    dims as ``_d0 …`` and the filters applied."""
    all_dims = list(dict.fromkeys([*dims, *(f.dimension for f in filters)]))
    push, push_params = pushdown(filters)
    where = f"start_time >= ? AND start_time < ?{push}"
    where_params: list[Any] = [naive(lo), naive(read_until), *push_params]
    having = f"{ROOT_START} >= ? AND {ROOT_START} < ?"
    sql = turn_rows_sql(
        env, [(f"_t{i}", d) for i, d in enumerate(all_dims)], features, where, having
    )
    params = [*where_params, naive(lo), naive(hi)]
    if any(TURN_FEATURES[n].repeat_join for n in features):
        params += where_params
    clauses, filter_params = apply_filters(
        filters, [f"t._t{all_dims.index(f.dimension)}" for f in filters]
    )
    select = ["t.trace_id", "t.session_id", "t.ts"]
    select += [f"t._t{all_dims.index(d)} AS _d{i}" for i, d in enumerate(dims)]
    select += [f"t.{n}" for n in features]
    where_clause = (" WHERE " + " AND ".join(clauses)) if clauses else ""
    return f"SELECT {', '.join(select)} FROM ({sql}) t{where_clause}", params + filter_params


def fact_turns(
    dims: Sequence[Dimension], features: Sequence[str], filters: Sequence[Filter],
    lo: datetime, hi: datetime,
) -> tuple[str, list[Any]]:  # fmt: skip
    """The same rows from ``metric_turns`` (attributes come from the root span)."""
    all_dims = list(dict.fromkeys([*dims, *(f.dimension for f in filters)]))
    attrs = [d for d in all_dims if d.is_json and not d.is_flag]
    exprs: dict[str, str] = {}
    for dim in all_dims:
        if dim in attrs:
            exprs[dim.name] = f"a._a{attrs.index(dim)}"
        elif dim.is_flag:
            exprs[dim.name] = (
                "t.feature_flags" if dim.key is None else json_key_sql("t.feature_flags", dim.key)
            )
        else:
            exprs[dim.name] = f"t.{dim.column}"
    params: list[Any] = []
    join = ""
    if attrs:
        cols = ", ".join(f"{d.sql()} AS _a{i}" for i, d in enumerate(attrs))
        join = (
            f" LEFT JOIN (SELECT trace_id AS a_trace_id, {cols} FROM spans WHERE parent_id IS NULL "
            "AND start_time >= ? AND start_time < ?) a ON a.a_trace_id = t.trace_id"
        )
        params += [naive(lo), naive(hi)]
    select = ["t.trace_id", "t.session_id", "t.ts"]
    select += [f"{exprs[d.name]} AS _d{i}" for i, d in enumerate(dims)]
    select += [f"t.{n}" for n in features]
    clauses, filter_params = apply_filters(filters, [exprs[f.dimension.name] for f in filters])
    where = "".join(" AND " + c for c in clauses)
    sql = (
        f"SELECT {', '.join(select)} FROM metric_turns t{join} WHERE t.ts >= ? AND t.ts < ?{where}"
    )
    return sql, [*params, naive(lo), naive(hi), *filter_params]


def apply_filters(filters: Sequence[Filter], exprs: Sequence[str]) -> tuple[list[str], list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    for flt, expr in zip(filters, exprs, strict=True):
        clause, values = flt.condition(expr)
        clauses.append(clause)
        params.extend(values)
    return clauses, params


def facts_cover(dims: Sequence[Dimension], features: Sequence[str]) -> bool:
    """Whether ``metric_turns`` holds everything a query needs."""
    plain_ok = all(d.is_json or d.column in FACT_COLUMNS for d in dims)
    return plain_ok and all(n in FACT_FEATURES for n in features)


def pushdown(filters: Sequence[Filter], alias: str = "") -> tuple[str, list[Any]]:
    """Conditions on propagated dimensions that can narrow the raw span scan. Spans
    without the value are kept (a child may lack it); the exact filter runs later."""
    clauses, params = [], []
    for flt in filters:
        if flt.dimension.propagated and flt.value is not None and not flt.negate:
            column = flt.dimension.sql(alias)
            clauses.append(f"({column} = ? OR {column} IS NULL)")
            params.append(flt.value)
    return "".join(" AND " + c for c in clauses), params

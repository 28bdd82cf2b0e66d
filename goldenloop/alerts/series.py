"""Per-minute metric series: what every metric rule reads, loaded once per range.

``load_series`` computes, for one metric, one pair of additive counts per minute and
per slice: (numerator, denominator) for rates and ratios, (sum, count) for sums and
means, (count, count) for counts. It builds on the metrics package: the rows come from
``metrics.relations.build_relation`` (turns from the turn facts when fresh), the
aggregates from ``metrics.compute.aggregate_columns``, so an alert counts exactly what
the metrics API shows. Any window's value is then a difference of prefix sums, so a
rule evaluated at every minute of a week costs one query, not ten thousand.

``SeriesCache`` keeps each series between evaluator ticks and only re-reads the last
``settle`` minutes (late spans) plus the new ones; it reloads fully every
``reload_every`` to pick up anything later still.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt

from goldenloop.metrics.catalog import MetricDef
from goldenloop.metrics.compute import aggregate_columns, features_for, number
from goldenloop.metrics.dimensions import Dimension, Filter
from goldenloop.metrics.relations import RelationSpec, build_relation
from goldenloop.metrics.signals import SqlEnv
from goldenloop.metrics.windows import TimeWindow, aware, bucket_sql
from goldenloop.store.base import Store

MINUTE = timedelta(minutes=1)
SliceKey = tuple[str | None, ...]
ADDITIVE = frozenset({"rate", "ratio", "sum", "count", "mean"})


class SeriesError(ValueError):
    """A metric cannot be turned into per-minute series (quantiles are not additive)."""


@dataclass(frozen=True)
class SeriesQuery:
    """One metric, filtered, split by dimensions."""

    metric: MetricDef
    by: tuple[Dimension, ...] = ()
    filters: tuple[Filter, ...] = ()

    def __post_init__(self) -> None:
        if self.metric.aggregation not in ADDITIVE:
            raise SeriesError(
                f"metric {self.metric.name!r} is a {self.metric.aggregation}; alert rules "
                "need a rate, ratio, sum, mean or count metric"
            )

    @property
    def effective_metric(self) -> MetricDef:
        """The metric as aggregated: its per-span variant when a dimension or filter
        describes spans (tool_name, model …), and means as sum/count."""
        metric = self.metric
        per_span = any(d.span_own for d in self.by) or any(
            f.dimension.span_own for f in self.filters
        )
        if per_span and metric.span_variant is not None:
            metric = metric.span_variant
        if metric.aggregation == "mean":
            metric = replace(metric, aggregation="sum", span_variant=None)
        return metric

    @property
    def key(self) -> str:
        m = self.effective_metric
        return json.dumps(
            [m.source, m.aggregation, m.expr, m.where, m.denominator, list(m.needs),
             [d.name for d in self.by], [str(f) for f in self.filters]]
        )  # fmt: skip


def _minute_index(start: datetime, value: datetime) -> int:
    return int((aware(value) - start) // MINUTE)


def _epoch_minute(value: datetime) -> int:
    """Minutes since the epoch (naive values are UTC)."""
    return int((value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()) // 60


class MinuteSeries:
    """(a, b) per minute and slice over ``[start, end)`` (minute-aligned)."""

    def __init__(self, start: datetime, end: datetime) -> None:
        self.start = aware(start).replace(second=0, microsecond=0)
        self.end = aware(end)
        self._start_minute = _epoch_minute(self.start)
        self.length = max(0, -(-int((self.end - self.start).total_seconds()) // 60))
        self.slices: dict[SliceKey, npt.NDArray[np.float64]] = {}
        self._cum: dict[SliceKey, npt.NDArray[np.float64]] = {}

    def _array(self, key: SliceKey) -> npt.NDArray[np.float64]:
        array = self.slices.get(key)
        if array is None:
            array = self.slices[key] = np.zeros((2, self.length))
        return array

    def add(self, key: SliceKey, minute: datetime, a: float, b: float) -> None:
        index = _minute_index(self.start, minute)
        if 0 <= index < self.length:
            array = self._array(key)
            array[0, index] += a
            array[1, index] += b
            self._cum.pop(key, None)

    def keys(self) -> list[SliceKey]:
        return sorted(self.slices, key=lambda k: tuple((v is None, v or "") for v in k))

    def sums(self, key: SliceKey, lo: datetime, hi: datetime) -> tuple[float, float]:
        """Totals over the minutes in ``[lo, hi)`` (clipped to the loaded range)."""
        array = self.slices.get(key)
        if array is None:
            return 0.0, 0.0
        cum = self._cum.get(key)
        if cum is None:
            cum = np.zeros((2, self.length + 1))
            np.cumsum(array, axis=1, out=cum[:, 1:])
            self._cum[key] = cum
        # Evaluations call this millions of times in a backtest: integer minutes only.
        i0 = min(max(_epoch_minute(lo) - self._start_minute, 0), self.length)
        i1 = min(max(_epoch_minute(hi) - self._start_minute, 0), self.length)
        if i1 <= i0:
            return 0.0, 0.0
        return float(cum[0, i1] - cum[0, i0]), float(cum[1, i1] - cum[1, i0])

    def rebased(self, start: datetime, end: datetime, *, keep_until: datetime) -> MinuteSeries:
        """A copy over ``[start, end)`` holding this series' minutes before ``keep_until``."""
        other = MinuteSeries(start, end)
        shift = _minute_index(self.start, other.start)
        stop = min(_minute_index(other.start, keep_until), other.length)
        for key, array in self.slices.items():
            target = other._array(key)
            lo = max(0, -shift)
            hi = min(stop, self.length - shift)
            if hi > lo:
                target[:, lo:hi] = array[:, lo + shift : hi + shift]
        return other

    def merge(self, fresh: MinuteSeries) -> None:
        """Overwrite the minutes ``fresh`` covers with its values."""
        lo = max(0, _minute_index(self.start, fresh.start))
        hi = min(self.length, _minute_index(self.start, fresh.start) + fresh.length)
        if hi <= lo:
            return
        offset = _minute_index(fresh.start, self.start)
        for key in set(self.slices) | set(fresh.slices):
            target = self._array(key)
            target[:, lo:hi] = 0.0
            source = fresh.slices.get(key)
            if source is not None:
                target[:, lo:hi] = source[:, lo + offset : hi + offset]
        self._cum.clear()


def load_series(
    store: Store, env: SqlEnv, query: SeriesQuery, window: TimeWindow, *, facts: bool = False
) -> MinuteSeries:
    """One statement: per-minute aggregates of ``query.metric`` per slice in ``window``."""
    metric = query.effective_metric
    spec = RelationSpec(env, window, list(query.by), list(query.filters), features_for([metric]),
                        facts=facts)  # fmt: skip
    relation = build_relation(metric.source, spec)
    minute = bucket_sql("minute", "r.ts")
    dims = [f"r._d{i}" for i in range(len(query.by))]
    select = ", ".join([minute, *dims, *aggregate_columns(metric, env, "m")])
    sql = f"SELECT {select} FROM ({relation.sql}) r GROUP BY {', '.join([minute, *dims])}"
    series = MinuteSeries(window.start, window.end)
    width = len(dims)
    for row in store.fetch(sql, relation.params):
        key = tuple(None if v is None else str(v) for v in row[1 : 1 + width])
        a, b = number(row[1 + width]) or 0.0, number(row[2 + width]) or 0.0
        series.add(key, aware(row[0]), a, b)
    return series


@dataclass
class _Entry:
    series: MinuteSeries
    loaded_until: datetime
    full_at: datetime


class SeriesCache:
    """Series kept between evaluator ticks; only recent minutes are re-read."""

    def __init__(
        self,
        *,
        settle: timedelta = timedelta(minutes=15),
        reload_every: timedelta = timedelta(hours=1),
    ) -> None:
        self.settle = settle
        self.reload_every = reload_every
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self._used: set[str] = set()
        self.full_loads = 0
        self.partial_loads = 0

    def get(
        self, store: Store, env: SqlEnv, query: SeriesQuery, window: TimeWindow, *, facts: bool
    ) -> MinuteSeries:
        key = query.key
        with self._lock:
            entry = self._entries.get(key)
            self._used.add(key)
        start = window.start.replace(second=0, microsecond=0)
        fresh_from = entry.loaded_until - self.settle if entry else None
        reusable = (
            entry is not None
            and fresh_from is not None
            and entry.series.start <= start
            and fresh_from < window.end
            and window.end >= entry.loaded_until
            and window.end - entry.full_at < self.reload_every
        )
        if not reusable or entry is None or fresh_from is None:
            series = load_series(store, env, query, TimeWindow(start, window.end), facts=facts)
            self.full_loads += 1
            new = _Entry(series, window.end, window.end)
        else:
            fresh_from = max(fresh_from, start).replace(second=0, microsecond=0)
            series = entry.series.rebased(start, window.end, keep_until=fresh_from)
            fresh = load_series(store, env, query, TimeWindow(fresh_from, window.end), facts=facts)
            series.merge(fresh)
            self.partial_loads += 1
            new = _Entry(series, window.end, entry.full_at)
        with self._lock:
            self._entries[key] = new
        return series

    def start_tick(self) -> None:
        with self._lock:
            self._used = set()

    def forget_unused(self) -> None:
        """Forget series no rule asked for since ``start_tick`` (a rule changed)."""
        with self._lock:
            for key in set(self._entries) - self._used:
                del self._entries[key]

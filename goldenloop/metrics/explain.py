"""Explaining a regression finding: when it began and what its bad events share.

``find_onset`` cuts the window (and the same length before it) into buckets and finds
the change point from which the slice's rate moved away from its baseline.
``describe_context`` counts the slice's bad events in the window by every other
dimension and reports the values that account for most of them, which turns
"locale=de-DE got worse" into "… mostly prompt_hash=a9f2, flag.eu_banner=on".
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from goldenloop.metrics.compute import MetricsQuery, compute_metrics
from goldenloop.metrics.dimensions import NONE_VALUE, Dimension, Filter, parse_dimension
from goldenloop.metrics.signals import SqlEnv
from goldenloop.metrics.slices import SliceStat, collect_slice_stats
from goldenloop.metrics.stats import bin_value, change_point
from goldenloop.metrics.windows import TimeWindow, default_bucket
from goldenloop.store.base import Store

if TYPE_CHECKING:
    from goldenloop.metrics.regressions import Finding, RegressionQuery

#: Values of one dimension are named when together (at most MAX_VALUES of them, each
#: carrying MIN_VALUE_SHARE) they account for this share of the slice's bad events …
DOMINANT_SHARE = 0.5
MIN_VALUE_SHARE = 0.2
MAX_VALUES = 3
COVERED = 0.8
#: … and be this much more common among bad events than among all of the slice's
#: events (now or in the day before).
MIN_LIFT = 1.2
BEFORE = timedelta(days=1)


def slice_filters(finding: Finding) -> list[Filter]:
    if finding.slice is None:
        return []
    name, value = finding.slice
    return [Filter(parse_dimension(name), None if value == NONE_VALUE else value)]


def find_onset(
    store: Store, env: SqlEnv, finding: Finding, query: RegressionQuery
) -> datetime | None:
    """Start of the bucket from which the slice's rate is most likely worse than its
    baseline (rates only; None for distributions or when no bucket stands out)."""
    metric = finding.metric
    if metric.significance_test != "proportion" or finding.baseline_value is None:
        return None
    window = query.window
    span = TimeWindow(max(window.start - window.length, query.baseline.start), window.end)
    bucket = default_bucket(window)
    result = compute_metrics(
        store,
        MetricsQuery(span, (metric.name,), (), (*query.where, *slice_filters(finding)), bucket),
        signals=env.signals,
    )
    points = [(row.bucket, row.values[metric.name]) for row in result.rows if row.bucket]
    counts = [(v.numerator or 0.0, v.denominator or 0.0) for _, v in points]
    worse_is_higher = metric.higher_is_better is False
    index = change_point(counts, finding.baseline_value, worse_is_higher)
    return None if index is None else points[index][0]


def _bad(finding: Finding, stat: SliceStat) -> float:
    metric = finding.metric
    if metric.significance_test == "proportion":
        return stat.den - stat.num if metric.higher_is_better else stat.num
    threshold = finding.baseline_value or 0.0
    if metric.higher_is_better:
        return sum(c for b, c in stat.bins.items() if bin_value(b) < threshold)
    return sum(c for b, c in stat.bins.items() if bin_value(b) > threshold)


def describe_context(
    store: Store,
    env: SqlEnv,
    finding: Finding,
    query: RegressionQuery,
    dims: Sequence[Dimension],
    *,
    facts: bool = False,
) -> list[tuple[str, str, float]]:
    """(dimension, values, share of the slice's bad events) for the dimensions whose
    few enriched values carry most of the bad events, largest share first."""
    own = finding.slice[0] if finding.slice else None
    others = [d for d in dims if d.name != own]
    if not others:
        return []
    # "Before" is the day before the window (or the baseline, if shorter): enough to see
    # which values are new, at a fraction of a full-baseline scan.
    name = finding.metric.name
    before_start = max(query.baseline.start, query.window.start - max(query.window.length, BEFORE))
    while True:
        stats = collect_slice_stats(
            store, env, [finding.metric], others, (*query.where, *slice_filters(finding)),
            query.window, TimeWindow(before_start, query.window.start), facts=facts,
            session_counts=False,
        )  # fmt: skip
        before = stats.get((name, None, 0), SliceStat())
        if before.count or before_start <= query.baseline.start:
            break
        before_start = query.baseline.start  # quiet day before: look at the whole baseline
    everything = stats.get((name, None, 1), SliceStat())
    total, population = _bad(finding, everything), everything.count
    if total <= 0 or population <= 0:
        return []
    # value → (share of the bad events, share of the slice's traffic now, before)
    values: dict[str, list[tuple[str, float, float, float | None]]] = {}
    for (_, slice_, period), stat in stats.items():
        if period != 1 or slice_ is None or slice_[1] == NONE_VALUE:
            continue
        old = stats.get((name, slice_, 0), SliceStat())
        values.setdefault(slice_[0], []).append((
            slice_[1], _bad(finding, stat) / total, stat.count / population,
            old.count / before.count if before.count else None,
        ))  # fmt: skip
    found = []
    for dim, options in values.items():
        # The few values that carry the bad events together ("locale=de-DE or fr-FR"),
        # each and all together more common among the bad events than in the slice's
        # traffic now or before (a new prompt hash is 0% before; a slice that is itself
        # new has no before). "on or off" covers all traffic and explains nothing.
        options.sort(key=lambda item: -item[1])
        picked: list[str] = []
        covered = now = old_share = 0.0
        for value, share, now_share, before_share in options[:MAX_VALUES]:
            if share < MIN_VALUE_SHARE or share < MIN_LIFT * _lower(now_share, before_share):
                break
            picked.append(value)
            covered += share
            now += now_share
            old_share += before_share or 0.0
            if covered >= COVERED:
                break
        baseline_share = old_share if before.count else None
        if len(picked) > 1 and len(picked) == len(options):
            continue  # every value the dimension has: it explains nothing
        if covered >= DOMINANT_SHARE and covered >= MIN_LIFT * _lower(now, baseline_share):
            found.append((dim, " or ".join(picked), covered))
    found.sort(key=lambda item: (-item[2], item[0]))
    return found


def _lower(now: float, before: float | None) -> float:
    return now if before is None else min(now, before)

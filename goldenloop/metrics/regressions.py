"""The slice regression finder: which slices got worse in a window, against a baseline.

For every metric and every slice (one dimension = one value: ``locale=de-DE``,
``prompt_hash=a9f2``, ``flag.eu_banner=on`` …, plus all traffic) it compares the window
with the baseline window of the same slice:

1. **Enough data**: at least ``min_sample`` observations in both periods and
   ``min_sessions`` sessions in the window, so three unlucky sessions never alarm. A
   slice that did not exist in the baseline (a new prompt hash) is compared with all
   traffic in the baseline instead.
2. **Significance**: rates with a two-proportion z-test (Fisher's exact test for small
   counts), distributions (latency, cost) with a Mann–Whitney U test (``stats``).
3. **Many comparisons**: Benjamini–Hochberg over every test run; a finding needs a
   q-value at or below ``alpha``.
4. **Big enough to matter**: a standardized effect (Cohen's h, or the d-equivalent of
   the Mann–Whitney effect) of at least ``min_effect`` in the bad direction.

Findings are ranked by effect size. The top ones are explained: when the change began
(a change point over the window's buckets) and which other dimension values dominate
the slice's bad events ("mostly prompt_hash=a9f2, flag.eu_banner=on").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from goldenloop.metrics.catalog import MetricDef, resolve_metrics
from goldenloop.metrics.dimensions import (
    DEFAULT_SLICES,
    NONE_VALUE,
    Dimension,
    Filter,
    parse_dimension,
)
from goldenloop.metrics.explain import describe_context, find_onset
from goldenloop.metrics.facts import ensure_turn_facts
from goldenloop.metrics.signals import SignalConfig, SqlEnv
from goldenloop.metrics.slices import (
    Slice,
    SliceStat,
    SliceStats,
    collect_slice_stats,
    discover_flags,
    project_shares,
)
from goldenloop.metrics.stats import (
    TestResult,
    benjamini_hochberg,
    histogram_quantile,
    mann_whitney_binned,
    proportion_test,
)
from goldenloop.metrics.windows import TimeWindow
from goldenloop.store.base import Store

#: Metrics the finder checks when not told otherwise.
REGRESSION_METRICS: tuple[str, ...] = (
    "task_success_rate", "feedback_success_rate", "outcome_success_rate", "judge_pass_rate",
    "turn_error_rate", "tool_error_rate", "llm_error_rate", "guardrail_block_rate",
    "empty_response_rate", "parse_error_rate", "circuit_breaker_rate", "max_tokens_rate",
    "redundant_call_rate", "turn_latency_p95", "cost_per_turn",
)  # fmt: skip


@dataclass(frozen=True)
class RegressionQuery:
    window: TimeWindow
    baseline: TimeWindow
    metrics: tuple[str, ...] = REGRESSION_METRICS
    #: Dimensions to slice by; None: the standard slices plus every feature flag seen.
    dims: tuple[Dimension, ...] | None = None
    where: tuple[Filter, ...] = ()
    min_sample: int = 30
    min_sessions: int = 10
    alpha: float = 0.05
    min_effect: float = 0.2
    limit: int = 20
    include_improvements: bool = False
    #: How many top findings get an onset time and a context description.
    explain: int = 3

    def __post_init__(self) -> None:
        if self.min_sample < 1 or self.min_sessions < 0:
            raise ValueError("min_sample must be at least 1 and min_sessions not negative")
        if not 0 < self.alpha < 1:
            raise ValueError("alpha must be between 0 and 1")
        if self.limit < 1:
            raise ValueError("limit must be at least 1")


@dataclass
class Finding:
    metric: MetricDef
    slice: Slice
    window_value: float | None
    baseline_value: float | None
    window_n: int
    baseline_n: int
    window_sessions: int
    effect: float
    p_value: float
    q_value: float
    test: str
    baseline_scope: str  # "slice" or "all traffic"
    worse: bool
    onset: datetime | None = None
    context: list[tuple[str, str, float]] = field(default_factory=list)

    @property
    def slice_label(self) -> str:
        return "all traffic" if self.slice is None else f"{self.slice[0]}={self.slice[1]}"

    @property
    def summary(self) -> str:
        unit = self.metric.unit
        text = (
            f"{self.metric.title} {_fmt(self.window_value, unit)} "
            f"(was {_fmt(self.baseline_value, unit)}) for {self.slice_label}"
        )
        if self.onset is not None:
            text += f" since {self.onset.strftime('%Y-%m-%d %H:%M')} UTC"
        if self.context:
            text += "; mostly " + ", ".join(f"{d}={v}" for d, v, _ in self.context[:3])
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric.name,
            "title": self.metric.title,
            "unit": self.metric.unit,
            "slice": None
            if self.slice is None
            else {"dimension": self.slice[0], "value": self.slice[1]},
            "window_value": self.window_value,
            "baseline_value": self.baseline_value,
            "change": _change(self.window_value, self.baseline_value),
            "window_n": self.window_n,
            "baseline_n": self.baseline_n,
            "window_sessions": self.window_sessions,
            "effect": round(self.effect, 4),
            "p_value": self.p_value,
            "q_value": self.q_value,
            "test": self.test,
            "baseline_scope": self.baseline_scope,
            "direction": "worse" if self.worse else "better",
            "onset": self.onset.isoformat() if self.onset else None,
            "context": [
                {"dimension": d, "value": v, "share": round(s, 4)} for d, v, s in self.context
            ],
            "summary": self.summary,
        }


@dataclass
class RegressionReport:
    query: RegressionQuery
    dims: list[Dimension]
    findings: list[Finding]
    tests_run: int
    slices_skipped: int

    def to_dict(self) -> dict[str, Any]:
        q = self.query
        return {
            "window": q.window.to_dict(),
            "baseline": q.baseline.to_dict(),
            "dimensions": [d.name for d in self.dims],
            "metrics": list(q.metrics),
            "where": [str(f) for f in q.where],
            "min_sample": q.min_sample,
            "min_sessions": q.min_sessions,
            "alpha": q.alpha,
            "min_effect": q.min_effect,
            "tests_run": self.tests_run,
            "slices_skipped_small": self.slices_skipped,
            "findings": [f.to_dict() for f in self.findings],
        }


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "–"
    if unit == "ratio":
        return f"{value:.1%}"
    if unit == "ms":
        return f"{value:,.0f} ms"
    if unit == "usd":
        return f"${value:.4f}"
    return f"{value:,.3g}"


def _change(new: float | None, old: float | None) -> float | None:
    return None if new is None or old is None else new - old


def default_dimensions(
    store: Store, query: RegressionQuery, *, facts: bool = False
) -> list[Dimension]:
    dims = [parse_dimension(name) for name in DEFAULT_SLICES]
    span = TimeWindow(min(query.window.start, query.baseline.start), query.window.end)
    flags = discover_flags(store, span, facts=facts)
    return dims + [parse_dimension(f"flag.{name}") for name in flags]


def _value(metric: MetricDef, stat: SliceStat) -> float | None:
    """Rates and means exactly; quantiles from the histogram (within a bin, ~5%)."""
    if metric.aggregation == "quantile":
        return histogram_quantile(stat.bins, metric.quantile or 0.5)
    return stat.num / stat.den if stat.den else None


def _design_factor(metric: MetricDef, stat: SliceStat) -> float:
    """Sessions per observation (≤ 1). Turns, spans and events of one session are not
    independent; counting each session once (full intra-session correlation) keeps a
    few long sessions from looking significant."""
    if metric.source == "sessions" or stat.den <= 0 or stat.sessions <= 0:
        return 1.0
    return min(1.0, stat.sessions / stat.den)


def _test(metric: MetricDef, now: SliceStat, before: SliceStat) -> TestResult | None:
    k1, k0 = _design_factor(metric, now), _design_factor(metric, before)
    if metric.significance_test == "proportion":
        if now.num > now.den or before.num > before.den:
            return None  # a ratio that is not a share of its denominator
        return proportion_test(now.num * k1, now.den * k1, before.num * k0, before.den * k0)
    return mann_whitney_binned(
        {b: c * k1 for b, c in now.bins.items()}, {b: c * k0 for b, c in before.bins.items()}
    )


def find_regressions(
    store: Store, query: RegressionQuery, *, signals: SignalConfig | None = None
) -> RegressionReport:
    env = SqlEnv(store.dialect, signals or SignalConfig())
    metrics = [m for m in resolve_metrics(query.metrics) if m.significance_test != "none"]
    facts = ensure_turn_facts(store, env)
    dims = (
        list(query.dims)
        if query.dims is not None
        else default_dimensions(store, query, facts=facts)
    )
    stats = collect_slice_stats(
        store, env, metrics, dims, query.where, query.window, query.baseline, facts=facts
    )
    shares: dict[Slice, dict[str, float]] | None = None

    def baseline_project(slice_: Slice) -> str | None:
        """The project carrying at least 90% of a (new) slice's turns, if any."""
        nonlocal shares
        if slice_ is None or slice_[0] == "project":
            return None
        if shares is None:
            shares = project_shares(store, env, dims, query.where, query.window, facts=facts)
        counts = shares.get(slice_, {})
        total = sum(counts.values())
        best = max(counts, key=lambda p: counts[p], default=None)
        return (
            best
            if best is not None and best != NONE_VALUE and counts[best] >= 0.9 * total
            else None
        )

    candidates, skipped = _candidates(metrics, stats, query, baseline_project)
    q_values = benjamini_hochberg([c.p_value for c in candidates])
    findings = []
    for finding, q in zip(candidates, q_values, strict=True):
        finding.q_value = q
        if q > query.alpha or abs(finding.effect) < query.min_effect:
            continue
        if finding.worse or query.include_improvements:
            findings.append(finding)
    findings.sort(key=lambda f: (not f.worse, -abs(f.effect), f.q_value))
    findings = findings[: query.limit]
    for finding in findings[: query.explain]:
        if finding.worse:
            finding.onset = find_onset(store, env, finding, query)
            finding.context = describe_context(store, env, finding, query, dims, facts=facts)
    return RegressionReport(query, dims, findings, len(candidates), skipped)


def _candidates(
    metrics: list[MetricDef],
    stats: SliceStats,
    query: RegressionQuery,
    baseline_project: Callable[[Slice], str | None],
) -> tuple[list[Finding], int]:
    slices = sorted({key[1] for key in stats}, key=lambda s: ("",) if s is None else s)
    candidates: list[Finding] = []
    skipped = 0
    for metric in metrics:
        overall = stats.get((metric.name, None, 0), SliceStat())
        for slice_ in slices:
            now = stats.get((metric.name, slice_, 1))
            if now is None or now.count < query.min_sample or now.sessions < query.min_sessions:
                skipped += now is not None
                continue
            before = stats.get((metric.name, slice_, 0)) or SliceStat()
            scope = "slice"
            if before.count == 0 and slice_ is not None:
                # A new value (a prompt hash first seen in the window): compare with its
                # project's baseline when one project carries it, else all traffic.
                project = baseline_project(slice_)
                matched = stats.get((metric.name, ("project", project), 0)) if project else None
                if matched is not None and matched.count >= query.min_sample:
                    before, scope = matched, f"project={project}"
                else:
                    before, scope = overall, "all traffic"
            if before.count < query.min_sample:
                skipped += 1
                continue
            result = _test(metric, now, before)
            if result is None:
                continue
            new, old = _value(metric, now), _value(metric, before)
            rising = result.effect > 0
            worse = (
                rising != bool(metric.higher_is_better)
                if metric.higher_is_better is not None
                else False
            )
            candidates.append(
                Finding(
                    metric,
                    slice_,
                    new,
                    old,
                    int(now.count),
                    int(before.count),
                    int(now.sessions),
                    result.effect,
                    result.p_value,
                    1.0,
                    result.test,
                    scope,
                    worse,
                )  # fmt: skip
            )
    return candidates, skipped

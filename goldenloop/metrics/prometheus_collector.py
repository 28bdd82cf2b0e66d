"""The prometheus-client side of ``/metrics``: the collector that computes the gauges
listed in ``goldenloop.metrics.prometheus`` from the store, and the rendering.

``PrometheusExporter`` imports this module on the first scrape, so a server nobody
scrapes never loads prometheus-client.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from goldenloop.metrics.burn import evaluate_slos
from goldenloop.metrics.compute import MetricsQuery, MetricsResult, compute_metrics
from goldenloop.metrics.dimensions import Dimension
from goldenloop.metrics.prometheus import _label_name
from goldenloop.metrics.signals import SignalConfig
from goldenloop.metrics.slo import SLO
from goldenloop.metrics.windows import TimeWindow
from goldenloop.store.base import Store

#: (family, help, metric name, extra label name, extra label value, scale)
_GAUGES: tuple[tuple[str, str, str, str | None, str | None, float], ...] = (
    ("turns", "Turns started in the window.", "turns", None, None, 1.0),
    ("sessions", "Sessions started in the window.", "sessions", None, None, 1.0),
    ("cost_usd", "Dollars spent in the window.", "cost_usd", None, None, 1.0),
    ("tokens", "Tokens used in the window.", "tokens", None, None, 1.0),
    ("task_success_ratio", "Task success (combined rule).", "task_success_rate", None, None, 1.0),
    ("success_ratio", "Task success by source.", "feedback_success_rate", "source", "feedback", 1.0),
    ("success_ratio", "", "outcome_success_rate", "source", "outcome", 1.0),
    ("success_ratio", "", "judge_pass_rate", "source", "judge", 1.0),
    ("turn_latency_seconds", "End-to-end turn latency.", "turn_latency_p50", "quantile", "0.5", 0.001),
    ("turn_latency_seconds", "", "turn_latency_p95", "quantile", "0.95", 0.001),
    ("turn_latency_seconds", "", "turn_latency_p99", "quantile", "0.99", 0.001),
    ("error_ratio", "Error rates by type.", "turn_error_rate", "type", "turn", 1.0),
    ("error_ratio", "", "tool_error_rate", "type", "tool", 1.0),
    ("error_ratio", "", "llm_error_rate", "type", "llm", 1.0),
    ("error_ratio", "", "parse_error_rate", "type", "parse", 1.0),
    ("error_ratio", "", "guardrail_block_rate", "type", "guardrail_block", 1.0),
    ("error_ratio", "", "empty_response_rate", "type", "empty_response", 1.0),
    ("safety_ratio", "Safety signals per turn.", "injection_attempt_rate", "signal", "injection", 1.0),
    ("safety_ratio", "", "policy_violation_rate", "signal", "policy_violation", 1.0),
    ("safety_ratio", "", "escalation_rate", "signal", "escalation", 1.0),
    ("circuit_breaker_trip_ratio", "Turns that tripped the circuit breaker.",
     "circuit_breaker_rate", None, None, 1.0),
    ("max_tokens_ratio", "LLM calls stopped at max_tokens.", "max_tokens_rate", None, None, 1.0),
)  # fmt: skip


class GoldenloopCollector(Collector):
    """Computes the gauges on each scrape from the store."""

    def __init__(
        self,
        store: Store,
        *,
        labels: Sequence[Dimension],
        window: timedelta,
        max_series: int,
        slos: Callable[[], Sequence[SLO]] = list,
        signals: SignalConfig | None = None,
    ) -> None:
        self.store = store
        self.labels = tuple(labels)
        self.window = window
        self.max_series = max_series
        self.slos = slos
        self.signals = signals or SignalConfig()

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        names = tuple(dict.fromkeys(g[2] for g in _GAUGES))
        result = compute_metrics(
            self.store,
            MetricsQuery(TimeWindow.last(self.window), names, self.labels),
            signals=self.signals,
        )
        label_names = [_label_name(d) for d in self.labels]
        yield from self._gauges(result, label_names)
        yield from self._slo_gauges()
        window = GaugeMetricFamily(
            "goldenloop_metrics_window_seconds", "Length of the window the gauges describe."
        )
        window.add_metric([], self.window.total_seconds())
        yield window
        took = GaugeMetricFamily(
            "goldenloop_scrape_duration_seconds", "Time spent computing this exposition."
        )
        took.add_metric([], time.perf_counter() - started)
        yield took

    def _gauges(self, result: MetricsResult, label_names: list[str]) -> Iterator[Metric]:
        rows = sorted(result.rows, key=lambda r: -r.values["turns"].n)
        kept, dropped = rows[: self.max_series], max(len(rows) - self.max_series, 0)
        families: dict[str, GaugeMetricFamily] = {}
        for family, help_text, metric, extra, extra_value, scale in _GAUGES:
            if family not in families:
                names = [*label_names, *([extra] if extra else [])]
                families[family] = GaugeMetricFamily(
                    f"goldenloop_{family}", help_text, labels=names
                )
            for row in kept:
                value = row.values[metric].value
                if value is None:
                    continue
                labels = ["" if v is None else v for v in row.dims]
                families[family].add_metric([*labels, *([extra_value] if extra_value else [])],
                                            value * scale)  # fmt: skip
        yield from families.values()
        gauge = GaugeMetricFamily(
            "goldenloop_dropped_series", "Label combinations left out to cap cardinality."
        )
        gauge.add_metric([], float(dropped))
        yield gauge

    def _slo_gauges(self) -> Iterator[Metric]:
        statuses = evaluate_slos(self.store, list(self.slos()), signals=self.signals)
        sli = GaugeMetricFamily("goldenloop_slo_sli", "SLI over the SLO period.", labels=["slo"])
        objective = GaugeMetricFamily("goldenloop_slo_objective", "SLO target.", labels=["slo"])
        remaining = GaugeMetricFamily(
            "goldenloop_slo_error_budget_remaining",
            "Share of the error budget left (negative when overspent).", labels=["slo"],
        )  # fmt: skip
        burn = GaugeMetricFamily(
            "goldenloop_slo_burn_rate", "Error-budget burn rate.", labels=["slo", "window"]
        )
        freeze = GaugeMetricFamily(
            "goldenloop_slo_freeze_experiments",
            "1 when the budget burns fast or is spent: freeze experiments.", labels=["slo"],
        )  # fmt: skip
        for status in statuses:
            name = status.slo.name
            objective.add_metric([name], status.slo.objective)
            freeze.add_metric([name], 1.0 if status.freeze_experiments else 0.0)
            if status.sli is not None:
                sli.add_metric([name], status.sli)
            if status.budget_remaining is not None:
                remaining.add_metric([name], status.budget_remaining)
            for window, rate in status.burn_rates.items():
                if rate is not None:
                    burn.add_metric([name, window], rate)
        yield from (sli, objective, remaining, burn, freeze)


def render_exposition(
    store: Store,
    *,
    labels: Sequence[Dimension],
    window: timedelta,
    max_series: int,
    slos: Callable[[], Sequence[SLO]],
    signals: SignalConfig | None,
) -> bytes:
    """One scrape's body in the Prometheus text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(
        GoldenloopCollector(
            store, labels=labels, window=window, max_series=max_series, slos=slos, signals=signals
        )
    )
    return generate_latest(registry)

"""Online health metrics, slices, SLOs with error budgets, and Prometheus export.

Importing the package registers the built-in metrics (catalog, success, trajectory).
"""

from __future__ import annotations

from goldenloop.metrics import catalog, success, trajectory
from goldenloop.metrics.catalog import METRICS, MetricDef, get_metric, register_metric
from goldenloop.metrics.compute import (
    DEFAULT_METRICS,
    MetricsQuery,
    MetricsResult,
    MetricValue,
    compute_metrics,
)
from goldenloop.metrics.dimensions import Dimension, Filter, parse_dimensions, parse_filters
from goldenloop.metrics.facts import refresh_facts
from goldenloop.metrics.signals import SignalConfig
from goldenloop.metrics.windows import TimeWindow

__all__ = [
    "DEFAULT_METRICS",
    "METRICS",
    "Dimension",
    "Filter",
    "MetricDef",
    "MetricValue",
    "MetricsQuery",
    "MetricsResult",
    "SignalConfig",
    "TimeWindow",
    "catalog",
    "compute_metrics",
    "get_metric",
    "parse_dimensions",
    "parse_filters",
    "refresh_facts",
    "register_metric",
    "success",
    "trajectory",
]

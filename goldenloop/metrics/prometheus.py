"""``/metrics`` in the Prometheus exposition format, via ``prometheus-client``.

Gauges describe the trailing window (default 5 minutes) and carry a small, configurable
label set (default: ``project``), so a Grafana/Alertmanager setup gets the operational
metrics and SLO burn rates without a cardinality explosion. At most ``max_series``
label combinations per metric are exported (the busiest); the rest are counted in
``goldenloop_dropped_series``.

Exported (all gauges, ``goldenloop_`` prefix):

* ``turns``, ``sessions``, ``cost_usd``, ``tokens`` in the window;
* ``task_success_ratio`` and ``success_ratio{source=feedback|outcome|judge}``;
* ``turn_latency_seconds{quantile=0.5|0.95|0.99}``;
* ``error_ratio{type=turn|tool|llm|parse|guardrail_block|empty_response}``;
* ``safety_ratio{signal=injection|policy_violation|escalation}``;
* ``circuit_breaker_trip_ratio``, ``max_tokens_ratio``;
* per SLO: ``slo_sli``, ``slo_objective``, ``slo_error_budget_remaining``,
  ``slo_burn_rate{window=5m|30m|1h|6h|3d}``, ``slo_freeze_experiments`` (0/1);
* ``metrics_window_seconds`` and ``scrape_duration_seconds``.

The collector and prometheus-client live in ``prometheus_collector``, imported on the
first scrape: a server nobody scrapes does not load them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from goldenloop.metrics.config import PrometheusConfig
from goldenloop.metrics.dimensions import Dimension, parse_dimension
from goldenloop.metrics.signals import SignalConfig
from goldenloop.metrics.slo import SLO
from goldenloop.store.base import Store

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_LABELS = 4


def parse_labels(text: str | Sequence[str]) -> tuple[Dimension, ...]:
    names = text.split(",") if isinstance(text, str) else list(text)
    dims = [parse_dimension(n.strip()) for n in names if n.strip()]
    if len(dims) > MAX_LABELS:
        raise ValueError(f"labels: at most {MAX_LABELS} labels keep /metrics low-cardinality")
    return tuple(dict.fromkeys(dims))


def _label_name(dim: Dimension) -> str:
    return (
        dim.name.replace(".", "_")
        .replace("-", "_")
        .replace(":", "_")
        .replace("/", "_")
        .replace("@", "_")
    )


class PrometheusExporter:
    """Renders the exposition, caching it briefly so several scrapers cost one query set."""

    def __init__(
        self,
        store: Store,
        config: PrometheusConfig | None = None,
        *,
        slos: Callable[[], Sequence[SLO]] = list,
        signals: SignalConfig | None = None,
        cache_seconds: float = 5.0,
    ) -> None:
        self.store = store
        self.config = config or PrometheusConfig()
        self.slos = slos
        self.signals = signals
        self.cache_seconds = cache_seconds
        self._cache: dict[tuple[Any, ...], tuple[float, bytes]] = {}
        self._lock = threading.Lock()

    def render(
        self, labels: Sequence[Dimension] | None = None, window: timedelta | None = None
    ) -> bytes:
        dims = tuple(labels) if labels is not None else parse_labels(self.config.labels)
        length = window or self.config.window
        key = (tuple(d.name for d in dims), length)
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(key)
            if cached and now - cached[0] < self.cache_seconds:
                return cached[1]
        from goldenloop.metrics.prometheus_collector import render_exposition

        body = render_exposition(
            self.store,
            labels=dims,
            window=length,
            max_series=self.config.max_series,
            slos=self.slos,
            signals=self.signals,
        )
        with self._lock:
            self._cache[key] = (now, body)
        return body

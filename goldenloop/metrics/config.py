"""The metrics config file (``--slo-file`` / ``GOLDENLOOP_SLO_FILE``), YAML or JSON::

    slos:                      # SLOs with error budgets (see slo.py)
      - name: refund-grounded-answers
        objective: 95%
        period: 30d
        sli: {kind: judge, judge: answer_correctness, filter: {project: refund-assistant}}
    signals:                   # attribute names behind signal metrics (see signals.py)
      circuit_breaker_attribute: goldenloop.circuit_breaker.tripped
    prometheus:                # /metrics
      labels: [project]        # label set (low cardinality by default)
      window: 5m               # trailing window the gauges cover
      max_series: 200          # per metric; rarer label values fold into "other"

Every section is optional; a missing file path means "all defaults, no file SLOs".
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from goldenloop.metrics.dimensions import DimensionError, parse_dimension
from goldenloop.metrics.signals import SignalConfig, SignalConfigError
from goldenloop.metrics.slo import SLO, SloError, parse_slos
from goldenloop.metrics.windows import WindowError, parse_duration


class MetricsConfigError(ValueError):
    """The config file cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class PrometheusConfig:
    labels: tuple[str, ...] = ("project",)
    window: timedelta = timedelta(minutes=5)
    max_series: int = 200

    @classmethod
    def from_mapping(cls, data: Any) -> PrometheusConfig:
        if not data:
            return cls()
        if not isinstance(data, Mapping):
            raise MetricsConfigError("prometheus: expected a mapping")
        unknown = sorted(set(data) - {"labels", "window", "max_series"})
        if unknown:
            raise MetricsConfigError(f"prometheus: unknown field(s) {', '.join(unknown)}")
        labels = data.get("labels", list(cls.labels))
        if isinstance(labels, str):
            labels = [p.strip() for p in labels.split(",") if p.strip()]
        if not isinstance(labels, list):
            raise MetricsConfigError("prometheus.labels: expected a list of dimensions")
        try:
            names = tuple(parse_dimension(str(label)).name for label in labels)
            window = parse_duration(str(data.get("window", "5m")), name="prometheus.window")
        except (DimensionError, WindowError) as exc:
            raise MetricsConfigError(f"prometheus: {exc}") from None
        max_series = data.get("max_series", cls.max_series)
        if not isinstance(max_series, int) or isinstance(max_series, bool) or max_series < 1:
            raise MetricsConfigError("prometheus.max_series: expected a positive integer")
        return cls(names, window, max_series)


@dataclass(frozen=True)
class MetricsConfig:
    signals: SignalConfig = field(default_factory=SignalConfig)
    slos: tuple[SLO, ...] = ()
    prometheus: PrometheusConfig = field(default_factory=PrometheusConfig)
    path: str | None = None


def parse_metrics_config(data: Any, *, path: str | None = None) -> MetricsConfig:
    if data is None:
        return MetricsConfig(path=path)
    if not isinstance(data, Mapping):
        raise MetricsConfigError("expected a mapping with slos, signals and/or prometheus")
    unknown = sorted(set(data) - {"slos", "signals", "prometheus"})
    if unknown:
        raise MetricsConfigError(
            f"unknown section(s) {', '.join(unknown)}; use slos, signals, prometheus"
        )
    try:
        return MetricsConfig(
            signals=SignalConfig.from_mapping(data.get("signals")),
            slos=tuple(parse_slos(data.get("slos"), origin="file")),
            prometheus=PrometheusConfig.from_mapping(data.get("prometheus")),
            path=path,
        )
    except (SloError, SignalConfigError) as exc:
        raise MetricsConfigError(str(exc)) from None


def load_metrics_config(path: str | Path | None) -> MetricsConfig:
    """Read the file at ``path`` (YAML or JSON); None or "" gives the defaults."""
    if not path:
        return MetricsConfig()
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise MetricsConfigError(
            f"{file}: cannot read the metrics config: {exc.strerror}"
        ) from None
    try:
        data = json.loads(text) if file.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise MetricsConfigError(
            f"{file}: not valid {'JSON' if file.suffix == '.json' else 'YAML'}: {exc}"
        ) from None
    try:
        return parse_metrics_config(data, path=str(file))
    except MetricsConfigError as exc:
        raise MetricsConfigError(f"{file}: {exc}") from None

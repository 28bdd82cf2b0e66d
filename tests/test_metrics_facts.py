"""The turn and session facts follow new spans, late events and config changes."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from metrics_data import T0, WINDOW, load

from goldenloop.metrics import MetricsQuery, SignalConfig, compute_metrics
from goldenloop.metrics.facts import ensure_turn_facts
from goldenloop.metrics.signals import SqlEnv
from goldenloop.model import Feedback, Outcome
from goldenloop.store.base import Store
from goldenloop.store.duckdb import DuckDBStore


def _value(store: Store, metric: str, signals: SignalConfig | None = None) -> float | None:
    result = compute_metrics(store, MetricsQuery(WINDOW, (metric,)), signals=signals)
    return result.rows[0].values[metric].value


def test_a_late_outcome_changes_a_sessions_verdict(store: Store) -> None:
    load(store)
    assert _value(store, "task_success_rate") == pytest.approx(2 / 3)
    store.insert_outcomes([Outcome("o3", "demo", "S3", None, "refund_completed", False, None, {},
                                   T0 + timedelta(hours=5))])  # fmt: skip
    assert _value(store, "task_success_rate") == pytest.approx(1 / 3)  # S3 now fails


def test_an_event_with_an_old_timestamp_is_still_counted(store: Store) -> None:
    load(store)
    assert _value(store, "task_success_rate") == pytest.approx(2 / 3)
    store.insert_feedback([Feedback("f9", "demo", "S3", None, "down", "wrong", None, None, None,
                                    None, T0 - timedelta(days=30))])  # fmt: skip
    assert _value(store, "task_success_rate") == pytest.approx(1 / 3)


def test_changing_a_signal_rebuilds_the_facts(store: Store) -> None:
    load(store)
    assert _value(store, "circuit_breaker_rate") == pytest.approx(1 / 4)
    renamed = SignalConfig(circuit_breaker_attribute="app.breaker", circuit_breaker_error_types=())
    assert _value(store, "circuit_breaker_rate", renamed) == 0
    assert _value(store, "circuit_breaker_rate") == pytest.approx(1 / 4)


def test_refreshing_twice_without_news_changes_nothing(store: Store) -> None:
    load(store)
    env = SqlEnv(store.dialect)
    assert ensure_turn_facts(store, env)
    before = store.fetch("SELECT value FROM metric_state")
    assert ensure_turn_facts(store, env)
    assert store.fetch("SELECT value FROM metric_state") == before
    assert store.fetch("SELECT count(*) FROM metric_turns")[0][0] == 6  # every turn, all time
    assert store.fetch("SELECT count(*) FROM metric_sessions")[0][0] == 5


def test_a_read_only_store_computes_from_the_spans(tmp_path: Path) -> None:
    path = tmp_path / "ro.duckdb"
    writable = DuckDBStore(path)
    writable.migrate()
    load(writable)
    writable.close()  # facts never built
    read_only = DuckDBStore(path, read_only=True)
    try:
        assert ensure_turn_facts(read_only, SqlEnv("duckdb")) is False
        assert _value(read_only, "task_success_rate") == pytest.approx(2 / 3)
        assert _value(read_only, "turn_latency_p95") == pytest.approx(2850.0)
    finally:
        read_only.close()

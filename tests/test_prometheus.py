"""``/metrics``: Prometheus exposition, low cardinality by default, SLO gauges."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import span_batch
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from goldenloop.config import Settings
from goldenloop.metrics.dimensions import parse_dimension
from goldenloop.metrics.prometheus import PrometheusExporter, parse_labels
from goldenloop.metrics.slo import parse_slo
from goldenloop.store.base import Store
from goldenloop.store.duckdb import DuckDBStore
from goldenloop.web.app import create_app


def _recent_turns(store: Store) -> None:
    now = datetime.now(UTC)
    rows = []
    for i, (project, locale, status, latency) in enumerate([
        ("shop", "de-DE", "ok", 1000.0), ("shop", "en-US", "error", 3000.0),
        ("shop", "en-US", "ok", 2000.0), ("help", "fr-FR", "ok", 500.0),
    ]):  # fmt: skip
        start = now - timedelta(minutes=2, seconds=i)
        rows.append({"trace_id": f"t{i}", "span_id": "root", "session_id": f"s{i}", "kind": "agent",
                     "project": project, "locale": locale, "status": status, "latency_ms": latency,
                     "start_time": start, "ingested_at": start})  # fmt: skip
        rows.append({"trace_id": f"t{i}", "span_id": "llm", "parent_id": "root", "kind": "llm",
                     "session_id": f"s{i}", "project": project, "locale": locale, "cost_usd": 0.01,
                     "start_time": start, "ingested_at": start})  # fmt: skip
    store.insert_spans(span_batch(*rows))


def _samples(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_exposition_is_labelled_by_project_by_default(store: Store) -> None:
    _recent_turns(store)
    samples = _samples(PrometheusExporter(store).render())
    assert samples[("goldenloop_turns", (("project", "shop"),))] == 3
    assert samples[("goldenloop_turns", (("project", "help"),))] == 1
    assert samples[
        ("goldenloop_error_ratio", (("project", "shop"), ("type", "turn")))
    ] == pytest.approx(1 / 3)
    assert (
        samples[("goldenloop_turn_latency_seconds", (("project", "shop"), ("quantile", "0.5")))]
        == 2.0
    )
    assert samples[("goldenloop_cost_usd", (("project", "shop"),))] == pytest.approx(0.03)
    assert samples[("goldenloop_metrics_window_seconds", ())] == 300
    assert not any("locale" in dict(labels) for _, labels in samples)


def test_the_label_set_is_configurable_and_capped(store: Store) -> None:
    _recent_turns(store)
    exporter = PrometheusExporter(store)
    by_locale = _samples(exporter.render(parse_labels("project,locale")))
    assert by_locale[("goldenloop_turns", (("locale", "en-US"), ("project", "shop")))] == 2
    capped = PrometheusExporter(
        store, exporter.config.__class__(("locale",), timedelta(minutes=5), 2)
    )
    samples = _samples(capped.render())
    turns = {labels: v for (name, labels), v in samples.items() if name == "goldenloop_turns"}
    assert turns == {(("locale", "en-US"),): 2} | {k: v for k, v in turns.items() if v == 1}
    assert len(turns) == 2  # the busiest two label values
    assert samples[("goldenloop_dropped_series", ())] == 1
    with pytest.raises(ValueError, match="at most 4"):
        parse_labels("project,locale,tier,model,provider")


def test_slo_gauges_include_burn_rates_and_freeze(store: Store) -> None:
    _recent_turns(store)
    slo = parse_slo({"name": "fast-turns", "objective": "99%", "period": "1d",
                     "sli": {"kind": "latency", "threshold_ms": 1500}})  # fmt: skip
    samples = _samples(PrometheusExporter(store, slos=lambda: [slo]).render())
    assert samples[("goldenloop_slo_sli", (("slo", "fast-turns"),))] == pytest.approx(0.5)
    assert samples[("goldenloop_slo_objective", (("slo", "fast-turns"),))] == 0.99
    assert samples[
        ("goldenloop_slo_burn_rate", (("slo", "fast-turns"), ("window", "5m")))
    ] == pytest.approx(50)
    assert samples[("goldenloop_slo_freeze_experiments", (("slo", "fast-turns"),))] == 1


def test_metrics_route_serves_text_and_rejects_bad_labels(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "p.duckdb")
    store.migrate()
    _recent_turns(store)
    config = tmp_path / "metrics.yaml"
    config.write_text("prometheus:\n  labels: [locale]\n", encoding="utf-8")
    try:
        with TestClient(create_app(Settings(slo_file=str(config)), store)) as client:
            response = client.get("/metrics")
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/plain")
            samples = _samples(response.content)
            assert samples[("goldenloop_turns", (("locale", "en-US"),))] == 2
            by_project = _samples(client.get("/metrics?labels=project&window=1h").content)
            assert by_project[("goldenloop_metrics_window_seconds", ())] == 3600
            bad = client.get("/metrics?labels=colour")
            assert bad.status_code == 400 and "colour" in bad.json()["error"]
            assert client.get("/metrics?window=forever").status_code == 400
    finally:
        store.close()


def test_label_names_are_valid_prometheus_names() -> None:
    from goldenloop.metrics.prometheus import _label_name

    assert _label_name(parse_dimension("flag.eu-banner")) == "flag_eu_banner"
    assert _label_name(parse_dimension("tier")) == "customer_tier"

"""The overview page in a real browser: uPlot charts draw, tables and SLOs render, the
regression panel loads through htmx, and it is the landing page."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from live import LiveServer, chromium_page
from metrics_data import WINDOW, load

from goldenloop.config import Settings
from goldenloop.store.duckdb import DuckDBStore
from goldenloop.web.app import create_app

pytestmark = pytest.mark.browser
QUERY = f"window=24h&end={quote(WINDOW.end.isoformat())}"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    store = DuckDBStore(tmp_path / "ui.duckdb")
    store.migrate()
    load(store)
    config = tmp_path / "metrics.yaml"
    config.write_text(
        "slos:\n  - {name: answers-correct, objective: 95%, period: 1d, sli: {kind: judge}}\n",
        encoding="utf-8",
    )
    try:
        with LiveServer(create_app(Settings(slo_file=str(config)), store)) as live:
            yield live
    finally:
        store.close()


def test_charts_render_with_data_points(server: LiveServer) -> None:
    with chromium_page() as page:
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{server.url}/overview?{QUERY}")
        page.wait_for_function("window.goldenloopCharts && window.goldenloopCharts.length === 5")
        charts = page.evaluate("window.goldenloopCharts.map(c => [c.id, c.points])")
        assert [c[0] for c in charts] == ["success", "latency", "cost", "errors", "volume"]
        assert all(points > 0 for _, points in charts), charts
        assert page.locator("#charts canvas").count() == 5
        assert page.locator("#chart-volume").get_attribute("data-points") == "24"
        assert errors == []


def test_headline_tables_and_slos(server: LiveServer) -> None:
    with chromium_page() as page:
        page.goto(f"{server.url}/overview?{QUERY}")
        task = page.locator('#headline .card[data-metric="task_success_rate"]')
        # 24 hours include S0 (11:00, thumbs-down): 2 of 4 sessions succeeded, 5 turns
        assert "50.0%" in task.inner_text()
        assert "5" in page.locator('#headline .card[data-metric="turns"]').inner_text()
        latency = page.locator("table.slices").first.inner_text()
        assert "tool" in latency and "m-a" in latency
        slos = page.locator("#slos").inner_text()
        assert "answers-correct" in slos and "freeze experiments" in slos
        page.wait_for_selector("#no-regressions, #regression-table")  # htmx fragment loaded
        assert "slice tests" in page.locator("#regressions").inner_text()


def test_filters_and_slice_dimension_round_trip(server: LiveServer) -> None:
    with chromium_page() as page:
        page.goto(f"{server.url}/overview?{QUERY}&locale=en-US&slices=customer_tier")
        assert "locale=en-US" in page.locator("main .meta").first.inner_text()
        assert "3" in page.locator('#headline .card[data-metric="turns"]').inner_text()
        assert page.locator("h2", has_text="By customer_tier").count() == 1


def test_the_landing_page_is_the_overview(server: LiveServer) -> None:
    with chromium_page() as page:
        page.goto(server.url + "/")
        assert page.locator("h1").inner_text() == "Overview"
        page.wait_for_function("window.goldenloopCharts && window.goldenloopCharts.length === 5")
        page.click("text=Sessions")
        page.wait_for_url("**/sessions")


def test_a_bad_parameter_shows_a_clear_error_page(server: LiveServer) -> None:
    with chromium_page() as page:
        response = page.goto(server.url + "/overview?window=forever")
        assert response is not None and response.status == 400
        assert "window" in page.locator(".error").inner_text()

"""The minimal web UI in a real browser: session list → session → trace replay."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import span_batch
from live import LiveServer, chromium_page

from goldenloop.config import Settings
from goldenloop.store.duckdb import DuckDBStore
from goldenloop.web.app import create_app

pytestmark = pytest.mark.browser


def test_sessions_page_links_to_session_and_trace_replay(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "ui.duckdb")
    store.migrate()
    store.insert_spans(
        span_batch(
            {
                "trace_id": "a" * 32,
                "span_id": "1" * 16,
                "session_id": "sess-ui",
                "kind": "agent",
                "name": "refund turn",
                "locale": "de-DE",
                "input_text": "Can I return my shoes?",
                "output_text": "Yes, within 14 days.",
            },
            {
                "trace_id": "a" * 32,
                "span_id": "2" * 16,
                "parent_id": "1" * 16,
                "kind": "llm",
                "session_id": "sess-ui",
                "name": "chat gpt-4o-mini",
                "model": "gpt-4o-mini",
                "locale": "de-DE",
                "input_tokens": 800,
                "output_tokens": 120,
                "cost_usd": 0.0002,
                "stop_reason": "max_tokens",
            },
        )  # fmt: skip
    )
    try:
        with LiveServer(create_app(Settings(), store)) as server, chromium_page() as page:
            page.goto(server.url + "/sessions")
            row = page.locator("#sessions tbody tr").first
            assert "sess-ui" in row.inner_text()
            assert "de-DE" in row.inner_text()
            page.click("text=sess-ui")
            page.wait_for_url("**/sessions/sess-ui")
            assert "Yes, within 14 days." in page.content()
            page.click("text=refund turn")
            page.wait_for_url(f"**/traces/{'a' * 32}")
            spans = page.locator("#spans tbody tr")
            assert spans.count() == 2
            assert "max_tokens" in spans.nth(1).inner_text()
            page.click("text=chat gpt-4o-mini")  # expand the span's details
            assert page.locator("#spans details").nth(1).get_attribute("open") is not None
    finally:
        store.close()


def test_bad_filter_shows_a_clear_error_page(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "ui.duckdb")
    store.migrate()
    try:
        with LiveServer(create_app(Settings(), store)) as server, chromium_page() as page:
            response = page.goto(server.url + "/sessions?since=yesterdayish")
            assert response is not None and response.status == 400
            assert "since" in page.locator(".error").inner_text()
    finally:
        store.close()

"""The triage queue page in a real browser: ranked list, trace replay, labelling with one
click and with keystrokes."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from conftest import BASE_TIME
from flags_helpers import add_feedback, llm, load, only, tool, turn
from live import LiveServer, chromium_page

from goldenloop.config import Settings
from goldenloop.flags import refresh_queue, run_incremental
from goldenloop.store.duckdb import DuckDBStore
from goldenloop.web.app import create_app

pytestmark = pytest.mark.browser
LATER = BASE_TIME + timedelta(hours=3)


def _store(tmp_path: Path) -> DuckDBStore:
    store = DuckDBStore(tmp_path / "triage.duckdb")
    store.migrate()
    load(
        store,
        turn("s-streak", 1, tier="enterprise", question="Refund order A-1 please",
             answer="I'm sorry, I can't reach our order system right now.",
             children=[tool("lookup_order", '{"order_id": "A-1"}', ok=False),
                       tool("lookup_order", '{"order_id": "A-1"}', ok=False)]),
        turn("s-down", 1, question="Is the restocking fee legal?", answer="Yes, 15% always applies."),
        turn("s-cut", 1, children=[llm(stop_reason="max_tokens", output_text="The policy is that you can")]),
    )  # fmt: skip
    add_feedback(store, "s-down", category="wrong", comment="That's not the policy.")
    run_incremental(
        store, [*only("tool_error_streak"), *only("thumbs_down"), *only("max_tokens")], now=LATER
    )
    refresh_queue(store, now=LATER)
    return store


def _labels(store: DuckDBStore) -> dict[str, str | None]:
    return {r[0]: r[1] for r in store.fetch("SELECT session_id, label FROM triage_items")}


def test_queue_page_replays_the_trace_and_labels_by_click_and_keystroke(tmp_path: Path) -> None:
    store = _store(tmp_path)
    try:
        with LiveServer(create_app(Settings(), store)) as server, chromium_page() as page:
            page.goto(server.url + "/triage")
            rows = page.locator("#queue tbody tr[data-item]")
            assert rows.count() == 3
            assert "2 consecutive tool errors" in rows.nth(0).inner_text()
            assert "selected" in (rows.nth(0).get_attribute("class") or "")
            replay = page.locator("#replay")
            assert "execute_tool lookup_order" in replay.inner_text()
            assert '{"order_id": "A-1"}' in replay.inner_text()
            assert "OrderServiceTimeout" in replay.inner_text()

            # Click the second item: the detail pane swaps in place (htmx) and the URL follows.
            second = rows.nth(1).get_attribute("data-item")
            rows.nth(1).locator("td.title").click(position={"x": 5, "y": 30})
            page.wait_for_url(f"**/triage/{second}")
            page.wait_for_selector(f'#item[data-item="{second}"]')
            assert "Is the restocking fee legal?" in page.locator("#item").inner_text()
            assert "That's not the policy." in page.locator("#flags").inner_text()

            # One click: label it known-issue with an owner and a failure mode.
            page.fill('input[name="owner"]', "ana")  # typing "a" here must not label
            page.check('input[name="failure_modes"][value="policy"]')
            page.click('#label-form button[value="known-issue"]')
            page.wait_for_selector("#current-label:text('known-issue')")
            assert _labels(store)["s-down"] == "known-issue"
            assert store.fetch(
                "SELECT owner, failure_modes FROM triage_items WHERE session_id = 's-down'"
            ) == [("ana", '["policy"]')]

            # Keystrokes: j moves down, k moves up, a labels add-to-eval.
            page.locator("body").click(position={"x": 1, "y": 1})
            page.keyboard.press("j")
            third = rows.nth(2).get_attribute("data-item")
            page.wait_for_selector(f'#item[data-item="{third}"]')
            page.keyboard.press("k")
            page.wait_for_selector(f'#item[data-item="{second}"]')
            page.keyboard.press("j")
            page.wait_for_selector(f'#item[data-item="{third}"]')
            page.fill('input[name="owner"]', "bo")  # a keystroke label keeps the form's fields
            page.locator("body").click(position={"x": 1, "y": 1})
            page.keyboard.press("a")
            page.wait_for_selector("#current-label:text('add-to-eval')")
            assert _labels(store)["s-cut"] == "add-to-eval"
            assert store.fetch("SELECT owner FROM triage_items WHERE session_id = 's-cut'") == [
                ("bo",)
            ]
            assert "add-to-eval" in page.locator(f"#row-{third}").inner_text()

            # The page and its JSON twin agree.
            api = page.request.get(server.url + "/api/v1/triage?status=all").json()
            assert [i["id"] for i in api["items"]] == [
                r.get_attribute("data-item")
                for r in page.locator("#queue tbody tr[data-item]").all()
            ]
    finally:
        store.close()


def test_queue_page_works_without_javascript_and_reports_bad_input(tmp_path: Path) -> None:
    store = _store(tmp_path)
    try:
        with LiveServer(create_app(Settings(), store)) as server, chromium_page() as page:
            response = page.goto(server.url + "/triage?priority=P7")
            assert response is not None and response.status == 400
            assert "priority" in page.locator(".error").inner_text()
            missing = page.goto(server.url + "/triage/nope")
            assert missing is not None and missing.status == 404
            item = store.fetch("SELECT id FROM triage_items WHERE session_id = 's-cut'")[0][0]
            page.goto(server.url + f"/triage/{item}")
            assert "answer stopped at the token limit" in page.locator("#item h2").inner_text()
            assert "The policy is that you can" in (page.locator("#replay").text_content() or "")
    finally:
        store.close()

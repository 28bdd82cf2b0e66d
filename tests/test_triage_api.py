"""The triage, flags, clusters and weekly-report JSON API through the real app."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import BASE_TIME
from fastapi.testclient import TestClient
from flags_helpers import add_feedback, llm, load, only, tool, turn

from goldenloop.config import Settings
from goldenloop.flags import refresh_queue, run_incremental
from goldenloop.store.base import Store
from goldenloop.store.duckdb import DuckDBStore
from goldenloop.web.app import create_app

LATER = BASE_TIME + timedelta(hours=3)


def _fill(store: Store) -> None:
    load(
        store,
        turn("s-streak", 1, children=[tool("lookup_order", ok=False), tool("lookup_order", ok=False)], tier="enterprise"),
        turn("s-cut", 1, children=[llm(stop_reason="max_tokens")]),
        turn("s-down", 1, question="Is the restocking fee legal?"),
    )  # fmt: skip
    add_feedback(store, "s-down", category="wrong", comment="This is incorrect.")
    rules = [*only("tool_error_streak"), *only("max_tokens"), *only("thumbs_down")]
    run_incremental(store, rules, now=LATER)
    refresh_queue(store, now=LATER)


@pytest.fixture
def client(store: Store) -> Iterator[TestClient]:
    _fill(store)
    yield TestClient(create_app(Settings(), store))  # no lifespan: no writer, no loop


def test_queue_lists_items_by_impact_with_reasons(client: TestClient) -> None:
    body = client.get("/api/v1/triage").json()
    items = body["items"]
    assert [i["primary_rule"] for i in items] == ["tool_error_streak", "thumbs_down", "max_tokens"]
    assert items[0]["impact"] == 30.0 and items[0]["revenue_tier"] == "enterprise"
    assert items[0]["title"] == "2 consecutive tool errors (lookup_order: OrderServiceTimeout)"
    assert body["counts"]["open"] == 3 and body["pending_flags"] == 0
    assert body["labels"] == [
        "add-to-eval",
        "known-issue",
        "expected-behavior",
        "needs-product-decision",
    ]


def test_item_detail_has_flags_sessions_and_a_full_trace_replay(client: TestClient) -> None:
    item_id = client.get("/api/v1/triage").json()["items"][0]["id"]
    detail = client.get(f"/api/v1/triage/{item_id}").json()
    assert detail["sessions"] == ["s-streak"]
    assert detail["flags"][0]["rule"] == "tool_error_streak"
    spans = detail["replay"]["spans"]
    assert [s["kind"] for s in spans] == ["agent", "tool", "tool"]
    assert (
        spans[1]["tool_args"] == '{"order_id": "A-1"}'
        and spans[1]["error_type"] == "OrderServiceTimeout"
    )
    assert detail["replay"]["turns"][0]["input_text"] == "What is the refund policy?"


def test_labelling_over_the_api_records_label_owner_tags_and_criteria(client: TestClient) -> None:
    item_id = client.get("/api/v1/triage").json()["items"][1]["id"]
    response = client.post(
        f"/api/v1/triage/{item_id}/label",
        json={"label": "add-to-eval", "owner": "ana", "notes": "EU only",
              "failure_modes": ["Retrieval miss", "policy"], "criteria": "mentions 14 days"},
    )  # fmt: skip
    assert response.status_code == 200, response.text
    item = response.json()
    assert (item["label"], item["owner"], item["status"]) == ("add-to-eval", "ana", "labelled")
    assert item["failure_modes"] == ["retrieval-miss", "policy"]
    labelled = client.get("/api/v1/triage", params={"status": "labelled"}).json()["items"]
    assert [i["id"] for i in labelled] == [item_id]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"label": "ship-it"}, 400, "label: unknown label 'ship-it'"),
        (
            {"label": "known-issue", "failure_modes": ["gremlins"]},
            400,
            "unknown failure mode 'gremlins'",
        ),
        ({"label": "known-issue", "colour": "red"}, 422, "colour"),
    ],
)
def test_bad_label_requests_are_rejected_with_the_field_named(
    client: TestClient, body: dict[str, object], status: int, message: str
) -> None:
    item_id = client.get("/api/v1/triage").json()["items"][0]["id"]
    response = client.post(f"/api/v1/triage/{item_id}/label", json=body)
    assert response.status_code == status and message in response.text


def test_unknown_item_is_404_and_bad_query_is_400(client: TestClient) -> None:
    assert client.get("/api/v1/triage/nope").status_code == 404
    assert (
        client.post("/api/v1/triage/nope/label", json={"label": "known-issue"}).status_code == 404
    )
    for query, name in (({"limit": "lots"}, "limit"), ({"status": "done"}, "status"),
                        ({"priority": "P9"}, "priority"), ({"colour": "x"}, "colour"),
                        ({"overdue": "maybe"}, "overdue")):  # fmt: skip
        response = client.get("/api/v1/triage", params=query)
        assert response.status_code == 400 and name in response.json()["error"]


def test_flags_endpoint_lists_reasons_totals_and_engine_state(client: TestClient) -> None:
    body = client.get("/api/v1/flags", params={"rule": "max_tokens"}).json()
    assert [f["session_id"] for f in body["flags"]] == ["s-cut"]
    assert body["totals"]["thumbs_down"] == {"queued": 1}
    assert body["engine"]["watermark"] is not None and body["engine"]["recent_runs"]
    assert client.get("/api/v1/flags", params={"limit": "0"}).status_code == 400


def test_flags_run_endpoint_runs_incremental_or_backfill(client: TestClient, store: Store) -> None:
    load(
        store,
        turn(
            "s-new",
            1,
            children=[llm(stop_reason="max_tokens")],
            ingested_at=LATER + timedelta(minutes=3),
        ),
    )
    body = client.post("/api/v1/flags/run", json={"refresh_queue": True}).json()
    assert body["run"]["by_rule"]["max_tokens"]["new"] == 1 and body["queue"]["flags_folded"] >= 1
    backfill = client.post(
        "/api/v1/flags/run", json={"start": "2024-06-01T00:00:00Z", "end": "2024-06-02T00:00:00Z"}
    )
    assert backfill.status_code == 200 and backfill.json()["run"]["mode"] == "backfill"
    half = client.post("/api/v1/flags/run", json={"start": "2024-06-01T00:00:00Z"})
    assert half.status_code == 400 and "start and end go together" in half.json()["error"]
    empty = client.post(
        "/api/v1/flags/run", json={"start": "2024-06-02T00:00:00Z", "end": "2024-06-01T00:00:00Z"}
    )
    assert empty.status_code == 400


def test_refresh_endpoint_runs_the_queue_job(client: TestClient) -> None:
    body = client.post("/api/v1/triage/refresh").json()
    assert body["flags_folded"] == 0 and "items_opened" in body


def test_clusters_and_weekly_report_endpoints(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "w.duckdb")
    store.migrate()
    try:
        _fill(store)
        client = TestClient(create_app(Settings(), store))
        clusters = client.get(
            "/api/v1/clusters", params={"refresh": "true", "end": "2024-06-02T00:00:00Z"}
        ).json()
        assert clusters["sessions"] == 3 and sum(c["size"] for c in clusters["clusters"]) == 3
        again = client.get("/api/v1/clusters").json()
        assert again["id"] == clusters["id"]  # the stored run is served without re-clustering
        assert client.get("/api/v1/clusters", params={"k": "zero"}).status_code == 400
        report = client.get("/api/v1/reports/weekly", params={"end": "2024-06-02T00:00:00Z"}).json()
        assert [i["primary_rule"] for i in report["top_items"]][:1] == ["tool_error_streak"]
        assert report["golden"]["landed_this_week"] == 0 and report["golden"]["target"] == [5, 10]
        assert report["incidents"]["available"] is False
        assert client.get("/api/v1/reports/weekly", params={"end": "soon"}).status_code == 400
    finally:
        store.close()

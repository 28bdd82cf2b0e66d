"""Golden-set and eval pages and their JSON API, in-process and over a real socket."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import span_batch
from fastapi.testclient import TestClient
from live import LiveServer, chromium_page

from goldenloop.cli import main
from goldenloop.config import Settings
from goldenloop.evals.runner import RunOptions, run_eval
from goldenloop.evals.target import load_target
from goldenloop.golden.casefiles import load_case_dir
from goldenloop.golden.index import sync_case_dir
from goldenloop.store.base import Store
from goldenloop.store.duckdb import DuckDBStore
from goldenloop.web.app import create_app

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "golden"
TARGET = "goldenloop.sim.refund_app:target"


@pytest.fixture
def client(store: Store) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(), store)) as test_client:
        yield test_client


def _run(prompt: str) -> Any:
    cases = [c.case for c in load_case_dir(EXAMPLES).cases]
    return run_eval(cases, load_target(TARGET), RunOptions(context={"prompt_version": prompt},
                                                           case_dir="examples/golden"))  # fmt: skip


def test_cases_and_coverage_json(client: TestClient, store: Store) -> None:
    sync_case_dir(store, EXAMPLES)
    body = client.get("/api/v1/golden/cases").json()
    assert len(body["cases"]) == 10 and body["coverage"]["production_sourced"] == 7
    assert client.get("/api/v1/golden/coverage").json()["total"] == 10
    assert client.get("/api/v1/golden/cases?set=nope").json()["cases"] == []
    bad = client.get("/api/v1/golden/cases?removed=maybe")
    assert bad.status_code == 400 and "removed" in bad.json()["error"]
    assert client.get("/golden").status_code == 200


def test_eval_runs_are_posted_listed_and_shown(client: TestClient) -> None:
    run = _run("a9f2")
    posted = client.post("/api/v1/eval-runs", json=run.to_dict())
    assert posted.status_code == 201 and posted.json()["id"] == run.id
    listing = client.get("/api/v1/eval-runs").json()
    assert [r["id"] for r in listing["runs"]] == [run.id]
    assert listing["runs"][0]["gate_passed"] is False
    detail = client.get(f"/api/v1/eval-runs/{run.id}").json()
    assert detail["summary"]["failed"] == 7 and len(detail["results"]) == 10
    assert client.get("/api/v1/eval-runs/latest").json()["id"] == run.id
    assert client.get("/api/v1/eval-runs/nope").status_code == 404
    assert client.get("/evals/nope").status_code == 404
    assert "EU-12" in client.get(f"/evals/{run.id}").text
    invalid = client.post("/api/v1/eval-runs", json={"id": "x", "results": []})
    assert invalid.status_code == 422 and "started_at" in invalid.json()["error"]
    assert client.get("/api/v1/eval-runs?limit=0").status_code == 400
    assert "limit" in client.get("/evals?limit=abc").text


def test_promote_over_http_returns_anonymized_yaml(client: TestClient, store: Store) -> None:
    store.insert_spans(span_batch({"session_id": "web-sess-1", "kind": "agent",
                                   "input_text": "refund? I am ana@example.com"}))  # fmt: skip
    criteria = [{"type": "contains", "value": "14 days"}]
    ok = client.post("/api/v1/golden/promote",
                     json={"session_or_item": "web-sess-1", "case_id": "W-1", "criteria": criteria})  # fmt: skip
    assert ok.status_code == 201, ok.text
    body = ok.json()
    assert "<EMAIL_1>" in body["yaml"] and "ana@example.com" not in body["yaml"]
    assert "web-sess-1" not in body["yaml"] and body["path"] is None
    leaky = client.post(
        "/api/v1/golden/promote",
        json={
            "session_or_item": "web-sess-1",
            "criteria": [{"type": "contains", "value": "ana@example.com"}],
        },
    )
    assert leaky.status_code == 422 and any("EMAIL" in p for p in leaky.json()["problems"])
    missing = client.post(
        "/api/v1/golden/promote", json={"session_or_item": "nope", "criteria": criteria}
    )
    assert missing.status_code == 404
    assert client.post("/api/v1/golden/promote", json={"criteria": criteria}).status_code == 422
    assert client.get("/api/v1/golden/cases").json()["cases"][0]["case_id"] == "W-1"


def test_cli_sends_runs_to_the_server_and_fetches_baselines(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "server.duckdb")
    store.migrate()
    try:
        with LiveServer(create_app(Settings(), store)) as server:
            args = ["eval", "run", str(EXAMPLES), "--target", TARGET, "--server", server.url]
            good = CliRunner().invoke(main, [*args, "--context", "prompt_version=a1c0"])
            assert good.exit_code == 0, good.output
            bad = CliRunner().invoke(main, [*args, "--context", "prompt_version=a9f2",
                                            "--baseline", "latest"])  # fmt: skip
            assert bad.exit_code == 1
            runs = store.fetch("SELECT gate_passed, baseline_id FROM eval_runs ORDER BY started_at")
            assert [r[0] for r in runs] == [True, False] and runs[1][1] is not None
    finally:
        store.close()


@pytest.mark.browser
def test_golden_and_eval_pages_in_a_browser(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "ui.duckdb")
    store.migrate()
    sync_case_dir(store, EXAMPLES)
    from goldenloop.evals.history import save_run

    run = _run("a9f2")
    save_run(store, run)
    try:
        with LiveServer(create_app(Settings(), store)) as server, chromium_page() as page:
            page.goto(server.url + "/")
            page.click("text=Golden set")
            page.wait_for_url("**/golden")
            assert page.locator("#cases tbody tr").count() == 10
            assert "eu" in page.locator("#coverage").inner_text()
            page.click("text=Eval runs")
            page.wait_for_url("**/evals")
            assert "failed" in page.locator("#runs tbody tr").first.inner_text()
            page.click(f"text={run.id[:12]}")
            page.wait_for_url(f"**/evals/{run.id}")
            assert "Gate failed" in page.locator("#gate").inner_text()
            assert "EU-12" in page.locator("#results").inner_text()
    finally:
        store.close()

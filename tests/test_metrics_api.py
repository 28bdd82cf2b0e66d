"""JSON API: /api/v1/metrics, /api/v1/slos, /api/v1/regressions, /api/v1/overview."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from metrics_data import WINDOW, load

from goldenloop.config import Settings
from goldenloop.store.duckdb import DuckDBStore
from goldenloop.web.app import create_app

END = WINDOW.end.isoformat()
END_Q = quote(END)  # "+00:00" must not become a space in a query string


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    store = DuckDBStore(tmp_path / "api.duckdb")
    store.migrate()
    load(store)
    config = tmp_path / "metrics.yaml"
    config.write_text(
        "slos:\n  - name: answers-correct\n    objective: 95%\n    period: 2h\n"
        "    sli: {kind: judge, judge: answer_correctness}\n",
        encoding="utf-8",
    )
    try:
        with TestClient(create_app(Settings(slo_file=str(config)), store)) as test_client:
            yield test_client
    finally:
        store.close()


def test_metrics_grouped_and_filtered(client: TestClient) -> None:
    response = client.get("/api/v1/metrics", params=[
        ("window", "2h"), ("end", END), ("metric", "turns,task_success_rate"), ("by", "locale"),
        ("customer_tier", "free"),
    ])  # fmt: skip
    assert response.status_code == 200
    data = response.json()
    assert data["by"] == ["locale"] and data["where"] == ["customer_tier=free"]
    assert [m["name"] for m in data["metrics"]] == ["turns", "task_success_rate"]
    (row,) = data["rows"]
    assert row["dims"] == {"locale": "de-DE"}
    assert row["values"]["turns"] == {"value": 2.0, "n": 2}
    assert row["values"]["task_success_rate"]["value"] == 0


def test_metrics_series_by_hour(client: TestClient) -> None:
    data = client.get(f"/api/v1/metrics?window=2h&end={END_Q}&metric=turns&bucket=hour").json()
    assert [(r["bucket"][11:16], r["values"]["turns"]["value"]) for r in data["rows"]] == [
        ("12:00", 3.0),
        ("13:00", 1.0),
    ]


@pytest.mark.parametrize(
    ("query", "names"),
    [("window=soon", "window"), ("by=colour", "colour"), ("colour=red", "colour"),
     ("metric=nope", "metric"), ("end=yesterday", "end"), ("bucket=week", "bucket"),
     ("window=30d&bucket=minute", "bucket"), ("where=locale", "DIM=VALUE")],
)  # fmt: skip
def test_bad_parameters_answer_400_naming_them(client: TestClient, query: str, names: str) -> None:
    response = client.get(f"/api/v1/metrics?{query}")
    assert response.status_code == 400
    assert names in response.json()["error"]


def test_slos_from_file_and_api(client: TestClient) -> None:
    created = client.post("/api/v1/slos", json={
        "name": "fast-turns", "objective": "90%", "period": "2h",
        "sli": {"kind": "latency", "threshold_ms": 1500, "filter": {"locale": "en-US"}},
    })  # fmt: skip
    assert created.status_code == 201 and created.json()["origin"] == "api"
    replaced = client.post("/api/v1/slos", json={
        "name": "fast-turns", "objective": 0.9, "period": "2h",
        "sli": {"kind": "latency", "threshold_ms": 1500, "filter": {"locale": "en-US"}},
    })  # fmt: skip
    assert replaced.status_code == 200
    statuses = {s["name"]: s for s in client.get(f"/api/v1/slos?at={END_Q}").json()["slos"]}
    assert (
        statuses["answers-correct"]["sli"] == 0.5
        and statuses["answers-correct"]["origin"] == "file"
    )
    fast = statuses["fast-turns"]
    assert (fast["good_events"], fast["valid_events"]) == (1, 2)  # T3 2000 ms, T4 500 ms
    assert set(fast["burn_rates"]) == {"5m", "30m", "1h", "6h", "3d"}
    assert fast["status"] in ("freeze", "exhausted") and fast["freeze_experiments"] is True
    conflict = client.post("/api/v1/slos", json={"name": "answers-correct", "objective": 0.9,
                                                 "sli": {"kind": "feedback"}})  # fmt: skip
    assert conflict.status_code == 409
    assert client.delete("/api/v1/slos/answers-correct").status_code == 409
    assert client.delete("/api/v1/slos/fast-turns").status_code == 204
    assert client.delete("/api/v1/slos/fast-turns").status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [({"name": "x", "objective": 0.9, "sli": {"kind": "latency"}}, "threshold_ms"),
     ({"name": "x", "objective": 200, "sli": {"kind": "feedback"}}, "objective"),
     ({"name": "x", "objective": 0.9}, "sli")],
)  # fmt: skip
def test_invalid_slo_bodies_answer_400(
    client: TestClient, body: dict[str, object], field: str
) -> None:
    response = client.post("/api/v1/slos", json=body)
    assert response.status_code == 400 and field in response.json()["error"]


def test_regressions_endpoint_and_its_parameters(client: TestClient) -> None:
    data = client.get(f"/api/v1/regressions?window=1h&baseline=1h&end={END_Q}&by=locale").json()
    assert data["window"]["length"] == "1h" and data["dimensions"] == ["locale"]
    assert data["findings"] == []  # four turns are far below the minimum sample
    for query, name in [("alpha=2", "alpha"), ("min_sample=many", "min_sample"),
                        ("baseline=never", "baseline")]:  # fmt: skip
        response = client.get(f"/api/v1/regressions?{query}")
        assert response.status_code == 400 and name in response.json()["error"]


def test_overview_json_twin(client: TestClient) -> None:
    data = client.get(f"/api/v1/overview?window=2h&end={END_Q}&bucket=hour").json()
    assert data["headline"]["turns"]["value"] == 4
    assert data["headline"]["task_success_rate"]["value"] == pytest.approx(2 / 3)
    assert [c["id"] for c in data["charts"]] == ["success", "latency", "cost", "errors", "volume"]
    assert len(data["series"]) == 2
    titles = [t["title"] for t in data["tables"]]
    assert titles == ["Latency by span kind × model", "Cost by customer tier", "By locale"]
    tiers = {r["dims"]["customer_tier"]: r["values"] for r in data["tables"][1]["rows"]}
    assert tiers["free"]["cost_usd"]["value"] == pytest.approx(0.036)
    assert data["slos"][0]["name"] == "answers-correct"
    assert client.get("/api/v1/overview?window=soon").status_code == 400


def test_a_broken_config_file_is_a_clear_503(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "x.duckdb")
    store.migrate()
    bad = tmp_path / "bad.yaml"
    bad.write_text("slos: nope\n", encoding="utf-8")
    try:
        with TestClient(create_app(Settings(slo_file=str(bad)), store)) as client:
            response = client.get("/api/v1/slos")
            assert response.status_code == 503 and "bad.yaml" in response.json()["error"]
    finally:
        store.close()

"""The alerts JSON API: rules through the API (validated, conflicts with the file),
silences, the saved configuration, history, backtests, on-demand checks, and the
scheduler started by the server's lifespan."""

from __future__ import annotations

from datetime import datetime, timedelta

from alerts_helpers import Receiver, incident_config, load_sim
from fastapi.testclient import TestClient

from goldenloop.alerts import save_config
from goldenloop.alerts.scheduler import AlertEngine
from goldenloop.config import Settings
from goldenloop.store.base import Store
from goldenloop.web.app import create_app

TURNS_OK = {"name": "turns-ok", "objective": "99%", "sli": {"kind": "turn", "checks": ["no_error"]}}
FILE_CONFIG = """
rules:
  - {name: from-file, type: p0_overdue}
"""


def _client(store: Store) -> TestClient:
    return TestClient(create_app(Settings(public_url="http://gl.test"), store))


def test_rules_are_created_validated_and_deleted_through_the_api(store: Store) -> None:
    save_config(store, FILE_CONFIG, source="alerts.yaml")
    client = _client(store)
    created = client.post(
        "/api/v1/alerts/rules", json={"name": "spend", "type": "spend_velocity", "usd_per_hour": 5}
    )
    assert created.status_code == 201
    assert created.json()["origin"] == "api"
    assert client.post("/api/v1/alerts/rules", json={"name": "spend", "type": "spend_velocity",
                                                     "usd_per_hour": 9}).status_code == 200  # fmt: skip
    bad = client.post(
        "/api/v1/alerts/rules",
        json={"name": "spend", "type": "spend_velocity", "usd_per_hour": "x"},
    )
    assert bad.status_code == 400
    assert bad.json()["error"] == "rule 'spend': usd_per_hour: expected a number, got 'x'"
    conflict = client.post("/api/v1/alerts/rules", json={"name": "from-file", "type": "p0_overdue"})
    assert conflict.status_code == 409 and "alerts.yaml" in conflict.json()["error"]
    rules = client.get("/api/v1/alerts/rules").json()["rules"]
    assert [(r["name"], r["origin"], r["definition"].get("usd_per_hour")) for r in rules] == [
        ("from-file", "file", None), ("spend", "api", 9)]  # fmt: skip
    assert client.delete("/api/v1/alerts/rules/from-file").status_code == 409
    assert client.delete("/api/v1/alerts/rules/spend").status_code == 204
    assert client.delete("/api/v1/alerts/rules/spend").status_code == 404


def test_config_is_validated_before_it_is_saved(store: Store) -> None:
    client = _client(store)
    bad = client.put("/api/v1/alerts/config", content=b"rules:\n  - {name: x, type: slo_burn}\n")
    assert bad.status_code == 400 and "rule 'x': slo: required" in bad.json()["error"]
    good = client.put("/api/v1/alerts/config?source=ops/alerts.yaml",
                      content=b"notifiers:\n  - {name: hook, type: webhook, url: 'https://hooks.example.com/secret/path'}\n")  # fmt: skip
    assert good.status_code == 200
    shown = client.get("/api/v1/alerts/config").json()
    assert shown["source"] == "saved (ops/alerts.yaml)"
    assert shown["notifiers"][0]["options"] == {
        "url": "https://hooks.example.com/…"
    }  # the secret path is masked


def test_silences_through_the_api(store: Store) -> None:
    client = _client(store)
    created = client.post("/api/v1/alerts/silences", json={
        "matchers": ["alertname=spend", "locale=~de-.*"], "duration": "2h", "comment": "deploy", "created_by": "ana"})  # fmt: skip
    assert created.status_code == 201
    silence = created.json()
    assert (
        silence["matchers"] == ['alertname="spend"', 'locale=~"de-.*"']
        and silence["state"] == "active"
    )
    assert (
        client.post("/api/v1/alerts/silences", json={"matchers": [], "duration": "1h"}).status_code
        == 400
    )
    bad = client.post("/api/v1/alerts/silences", json={"matchers": ["a=b"], "duration": "forever"})
    assert bad.status_code == 400 and "duration" in bad.json()["error"]
    assert [s["id"] for s in client.get("/api/v1/alerts/silences").json()["silences"]] == [
        silence["id"]
    ]
    assert client.delete(f"/api/v1/alerts/silences/{silence['id']}").status_code == 204
    assert client.get("/api/v1/alerts/silences").json()["silences"] == []
    expired = client.get("/api/v1/alerts/silences?expired=true").json()["silences"]
    assert [s["state"] for s in expired] == ["expired"]


def test_bad_query_parameters_answer_400(store: Store) -> None:
    client = _client(store)
    assert client.get("/api/v1/alerts?state=burning").json()["error"].startswith("state:")
    assert client.get("/api/v1/alerts/history?limit=0").status_code == 400
    assert client.get("/api/v1/alerts/backtest").json()["error"].startswith("rule:")
    assert client.get("/api/v1/alerts/backtest?rule=nope").status_code == 404
    assert client.get("/api/v1/alerts/rules/nope").status_code == 404


def test_check_backtest_and_the_json_twin_over_simulated_traffic(store: Store) -> None:
    manifest = load_sim(store, incident_config())
    outage_start = datetime.fromisoformat(manifest.scenarios["provider-outage"].start)
    with Receiver() as rx:
        save_config(store, f"""
route: {{group_wait: 0s}}
rules:
  - {{name: answers-burn, type: slo_burn, slo: {{name: turns-ok, objective: 99%, sli: {{kind: turn, checks: [no_error]}}}}, min_events: 20}}
notifiers:
  - {{name: hook, type: webhook, url: '{rx.url}/hook'}}
""", source="test")  # fmt: skip
        client = _client(store)
        since = (outage_start - timedelta(hours=1)).isoformat()
        until = (outage_start + timedelta(hours=2)).isoformat()
        backtest = client.get(
            "/api/v1/alerts/backtest",
            params={"rule": "answers-burn", "since": since, "until": until},
        )
        assert backtest.status_code == 200
        fired = [
            e for e in backtest.json()["episodes"] if e["severity"] == "page" and e["fired_at"]
        ]
        assert fired
        # Put the live store into the outage by evaluating at the first page's time.
        at = datetime.fromisoformat(fired[0]["fired_at"].replace("Z", "+00:00"))
        engine = AlertEngine(store, base_url="http://gl.test", source="test")
        engine.tick(at)
        assert engine.deliveries.wait(10)
        engine.deliveries.close()
        engine.release()
        data = client.get("/api/v1/alerts").json()
        (page,) = [a for a in data["alerts"]["firing"] if a["severity"] == "page"]
        assert page["exemplar"]["session_id"] in manifest.scenarios["provider-outage"].sessions
        assert (
            page["exemplar"]["trace_url"] == f"http://gl.test/traces/{page['exemplar']['trace_id']}"
        )
        assert page["numbers_at_fire"]["burn_rate_1h"] >= 14.4
        (body,) = rx.bodies("/hook")
        assert body["alerts"][0]["goldenloop"]["session_id"] == page["exemplar"]["session_id"]
        assert data["notifications"][0]["ok"] is True
        history = client.get("/api/v1/alerts/history?rule=answers-burn").json()["history"]
        assert {h["to"] for h in history} >= {"pending", "firing"}
        rule = client.get("/api/v1/alerts/rules/answers-burn").json()
        assert rule["rule"]["name"] == "answers-burn" and rule["alerts"]


def test_on_demand_check_without_a_scheduler(store: Store) -> None:
    client = _client(store)
    report = client.post("/api/v1/alerts/check").json()
    assert report["skipped"] == "no rules or notifiers configured"


def test_the_server_lifespan_runs_the_scheduler(store: Store) -> None:
    app = create_app(Settings(), store)
    with TestClient(app) as client:
        scheduler = app.state.goldenloop_alerts
        assert scheduler is not None and scheduler.running
        status = client.get("/api/v1/alerts").json()["scheduler"]
        assert status["running"] is True and status["interval_seconds"] == 60.0
        assert (
            client.post("/api/v1/alerts/check").json()["skipped"]
            == "no rules or notifiers configured"
        )
    assert not scheduler.running
    assert store.fetch("SELECT count(*) FROM alert_states")[0][0] == 0

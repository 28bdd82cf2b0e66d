"""`goldenloop alerts …` end to end: the commands run, then the store is read back."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from alerts_helpers import Receiver, incident_config, load_sim
from click.testing import CliRunner
from live import LiveServer

from goldenloop.alerts.config import saved_config
from goldenloop.alerts.silences import list_silences
from goldenloop.alerts.states import load_alerts
from goldenloop.cli import main
from goldenloop.config import Settings
from goldenloop.sim import SimManifest
from goldenloop.store.duckdb import DuckDBStore
from goldenloop.web.app import create_app

RULES = """
route: {group_wait: 0s}
rules:
  - name: answers-burn
    type: slo_burn
    slo: {name: turns-ok, objective: 99%, sli: {kind: turn, checks: [no_error]}}
    min_events: 20
"""


@pytest.fixture
def sim_db(tmp_path: Path) -> tuple[str, SimManifest]:
    path = tmp_path / "alerts.duckdb"
    store = DuckDBStore(path)
    store.migrate()
    manifest = load_sim(store, incident_config())
    store.close()
    return str(path), manifest


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_validate_names_the_bad_rule_and_key(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(RULES)
    bad.write_text("rules:\n  - {name: spend, type: spend_velocity, usd_per_hour: -3}\n")
    assert _run("alerts", "validate", str(good)) == (0, f"{good}: 1 rule(s), 0 notifier(s) — OK\n")
    code, output = _run("alerts", "validate", str(bad))
    assert code == 1
    assert "rule 'spend': usd_per_hour: must be greater than 0" in output


def test_apply_check_list_and_backtest(sim_db: tuple[str, SimManifest], tmp_path: Path) -> None:
    db, manifest = sim_db
    outage = manifest.scenarios["provider-outage"]
    config = tmp_path / "alerts.yaml"
    with Receiver() as rx:
        config.write_text(
            RULES + f"notifiers:\n  - {{name: hook, type: webhook, url: '{rx.url}/hook'}}\n"
        )
        assert _run("alerts", "apply", str(config), "--db", db)[0] == 0
        start = datetime.fromisoformat(outage.start)
        code, output = _run("alerts", "backtest", "answers-burn", "--db", db, "--json",
                            "--since", start.isoformat(), "--until", (start + timedelta(hours=2)).isoformat())  # fmt: skip
        assert code == 0
        episodes = json.loads(output)["episodes"]
        fired_at = next(
            e["fired_at"] for e in episodes if e["severity"] == "page" and e["fired_at"]
        )
        code, output = _run("alerts", "check", "--db", db, "--at", fired_at, "--json")
        assert code == 0, output
        report = json.loads(output)
        assert report["evaluation"]["firing"] >= 1 and report["deliveries_finished"] is True
        assert rx.bodies("/hook")[0]["status"] == "firing"
    code, output = _run("alerts", "list", "--db", db, "--json", "--state", "firing")
    listed = json.loads(output)
    assert [r["name"] for r in listed["rules"]] == ["answers-burn"]
    assert any(a["severity"] == "page" for a in listed["alerts"])
    store = DuckDBStore(db)
    try:
        assert saved_config(store).source == f"saved ({config})"
        assert {a.rule for a in load_alerts(store)} == {"answers-burn"}
    finally:
        store.close()


def test_check_exits_1_when_a_rule_cannot_be_evaluated(tmp_path: Path) -> None:
    db = str(tmp_path / "empty.duckdb")
    config = tmp_path / "alerts.yaml"
    config.write_text("rules:\n  - {name: burn, type: slo_burn, slo: no-such-slo}\n")
    code, output = _run("alerts", "check", "--db", db, "--alerts-file", str(config), "--json")
    assert code == 1
    assert json.loads(output)["errors"] == {
        "rule burn": "RuleEvaluationError: unknown SLO 'no-such-slo': define it in the metrics "
        "config (slos:) or with POST /api/v1/slos"
    }


def test_silence_add_list_expire(tmp_path: Path) -> None:
    db = str(tmp_path / "s.duckdb")
    code, output = _run("alerts", "silence", "add", "alertname=answers-burn", "locale=~de-.*", "--db", db,
                        "--for", "3h", "--comment", "rollback running", "--author", "ana", "--json")  # fmt: skip
    assert code == 0
    silence = json.loads(output)
    code, output = _run("alerts", "silence", "list", "--db", db, "--json")
    assert [s["id"] for s in json.loads(output)["silences"]] == [silence["id"]]
    assert _run("alerts", "silence", "expire", silence["id"], "--db", db)[0] == 0
    store = DuckDBStore(db)
    try:
        assert list_silences(store, now=datetime.fromisoformat(silence["created_at"].replace("Z", "+00:00"))
                             + timedelta(minutes=1)) == []  # fmt: skip
    finally:
        store.close()
    code, output = _run("alerts", "silence", "add", "nonsense", "--db", db)
    assert code == 1 and "must look like name=value" in output


def test_commands_talk_to_a_running_server(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "served.duckdb")
    store.migrate()
    config = tmp_path / "alerts.yaml"
    config.write_text(RULES)
    try:
        with LiveServer(create_app(Settings(), store)) as server:
            assert _run("alerts", "apply", str(config), "--server", server.url)[0] == 0
            code, output = _run(
                "alerts", "silence", "add", "severity=page", "--server", server.url, "--json"
            )
            assert code == 0
            silence_id = json.loads(output)["id"]
            code, output = _run("alerts", "list", "--server", server.url, "--json")
            assert [r["name"] for r in json.loads(output)["rules"]] == ["answers-burn"]
            assert _run("alerts", "silence", "expire", silence_id, "--server", server.url)[0] == 0
            code, output = _run("alerts", "silence", "expire", silence_id, "--server", server.url)
            assert code == 1 and "404" in output
    finally:
        store.close()

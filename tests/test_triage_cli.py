"""`goldenloop flag`, `goldenloop triage …` and `goldenloop report weekly` through click,
reading results back from the store."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from flags_helpers import add_feedback, llm, load, tool, turn

from goldenloop.cli import main
from goldenloop.store.duckdb import DuckDBStore


def _db(tmp_path: Path) -> str:
    path = tmp_path / "cli.duckdb"
    store = DuckDBStore(path)
    try:
        store.migrate()
        load(
            store,
            turn("s-streak", 1, children=[tool("lookup_order", ok=False), tool("lookup_order", ok=False)]),
            turn("s-cut", 1, children=[llm(stop_reason="max_tokens")]),
            turn("s-down", 1),
        )  # fmt: skip
        add_feedback(store, "s-down", category="unsafe")
    finally:
        store.close()
    return str(path)


def _run(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_flag_then_triage_list_show_label_round_trip(tmp_path: Path) -> None:
    db = _db(tmp_path)
    run = json.loads(_run("flag", "--db", db, "--json"))
    new = {rule: o["new"] for rule, o in run["by_rule"].items() if o["new"]}
    # Both failing sessions also went quiet right after the failure: abandon.
    assert run["mode"] == "full"
    assert new == {"tool_error_streak": 1, "max_tokens": 1, "thumbs_down": 1, "abandon": 2}
    assert (
        json.loads(_run("flag", "--db", db, "--json"))["flags_new"] == 0
    )  # incremental: nothing new
    refresh = json.loads(_run("triage", "refresh", "--db", db, "--json"))
    assert refresh["items_created"] == 3  # one per session, whatever flagged it
    items = json.loads(_run("triage", "list", "--db", db, "--json"))["items"]
    assert items[0]["priority"] == "P0" and items[0]["primary_rule"] == "thumbs_down"
    shown = _run("triage", "show", items[1]["id"], "--db", db)
    assert "trace replay" in shown and "lookup_order" in shown
    labelled = json.loads(_run("triage", "label", items[1]["id"], "add-to-eval", "--owner", "ana",
                               "--tag", "tool error", "--criteria", "retries once", "--db", db, "--json"))  # fmt: skip
    assert labelled["label"] == "add-to-eval" and labelled["failure_modes"] == ["tool-error"]
    store = DuckDBStore(db)
    try:
        assert store.fetch("SELECT label, owner FROM triage_labels") == [("add-to-eval", "ana")]
    finally:
        store.close()
    table = _run("triage", "list", "--all", "--db", db)
    assert all(item["id"] in table for item in items) and "P0" in table


def test_backfill_and_since_run_over_a_range(tmp_path: Path) -> None:
    db = _db(tmp_path)
    run = json.loads(
        _run("flag", "--db", db, "--backfill", "2024-06-01T00:00:00Z", "2024-06-02", "--json")
    )
    assert run["mode"] == "backfill" and run["flags_new"] == 5
    assert json.loads(_run("flag", "--db", db, "--since", "1h", "--json"))["flags_new"] == 0


def test_rules_file_is_validated_saved_and_used(tmp_path: Path) -> None:
    db = _db(tmp_path)
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  max_tokens: {enabled: false}\n", encoding="utf-8")
    run = json.loads(_run("flag", "--db", db, "--rules", str(rules), "--save-rules", "--json"))
    assert "max_tokens" not in run["by_rule"] and run["flags_new"] == 4
    checked = json.loads(_run("flag", "--db", db, "--check", "--json"))
    assert "saved config" in checked["source"]


def test_bad_rules_file_is_a_clear_cli_error(tmp_path: Path) -> None:
    db = _db(tmp_path)
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  rephrase:\n    threshold: high\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["flag", "--db", db, "--rules", str(rules)])
    assert result.exit_code == 1
    assert (
        f"{rules} line 3: rules.rephrase.threshold: must be a number, got 'high'" in result.output
    )
    bad_time = CliRunner().invoke(main, ["flag", "--db", db, "--since", "yesterdayish"])
    assert bad_time.exit_code == 2 and "--since" in bad_time.output


def test_unknown_item_and_label_are_cli_errors(tmp_path: Path) -> None:
    db = _db(tmp_path)
    missing = CliRunner().invoke(main, ["triage", "show", "nope", "--db", db])
    assert missing.exit_code == 1 and "no triage item 'nope'" in missing.output
    bad = CliRunner().invoke(main, ["triage", "label", "nope", "ship-it", "--db", db])
    assert bad.exit_code == 2 and "ship-it" in bad.output


def test_report_weekly_and_clusters(tmp_path: Path) -> None:
    db = _db(tmp_path)
    _run("flag", "--db", db)
    _run("triage", "refresh", "--db", db)
    report = json.loads(
        _run("report", "weekly", "--db", db, "--end", "2024-06-02T00:00:00Z", "--json")
    )
    assert len(report["top_items"]) == 3 and report["golden"]["landed_this_week"] == 0
    assert report["flags_this_week"] == {
        "abandon": 2,
        "max_tokens": 1,
        "thumbs_down": 1,
        "tool_error_streak": 1,
    }
    text = _run("report", "weekly", "--db", db, "--end", "2024-06-02T00:00:00Z")
    assert "Golden cases landed this week:" in text and "incident tracking not configured" in text
    resolved = json.loads(
        _run(
            "triage",
            "resolve",
            json.loads(_run("triage", "list", "--db", db, "--json"))["items"][0]["id"],
            "--db",
            db,
            "--json",
        )
    )
    assert resolved["status"] == "resolved"

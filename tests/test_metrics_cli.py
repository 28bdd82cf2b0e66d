"""`goldenloop metrics`, `slo status`, `slo validate` and `regressions` read the store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from metrics_data import WINDOW, load

from goldenloop.cli import main
from goldenloop.store.duckdb import DuckDBStore

END = WINDOW.end.isoformat()


@pytest.fixture
def db(tmp_path: Path) -> str:
    path = tmp_path / "cli.duckdb"
    store = DuckDBStore(path)
    store.migrate()
    load(store)
    store.close()
    return str(path)


def _run(*args: str) -> str:
    result = CliRunner(env={"COLUMNS": "200"}).invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_metrics_json_grouped_and_filtered(db: str) -> None:
    out = _run("metrics", "--db", db, "--window", "2h", "--end", END, "--by", "locale",
               "--where", "tier=free", "--metric", "turns,turn_error_rate", "--json")  # fmt: skip
    data = json.loads(out)
    (row,) = data["rows"]
    assert row["dims"] == {"locale": "de-DE"}
    assert row["values"]["turns"]["value"] == 2 and row["values"]["turn_error_rate"]["value"] == 0.5


def test_metrics_table_shows_every_default_metric(db: str) -> None:
    out = _run("metrics", "--db", db, "--window", "2h", "--end", END)
    assert "Task success" in out and "66.7%" in out
    assert "Turn latency P95" in out and "2,850 ms" in out


def test_metrics_series_table(db: str) -> None:
    out = _run("metrics", "--db", db, "--window", "2h", "--end", END, "--metric", "turns",
               "--bucket", "hour")  # fmt: skip
    assert "2024-06-01 12:00" in out and "2024-06-01 13:00" in out


def test_metrics_catalog_listing() -> None:
    data = json.loads(_run("metrics", "--list", "--json"))
    assert {"task_success_rate", "redundant_call_rate"} <= {m["name"] for m in data}


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--by", "colour"], "colour"), (["--where", "locale"], "DIM=VALUE"),
     (["--metric", "nope"], "unknown metric"), (["--window", "soon"], "window"),
     (["--end", "yesterday"], "--end")],
)  # fmt: skip
def test_bad_options_are_clear_errors(db: str, args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["metrics", "--db", db, *args])
    assert result.exit_code == 2 and message in result.output


def test_slo_status_and_validate(db: str, tmp_path: Path) -> None:
    config = tmp_path / "slos.yaml"
    config.write_text(
        "slos:\n  - {name: judged-correct, objective: 95%, period: 2h, sli: {kind: judge}}\n"
        "  - {name: fast, objective: 50%, period: 2h, sli: {kind: latency, threshold_ms: 1500}}\n",
        encoding="utf-8",
    )
    assert "2 SLOs" in _run("slo", "validate", str(config))
    data = json.loads(
        _run("slo", "status", "--db", db, "--slo-file", str(config), "--at", END, "--json")
    )
    statuses = {s["name"]: s for s in data["slos"]}
    assert (
        statuses["judged-correct"]["sli"] == 0.5
        and statuses["judged-correct"]["freeze_experiments"]
    )
    assert statuses["fast"]["sli"] == 0.5 and statuses["fast"]["budget_remaining"] == 0
    table = _run("slo", "status", "--db", db, "--slo-file", str(config), "--at", END)
    assert "judged-correct" in table and "freeze" in table


def test_slo_validate_names_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("slos:\n  - {name: x, objective: 0.9, sli: {kind: latency}}\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["slo", "validate", str(bad)])
    assert result.exit_code == 1 and "threshold_ms" in result.output


def test_regressions_command(db: str) -> None:
    data = json.loads(_run("regressions", "--db", db, "--window", "1h", "--baseline", "1h",
                           "--end", END, "--by", "locale", "--json"))  # fmt: skip
    assert data["dimensions"] == ["locale"] and data["findings"] == []
    assert "No significant regressions" in _run("regressions", "--db", db, "--end", END)
    result = CliRunner().invoke(main, ["regressions", "--db", db, "--alpha", "3"])
    assert result.exit_code == 2 and "alpha" in result.output

"""The eval runner against the simulator's refund assistant: gate, baseline, flaky
cases, quarantine, reports, the CLI's exit codes and result storage (both stores)."""

from __future__ import annotations

import itertools
import json
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from goldenloop.cli import main
from goldenloop.evals.flaky import Quarantine, QuarantineEntry, add_to_quarantine, load_quarantine
from goldenloop.evals.history import list_runs, load_baseline, load_run, save_run
from goldenloop.evals.reports import junit_xml
from goldenloop.evals.runner import RunOptions, run_eval
from goldenloop.evals.target import HttpTarget, load_target
from goldenloop.golden.casefiles import load_case_dir
from goldenloop.golden.index import list_indexed_cases, sync_case_dir
from goldenloop.golden.schema import Case
from goldenloop.store.base import Store

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "golden"
TARGET = "goldenloop.sim.refund_app:target"
EU_CASES = ["EU-12", "EU-13", "EU-14", "EU-15", "EU-16", "EU-17", "EU-18"]


@pytest.fixture(scope="module")
def cases() -> list[Case]:
    return [c.case for c in load_case_dir(EXAMPLES).cases]


def _run(cases: list[Case], prompt: str, **options: Any) -> Any:
    return run_eval(
        cases, load_target(TARGET), RunOptions(context={"prompt_version": prompt}, **options)
    )


def test_good_prompt_passes_every_example_case(cases: list[Case]) -> None:
    run = _run(cases, "a1c0", concurrency=3)
    assert run.total == len(cases) >= 10
    assert run.failing == [] and run.gate.passed and run.pass_rate == 1.0
    result = next(r for r in run.results if r.case_id == "EU-15")
    assert result.input_tokens > 0 and result.cost_usd > 0 and result.latency_ms is not None
    assert {g.grader for g in result.graders} == {"refund-issued-in-full", "amount-in-answer"}


def test_bad_prompt_fails_exactly_the_eu_policy_cases(cases: list[Case]) -> None:
    run = _run(cases, "a9f2")
    assert sorted(run.failing) == EU_CASES
    assert not run.gate.passed and "7 case(s) failed" in run.gate.reasons[0]
    by_tag = run.by_tag()
    assert by_tag["eu"].pass_rate == 0.0 and by_tag["safety"].pass_rate == 1.0
    assert any(d["kind"] == "holdout-failing" and d["case_id"] == "EU-18" for d in run.debt)


def test_split_selects_cases(cases: list[Case]) -> None:
    assert [r.case_id for r in _run(cases, "a9f2", split="holdout").results] == ["EU-18"]


def test_baseline_comparison_names_regressions(cases: list[Case]) -> None:
    good = _run(cases, "a1c0")
    bad = _run(cases, "a9f2", baseline=good)
    assert bad.comparison is not None
    assert sorted(bad.comparison.regressions) == EU_CASES
    assert bad.comparison.baseline_pass_rate == 1.0 and bad.comparison.pass_rate_regressed
    assert any("regression" in r for r in bad.gate.reasons)
    again = _run(cases, "a1c0", baseline=bad)
    assert again.gate.passed and sorted(again.comparison.fixed) == EU_CASES  # type: ignore[union-attr]


def test_pass_rate_regression_alone_fails_the_gate(cases: list[Case]) -> None:
    eu12 = [c for c in cases if c.id == "EU-12"]
    quarantine = Quarantine({"EU-12": QuarantineEntry("EU-12", "known bad", date(2026, 7, 1))})
    good = _run(eu12 + [c for c in cases if c.id == "US-01"], "a1c0")
    # EU-12 fails but is quarantined: no failing case, yet the US/EU pass rate on common
    # gated cases is unchanged, so only a real drop would fail: check both sides.
    bad = _run(eu12, "a9f2", quarantine=quarantine, baseline=good)
    assert bad.failing == [] and bad.gate.passed
    unquarantined = _run(eu12, "a9f2", baseline=good, max_drop=0.5)
    assert not unquarantined.gate.passed


_calls = itertools.count()
_lock = threading.Lock()


def flaky_target(case_input: dict[str, Any]) -> dict[str, Any]:
    """Passes every other call: the textbook flaky case."""
    with _lock:
        n = next(_calls)
    return {"output": "14 days" if n % 2 == 0 else "7 days", "usage": {"input_tokens": 10, "output_tokens": 2},
            "model": "gpt-4o-mini"}  # fmt: skip


def _case(case_id: str) -> Case:
    return Case.model_validate({
        "id": case_id, "input": {"messages": [{"role": "user", "content": "refund?"}]},
        "criteria": [{"type": "contains", "value": "14 days"}], "source": "synthetic",
        "created": "2026-07-01",
    })  # fmt: skip


def test_repeat_marks_flaky_cases_and_quarantine_keeps_them_visible(tmp_path: Path) -> None:
    target = load_target(f"{__name__}:flaky_target")
    run = run_eval([_case("F-1")], target, RunOptions(repeat=4, concurrency=1))
    [result] = run.results
    assert result.flaky and result.outcomes.count(True) == 2 and result.status == "fail"
    assert not run.gate.passed
    assert result.cost_usd == pytest.approx(4 * (10 * 0.15 + 2 * 0.60) / 1e6)
    assert any(d["kind"] == "flaky" for d in run.debt)

    path = tmp_path / "_quarantine.yaml"
    assert add_to_quarantine(path, ["F-1"], "flaky", today=date(2026, 7, 1)) == ["F-1"]
    assert add_to_quarantine(path, ["F-1"], "flaky") == []
    quarantine = load_quarantine(path)
    run = run_eval([_case("F-1"), _case("F-2")], target,
                   RunOptions(repeat=4, concurrency=1, quarantine=quarantine))  # fmt: skip
    f1 = next(r for r in run.results if r.case_id == "F-1")
    assert f1.quarantined and f1.quarantine_reason == "flaky"
    debt = {(d["case_id"], d["kind"]) for d in run.debt}
    assert ("F-1", "quarantined") in debt and ("F-2", "flaky") in debt
    assert run.failing == ["F-2"]
    testcases = {t.get("name"): t for t in ET.fromstring(junit_xml(run)).iter("testcase")}
    assert testcases["F-1"].find("skipped") is not None
    assert testcases["F-2"].find("failure") is not None


def broken_target(case_input: dict[str, Any]) -> str:
    raise TimeoutError("upstream timed out")


def test_target_errors_are_case_errors_not_crashes() -> None:
    run = run_eval([_case("E-1")], load_target(f"{__name__}:broken_target"))
    [result] = run.results
    assert result.status == "error" and "TimeoutError: upstream timed out" in (result.error or "")
    assert not run.gate.passed


class _AppHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        from goldenloop.sim.refund_app import target

        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        payload = json.dumps(target(body["input"])).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def app_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _AppHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/answer"
    finally:
        server.shutdown()
        server.server_close()


def test_http_target(cases: list[Case], app_url: str) -> None:
    target = load_target(url=app_url)
    assert isinstance(target, HttpTarget)
    try:
        run = run_eval(cases, target, RunOptions(context={"prompt_version": "a9f2"}))
    finally:
        target.close()
    assert sorted(run.failing) == EU_CASES


def test_runs_are_stored_and_read_back(store: Store, cases: list[Case]) -> None:
    sync_case_dir(store, EXAMPLES)
    bad = _run(cases, "a9f2", label="a9f2")
    save_run(store, bad)
    good = _run(cases, "a1c0", baseline=bad, label="a1c0")
    save_run(store, good)
    loaded = load_run(store, good.id)
    assert loaded.model_dump() == good.model_dump()
    assert load_run(store, "latest").id in (good.id, bad.id)
    rows = list_runs(store)
    assert {r.label for r in rows} == {"a1c0", "a9f2"}
    assert next(r for r in rows if r.id == bad.id).gate_passed is False
    index = {c.case_id: c for c in list_indexed_cases(store)}
    assert index["EU-12"].last_run_id == good.id and index["EU-12"].last_passed is True
    assert index["EU-12"].first_pass_run == good.id and index["US-01"].first_pass_run == bad.id
    assert load_baseline(bad.id, store).id == bad.id


def _cli(args: list[str], tmp_path: Path) -> Any:
    return CliRunner().invoke(main, [*args, "--db", str(tmp_path / "gl.duckdb")],
                              catch_exceptions=False)  # fmt: skip


def test_cli_exit_codes_reports_and_regression(tmp_path: Path) -> None:
    good = _cli(["eval", "run", str(EXAMPLES), "--target", TARGET, "--context", "prompt_version=a1c0",
                 "--json", str(tmp_path / "good.json"), "--junit", str(tmp_path / "good.xml")], tmp_path)  # fmt: skip
    assert good.exit_code == 0, good.output
    suite = ET.parse(tmp_path / "good.xml").getroot()
    assert suite.get("tests") == "10" and suite.get("failures") == "0"
    bad = _cli(["eval", "run", str(EXAMPLES), "--target", TARGET, "--context", "prompt_version=a9f2",
                "--baseline", str(tmp_path / "good.json"), "--json", str(tmp_path / "bad.json"),
                "--junit", str(tmp_path / "bad.xml")], tmp_path)  # fmt: skip
    assert bad.exit_code == 1
    report = json.loads((tmp_path / "bad.json").read_text())
    assert sorted(report["comparison"]["regressions"]) == EU_CASES
    assert report["summary"]["pass_rate"] == 0.3
    assert ET.parse(tmp_path / "bad.xml").getroot().get("failures") == "7"
    latest = _cli(["eval", "run", str(EXAMPLES), "--target", TARGET, "--split", "golden",
                   "--baseline", "latest", "--no-save"], tmp_path)  # fmt: skip
    assert latest.exit_code == 0, latest.output


def test_cli_usage_errors_are_clear(tmp_path: Path) -> None:
    both = _cli(["eval", "run", str(EXAMPLES)], tmp_path)
    assert both.exit_code == 1 and "exactly one of" in both.output
    bad_target = _cli(["eval", "run", str(EXAMPLES), "--target", "nope_mod:fn"], tmp_path)
    assert "cannot import 'nope_mod'" in bad_target.output
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.yaml").write_text("id: X\n")
    invalid = _cli(["eval", "run", str(tmp_path / "bad"), "--target", TARGET], tmp_path)
    assert invalid.exit_code == 1 and "x.yaml: input: Field required" in invalid.output
    missing = _cli(
        ["eval", "run", str(EXAMPLES), "--target", TARGET, "--baseline", "nope"], tmp_path
    )
    assert missing.exit_code == 1 and "no eval run 'nope'" in missing.output

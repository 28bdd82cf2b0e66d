"""Shadow runs on stored production sessions (both stores) and the live shadow helper."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import BASE_TIME, span_batch

from goldenloop.evals.live_shadow import LiveShadow, ShadowOutcome
from goldenloop.evals.shadow import (
    ShadowOptions,
    list_shadow_runs,
    parse_fraction,
    parse_since,
    run_shadow,
    sample_sessions,
)
from goldenloop.evals.target import load_target
from goldenloop.store.base import Store

QUESTIONS = [
    ("de-DE", "What is your refund policy? Mail me at kai{n}@example.de"),
    ("fr-FR", "Can I return my jacket and get my money back?"),
    ("en-US", "What is your refund policy?"),
]


def _store_sessions(store: Store, count: int = 30) -> None:
    rows = []
    for n in range(count):
        locale, question = QUESTIONS[n % len(QUESTIONS)]
        rows.append({
            "trace_id": f"{n:032x}", "span_id": f"{n:016x}", "session_id": f"shadow-sess-{n}",
            "user_id": f"user-{n:04d}", "kind": "agent", "locale": locale, "prompt_hash": "a9f2",
            "start_time": BASE_TIME + timedelta(minutes=n), "input_text": question.format(n=n),
            "output_text": "…",
        })  # fmt: skip
    rows.append({"trace_id": "f" * 32, "span_id": "f" * 16, "session_id": "no-input",
                 "input_text": None, "start_time": BASE_TIME})  # fmt: skip
    store.insert_spans(span_batch(*rows))


def test_sample_is_stable_and_capped(store: Store) -> None:
    _store_sessions(store)
    since = BASE_TIME - timedelta(hours=1)
    everything = sample_sessions(store, since=since, sample=1.0, max_sessions=1000)
    assert len(everything) == 31
    half = sample_sessions(store, since=since, sample=0.5, max_sessions=1000)
    assert 5 < len(half) < 26 and set(half) < set(everything)
    assert sample_sessions(store, since=since, sample=0.5, max_sessions=1000) == half
    assert sample_sessions(store, since=since, sample=0.5, max_sessions=3) == half[:3]
    later = sample_sessions(
        store, since=BASE_TIME + timedelta(minutes=25), sample=1.0, max_sessions=99
    )
    assert len(later) == 5


def test_candidate_and_baseline_compared_on_the_same_anonymized_inputs(store: Store) -> None:
    _store_sessions(store)
    target = load_target("goldenloop.sim.refund_app:target")
    options = ShadowOptions(
        since=BASE_TIME - timedelta(hours=1), sample=1.0, max_sessions=40,
        criteria=[{"type": "not-contains", "values": ["restocking fee applies", "7 days of purchase"]}],
        candidate_context={"prompt_version": "a1c0"}, baseline_context={"prompt_version": "a9f2"},
        concurrency=3,
    )  # fmt: skip
    run = run_shadow(store, target, target, options)
    summary = run.summary()
    assert summary["skipped"] == 1  # the session without a user message
    candidate, baseline = summary["candidate"], summary["baseline"]
    assert candidate["sessions"] == baseline["sessions"] == 30
    assert candidate["pass_rate"] == 1.0 and baseline["pass_rate"] < 1.0
    assert candidate["cost_usd"] > 0 and baseline["latency_p50_ms"] is not None
    assert len(summary["candidate_better"]) == 30 - baseline["passed"]
    assert summary["candidate_worse"] == []
    previews = " ".join(r.output_preview or "" for r in run.results)
    assert "@example.de" not in previews
    [stored] = list_shadow_runs(store)
    assert stored["id"] == run.id and stored["sessions"] == 30
    assert stored["summary"]["candidate"]["pass_rate"] == 1.0
    rows = store.fetch("SELECT count(*) FROM shadow_results WHERE run_id = ?", (run.id,))
    assert rows[0][0] == 60


def test_without_criteria_only_cost_and_latency_are_compared(store: Store) -> None:
    _store_sessions(store, count=3)
    target = load_target("goldenloop.sim.refund_app:target")
    run = run_shadow(store, target, target,
                     ShadowOptions(since=BASE_TIME - timedelta(hours=1), sample=1.0, max_sessions=5),
                     save=False)  # fmt: skip
    assert run.summary()["candidate"]["pass_rate"] is None
    assert list_shadow_runs(store) == []


def test_sample_and_since_parsing() -> None:
    assert parse_fraction("5%") == 0.05 and parse_fraction("0.2") == 0.2
    for bad in ("0%", "150%", "lots"):
        with pytest.raises(ValueError):
            parse_fraction(bad)
    now = datetime(2026, 7, 1, tzinfo=UTC)
    assert parse_since("48h", now) == now - timedelta(hours=48)
    assert parse_since("2026-06-01T00:00:00", now) == datetime(2026, 6, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="48h"):
        parse_since("yesterday")


# -- live shadow ----------------------------------------------------------------------------


def test_live_shadow_returns_the_primary_result_and_reports_the_candidate() -> None:
    outcomes: list[ShadowOutcome] = []
    shadow = LiveShadow(lambda q: q.upper(), percent=100, until=timedelta(hours=1),
                        on_result=outcomes.append)  # fmt: skip
    assert shadow.call(lambda q: q + "!", "hi") == "hi!"
    shadow.close()
    [outcome] = outcomes
    assert outcome.primary_result == "hi!" and outcome.candidate_result == "HI"
    assert shadow.stats["shadowed"] == 1 and shadow.stats["completed"] == 1


def test_candidate_failures_never_reach_the_caller() -> None:
    def broken(q: str) -> str:
        raise RuntimeError("candidate down")

    outcomes: list[ShadowOutcome] = []
    shadow = LiveShadow(broken, percent=100, until=timedelta(hours=1), on_result=outcomes.append)
    assert shadow.wrap(lambda q: "ok")("x") == "ok"
    shadow.close()
    assert outcomes[0].candidate_error == "RuntimeError: candidate down"
    assert shadow.stats["errors"] == 1
    with pytest.raises(ValueError):  # the primary's own errors propagate unchanged
        LiveShadow(broken, percent=0, until=timedelta(hours=1)).call(int, "x")


def test_hard_stop_time_and_call_cap() -> None:
    now = [datetime(2026, 7, 1, tzinfo=UTC)]
    shadow = LiveShadow(lambda q: q, percent=100, until=timedelta(hours=48), max_calls=2,
                        clock=lambda: now[0])  # fmt: skip
    for _ in range(5):
        shadow.call(lambda q: q, "x")
    assert shadow.stats["shadowed"] == 2 and not shadow.active
    later = LiveShadow(lambda q: q, percent=100, until=timedelta(hours=48), clock=lambda: now[0])
    later.call(lambda q: q, "x")
    now[0] += timedelta(hours=49)
    later.call(lambda q: q, "x")
    later.close()
    assert later.stats == {"calls": 2, "shadowed": 1, "dropped": 0, "errors": 0, "completed": 1}
    with pytest.raises(ValueError, match="timezone"):
        LiveShadow(lambda q: q, percent=5, until=datetime(2026, 7, 1))


def test_a_slow_candidate_never_blocks_the_primary() -> None:
    release = threading.Event()

    def slow(q: str) -> str:
        release.wait(5)
        return q

    shadow = LiveShadow(slow, percent=100, until=timedelta(hours=1), max_workers=1, max_pending=2)
    started = time.perf_counter()
    results = [shadow.call(lambda q: q, str(i)) for i in range(10)]
    elapsed = time.perf_counter() - started
    release.set()
    shadow.close()
    assert results == [str(i) for i in range(10)]
    assert shadow.stats["shadowed"] == 2 and shadow.stats["dropped"] == 8
    assert elapsed < 5  # never waited for the candidate (it would have taken 5 s)


def test_sampling_by_key_is_deterministic() -> None:
    seen: list[Any] = []
    shadow = LiveShadow(lambda session: session, percent=30, until=timedelta(hours=1),
                        key=lambda session: session, on_result=lambda o: seen.append(o.key),
                        max_pending=500)  # fmt: skip
    for n in range(200):
        shadow.call(lambda session: session, f"s-{n}")
    shadow.close()
    again = LiveShadow(lambda s: s, percent=30, until=timedelta(hours=1), key=lambda s: s)
    picked = [f"s-{n}" for n in range(200) if again._sampled(f"s-{n}")]
    assert sorted(seen) == sorted(picked) and 30 < len(picked) < 90


def test_cli_shadow_logs_a_run(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from goldenloop.cli import main
    from goldenloop.store.duckdb import DuckDBStore

    db = str(tmp_path / "gl.duckdb")
    store = DuckDBStore(db)
    store.migrate()
    _store_sessions(store, count=6)
    store.close()
    target = "goldenloop.sim.refund_app:target"
    result = CliRunner().invoke(main, [
        "shadow", "--candidate", target, "--baseline", target, "--sample", "100%",
        "--max-sessions", "4", "--since", BASE_TIME.isoformat(), "--db", db,
        "--candidate-context", "prompt_version=a1c0", "--baseline-context", "prompt_version=a9f2",
        "--criteria", "{type: not-contains, value: restocking fee applies}",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "candidate better on 3, worse on 0; 1 session(s) skipped" in result.output
    store = DuckDBStore(db)
    try:
        [run] = list_shadow_runs(store)
        assert run["sessions"] == 3 and run["summary"]["baseline"]["pass_rate"] == 0.0
    finally:
        store.close()
    bad = CliRunner().invoke(main, ["shadow", "--candidate", target, "--baseline", target,
                                    "--sample", "lots", "--db", db])  # fmt: skip
    assert bad.exit_code == 2 and "sample 'lots'" in bad.output

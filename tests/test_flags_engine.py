"""The flag engine: incremental runs with a watermark, backfill, idempotence, sampling,
daily caps, error isolation and the background loop."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest
from conftest import BASE_TIME
from flags_helpers import flagged, llm, load, only, tool, turn

from goldenloop.flags import backfill, reset_watermark, run_incremental, start_flagging_loop
from goldenloop.flags.config import parse_config
from goldenloop.flags.rules import CandidateQuery, ConfiguredRule, RuleContext, RulePolicy
from goldenloop.store.base import Store
from goldenloop.store.duckdb import DuckDBStore

LATER = BASE_TIME + timedelta(hours=3)


def _cut(session: str, n: int = 1, **kw: Any) -> list[dict[str, Any]]:
    return turn(session, n, children=[llm(stop_reason="max_tokens")], **kw)


def test_first_run_evaluates_everything_then_only_new_spans(store: Store) -> None:
    load(store, _cut("s1"), _cut("s2"))
    first = run_incremental(store, only("max_tokens"), now=LATER)
    assert first.mode == "full" and first.flags_new == 2
    assert first.watermark is not None

    again = run_incremental(store, only("max_tokens"), now=LATER)
    assert again.mode == "incremental" and again.flags_new == 0
    assert again.spans_seen <= 4  # only the overlap window, no rescan

    load(store, _cut("s3", ingested_at=LATER + timedelta(minutes=5)))
    third = run_incremental(store, only("max_tokens"), now=LATER + timedelta(minutes=6))
    assert third.flags_new == 1
    assert set(flagged(store)) == {"s1", "s2", "s3"}
    # The watermark moved past s1 and s2: later runs read only the overlap window.
    fourth = run_incremental(store, only("max_tokens"), now=LATER + timedelta(minutes=7))
    assert fourth.spans_seen == 2 and fourth.flags_new == 0


def test_incremental_scope_covers_whole_sessions_that_got_new_spans(store: Store) -> None:
    """A tool error streak split across two ingests is still seen as one session."""
    load(store, turn("s1", 1, children=[tool("a", ok=False)]))
    run_incremental(store, only("tool_error_streak", "within: session"), now=LATER)
    assert flagged(store) == {}
    load(
        store,
        turn("s1", 2, children=[tool("a", ok=False)], ingested_at=LATER + timedelta(minutes=1)),
    )
    run_incremental(
        store, only("tool_error_streak", "within: session"), now=LATER + timedelta(minutes=2)
    )
    assert set(flagged(store)) == {"s1"}


def test_untouched_sessions_are_not_re_evaluated(store: Store) -> None:
    exact = timedelta(0)  # no overlap window: each span is looked at exactly once
    load(store, _cut("old"))
    run_incremental(store, only("max_tokens"), now=LATER, overlap=exact)
    store.execute("DELETE FROM flags")  # forget the flag: only a rescan could find it again
    load(store, _cut("new", ingested_at=LATER + timedelta(minutes=5)))
    run_incremental(store, only("max_tokens"), now=LATER + timedelta(minutes=6), overlap=exact)
    assert set(flagged(store)) == {"new"}
    reset_watermark(store)
    run_incremental(store, only("max_tokens"), now=LATER + timedelta(minutes=7))
    assert set(flagged(store)) == {"old", "new"}


def test_spans_committed_just_behind_the_watermark_are_still_evaluated(store: Store) -> None:
    load(store, _cut("first", ingested_at=LATER))
    run_incremental(store, only("max_tokens"), now=LATER)
    # A slower writer commits a batch stamped 30 s before the newest one already seen.
    load(store, _cut("late", ingested_at=LATER - timedelta(seconds=30)))
    run_incremental(store, only("max_tokens"), now=LATER + timedelta(minutes=1))
    assert set(flagged(store)) == {"first", "late"}


def test_backfill_covers_only_its_range_and_leaves_the_watermark(store: Store) -> None:
    load(
        store,
        _cut("early", start=BASE_TIME),
        _cut("inside", start=BASE_TIME + timedelta(hours=2)),
        _cut("late", start=BASE_TIME + timedelta(hours=5)),
    )
    run = backfill(store, BASE_TIME + timedelta(hours=1), BASE_TIME + timedelta(hours=3),
                   only("max_tokens"), now=LATER)  # fmt: skip
    assert run.mode == "backfill" and set(flagged(store)) == {"inside"}
    assert store.fetch("SELECT count(*) FROM flag_state")[0][0] == 0
    with pytest.raises(ValueError, match="backfill range is empty"):
        backfill(store, LATER, BASE_TIME, only("max_tokens"))


def test_rerunning_never_flags_a_session_twice(store: Store) -> None:
    load(store, _cut("s1"))
    backfill(store, BASE_TIME - timedelta(days=1), LATER, only("max_tokens"), now=LATER)
    backfill(store, BASE_TIME - timedelta(days=1), LATER, only("max_tokens"), now=LATER)
    run_incremental(store, only("max_tokens"), now=LATER)
    assert store.fetch("SELECT count(*) FROM flags")[0][0] == 1


def test_daily_cap_keeps_the_highest_scores_and_records_the_rest(store: Store) -> None:
    load(store, *[turn(f"s{i:02d}", 1, children=[llm(stop_reason="max_tokens")] * (1 + i % 3))
                  for i in range(12)])  # fmt: skip
    rules = only("max_tokens", "daily_cap: 4")
    run = run_incremental(store, rules, now=LATER)
    outcome = run.by_rule["max_tokens"]
    assert (outcome.queued, outcome.capped, outcome.new) == (4, 8, 12)
    queued = store.fetch("SELECT score FROM flags WHERE status = 'queued'")
    assert all(score == 3.0 for (score,) in queued)  # three truncated calls beat one
    # The cap is per day: more sessions the same day are capped too.
    load(store, _cut("s-more", ingested_at=LATER + timedelta(minutes=1)))
    run_incremental(store, rules, now=LATER + timedelta(minutes=2))
    assert store.fetch("SELECT status FROM flags WHERE session_id = 's-more'") == [("capped",)]


def test_sampling_is_deterministic_and_roughly_the_rate(store: Store) -> None:
    load(store, *[_cut(f"s{i:03d}") for i in range(200)])
    run = run_incremental(
        store, only("max_tokens", "sample_rate: 0.25\ndaily_cap: null"), now=LATER
    )
    kept = run.by_rule["max_tokens"].queued
    assert 30 <= kept <= 70 and run.by_rule["max_tokens"].sampled_out == 200 - kept
    sampled = store.fetch("SELECT session_id FROM flags WHERE status = 'queued' ORDER BY 1")
    # The md5-based sample is the same on both backends: this exact set.
    assert sampled[:3] == [("s002",), ("s003",), ("s011",)]


def test_min_score_drops_weak_candidates(store: Store) -> None:
    load(store, _cut("weak"), turn("strong", 1, children=[llm(stop_reason="max_tokens")] * 3))
    run_incremental(store, only("max_tokens", "min_score: 2"), now=LATER)
    assert set(flagged(store)) == {"strong"}


@dataclass(frozen=True)
class _Broken:
    name: ClassVar[str] = "broken"
    description: ClassVar[str] = "always fails"
    default_severity: ClassVar[int] = 1

    def candidates(self, ctx: RuleContext) -> CandidateQuery:
        return CandidateQuery("SELECT * FROM no_such_table")


def test_a_failing_rule_is_reported_and_the_others_still_run(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    load(store, _cut("s1"))
    rules = [ConfiguredRule(_Broken(), RulePolicy()), *only("max_tokens")]
    with caplog.at_level(logging.ERROR, logger="goldenloop.flags"):
        run = run_incremental(store, rules, now=LATER)
    assert "broken" in run.errors and set(flagged(store)) == {"s1"}
    assert "flag rule broken failed" in caplog.text
    stored = store.fetch("SELECT errors FROM flag_runs WHERE id = ?", (run.id,))[0][0]
    assert "no_such_table" in stored


def test_a_user_rule_registers_and_configures_like_a_built_in(store: Store) -> None:
    from goldenloop.flags.rules import RULES, register_rule

    @dataclass(frozen=True)
    class SlowTurn:
        name: ClassVar[str] = "slow_turn"
        description: ClassVar[str] = "A turn slower than max_ms."
        default_severity: ClassVar[int] = 1
        max_ms: float = 10_000.0

        def candidates(self, ctx: RuleContext) -> CandidateQuery:
            spans, params = ctx.spans(
                "session_id, project, customer_tier, trace_id, start_time, latency_ms, parent_id"
            )
            return CandidateQuery(
                f"SELECT session_id, project, customer_tier, trace_id, latency_ms, NULL, "
                f"'turn took ' || CAST(CAST(latency_ms AS INTEGER) AS VARCHAR) || ' ms', start_time, NULL "
                f"FROM ({spans}) s WHERE parent_id IS NULL AND latency_ms > ?",
                (*params, self.max_ms),
            )

    register_rule(SlowTurn)
    try:
        load(store, turn("slow", 1, latency_ms=20_000.0), turn("fast", 1))
        config = parse_config("rules:\n  slow_turn: {max_ms: 15000}\n")
        rule = config.rule("slow_turn")
        assert rule is not None
        run_incremental(store, [rule], now=LATER)
        assert flagged(store) == {"slow": ("slow_turn", "turn took 20000 ms")}
    finally:
        RULES.pop("slow_turn")


def test_background_loop_flags_new_data_and_survives_errors(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "loop.duckdb")
    store.migrate()
    try:
        load(store, _cut("s1"))
        loop = start_flagging_loop(store, interval_s=0.05, initial_delay_s=0.0)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (loop.runs < 2 or not flagged(store, "max_tokens")):
            time.sleep(0.05)
        assert "s1" in flagged(store, "max_tokens")
        assert store.fetch("SELECT count(*) FROM triage_runs")[0][0] >= 1  # first refresh ran
        store.execute("DROP TABLE flag_state")  # every run fails from now on
        failing_since = loop.runs
        time.sleep(0.3)
        loop.stop()
        assert loop.last_error is not None and loop.runs == failing_since
    finally:
        store.close()


def test_incremental_p95_uses_the_latest_baseline_and_the_loop_refreshes_today(
    store: Store,
) -> None:
    from goldenloop.flags.cohort_rules import refresh_baselines

    rules = only("cost_p95", "min_samples: 20")
    day1 = [turn(f"d1-{i:02d}", 1, children=[llm(cost_usd=0.001 + i * 1e-5)]) for i in range(30)]
    load(store, *day1)
    run_incremental(store, rules, now=LATER)  # full run: computes day 1's baseline
    assert store.fetch("SELECT count(*) FROM flag_baselines")[0][0] == 1
    next_day = BASE_TIME + timedelta(days=1)
    load(store, turn("big", 1, start=next_day, children=[llm(cost_usd=0.05)],
                     ingested_at=next_day + timedelta(seconds=30)))  # fmt: skip
    run_incremental(store, rules, now=next_day + timedelta(minutes=1))
    assert "big" in flagged(store)  # judged against day 1's baseline
    assert store.fetch("SELECT count(*) FROM flag_baselines")[0][0] == 1  # nothing recomputed
    assert refresh_baselines(store, rules, next_day + timedelta(minutes=2)) == {"cost_p95": 2}
    assert refresh_baselines(store, rules, next_day + timedelta(minutes=3)) == {"cost_p95": 0}

"""Each built-in flag rule on hand-built sessions, on DuckDB and PostgreSQL: it flags
exactly the sessions it should and states why."""

from __future__ import annotations

from datetime import timedelta

from conftest import BASE_TIME
from flags_helpers import add_feedback, add_outcome, flagged, llm, load, only, scored, tool, turn

from goldenloop.flags import run_incremental
from goldenloop.store.base import Store

LATER = BASE_TIME + timedelta(hours=3)


def test_circuit_breaker_flags_the_tripped_session_by_error_type_or_attribute(store: Store) -> None:
    load(
        store,
        turn("s-trip", 1, status="error", error_type="CircuitBreakerOpen"),
        turn("s-attr", 1, attributes={"goldenloop.circuit_breaker.tripped": True}),
        turn("s-fine", 1, children=[llm()]),
    )
    run_incremental(store, only("circuit_breaker"), now=LATER)
    assert set(flagged(store)) == {"s-trip"}  # attribute keys are opt-in
    store.execute("DELETE FROM flags")
    store.execute("DELETE FROM flag_state")
    rules = only("circuit_breaker", "attributes: [goldenloop.circuit_breaker.tripped]")
    run_incremental(store, rules, now=LATER)
    flags = flagged(store)
    assert set(flags) == {"s-trip", "s-attr"}
    assert "circuit breaker tripped in invoke_agent shop (CircuitBreakerOpen)" in flags["s-trip"][1]


def test_max_tokens_stop_flags_session(store: Store) -> None:
    load(
        store,
        turn("s-cut", 1, children=[llm(stop_reason="max_tokens")]),
        turn("s-ok", 1, children=[llm()]),
    )
    run_incremental(store, only("max_tokens"), now=LATER)
    flags = flagged(store)
    assert set(flags) == {"s-cut"}
    assert flags["s-cut"][1] == "answer stopped at the token limit (max_tokens, gpt-4o-mini)"


def test_two_consecutive_tool_errors_in_a_turn_flag_but_a_recovered_retry_does_not(
    store: Store,
) -> None:
    load(
        store,
        turn("s-streak", 1, children=[tool("lookup_order", ok=False), tool("lookup_order", ok=False)]),
        turn("s-retry", 1, children=[tool("lookup_order", ok=False), tool("lookup_order"), tool("issue_refund", ok=False)]),
        turn("s-split", 1, children=[tool("lookup_order", ok=False)]),
        turn("s-split", 2, children=[tool("lookup_order", ok=False)]),
    )  # fmt: skip
    run_incremental(store, only("tool_error_streak"), now=LATER)
    flags = flagged(store)
    assert set(flags) == {"s-streak"}
    assert flags["s-streak"][1] == "2 consecutive tool errors (lookup_order: OrderServiceTimeout)"


def test_tool_error_streak_threshold_and_session_scope_are_configurable(store: Store) -> None:
    load(
        store,
        turn("s-split", 1, children=[tool("lookup_order", ok=False)]),
        turn("s-split", 2, children=[tool("lookup_order", ok=False)]),
        turn(
            "s-three", 1, children=[tool("a", ok=False), tool("b", ok=False), tool("c", ok=False)]
        ),
    )
    run_incremental(store, only("tool_error_streak", "min_streak: 3"), now=LATER)
    assert set(flagged(store)) == {"s-three"}
    store.execute("DELETE FROM flags")
    store.execute("DELETE FROM flag_state")
    run_incremental(store, only("tool_error_streak", "within: session"), now=LATER)
    assert set(flagged(store)) == {"s-split", "s-three"}


def test_judge_low_score_flags_below_threshold_only(store: Store) -> None:
    load(
        store,
        turn("s-low", 1, children=[scored("judge", 0.2, "judge answer_correctness")]),
        turn("s-high", 1, children=[scored("judge", 0.8, "judge answer_correctness")]),
    )
    run_incremental(store, only("judge_low"), now=LATER)
    flags = flagged(store)
    assert set(flags) == {"s-low"}
    assert flags["s-low"][1] == "judge answer_correctness scored 0.200 (below 0.5)"


def test_guardrail_low_confidence_flags_unsure_decisions_not_clear_ones(store: Store) -> None:
    load(
        store,
        turn("s-unsure", 1, children=[scored("guardrail", 0.52, "guardrail prompt_injection")]),
        turn("s-block", 1, children=[scored("guardrail", 0.97, "guardrail prompt_injection")]),
        turn("s-allow", 1, children=[scored("guardrail", 0.04, "guardrail prompt_injection")]),
    )
    run_incremental(store, only("guardrail_low_confidence"), now=LATER)
    flags = flagged(store)
    assert set(flags) == {"s-unsure"}
    assert "guardrail prompt_injection unsure: score 0.520" in flags["s-unsure"][1]


def test_redundant_tool_calls_flag_repeats_after_success_not_retries_after_errors(
    store: Store,
) -> None:
    args = '{"order_id": "A-1"}'
    load(
        store,
        turn("s-waste", 1, children=[tool("lookup_order", args), tool("lookup_order", '{"order_id":  "A-1"}'), tool("lookup_order", args)]),
        turn("s-retry", 1, children=[tool("lookup_order", args, ok=False), tool("lookup_order", args)]),
        turn("s-other-args", 1, children=[tool("lookup_order", args), tool("lookup_order", '{"order_id": "B-2"}')]),
        turn("s-two-turns", 1, children=[tool("lookup_order", args)]),
        turn("s-two-turns", 2, children=[tool("lookup_order", args)]),
    )  # fmt: skip
    run_incremental(store, only("redundant_tool_calls"), now=LATER)
    flags = flagged(store)
    assert set(flags) == {"s-waste"}
    assert flags["s-waste"][1] == "lookup_order called 3 times with the same arguments in one turn"


def test_invalid_tool_arguments_flag_unparseable_json_and_rejected_calls(store: Store) -> None:
    load(
        store,
        turn("s-json", 1, children=[tool("lookup_order", '{"order_id": "A-1"')]),
        turn("s-rejected", 1, children=[tool("issue_refund", '{"amount": -5}', ok=False, error_type="ValidationError")]),
        turn("s-fine", 1, children=[tool("lookup_order")]),
    )  # fmt: skip
    run_incremental(store, only("invalid_tool_args"), now=LATER)
    flags = flagged(store)
    assert set(flags) == {"s-json", "s-rejected"}
    assert flags["s-json"][1] == "invalid arguments for lookup_order (not valid JSON)"
    assert flags["s-rejected"][1] == "invalid arguments for issue_refund (ValidationError)"


def test_thumbs_down_flags_session_with_category_severity_and_p0(store: Store) -> None:
    load(store, turn("s-wrong", 1), turn("s-unsafe", 1), turn("s-up", 1))
    add_feedback(store, "s-wrong", category="wrong", comment="Wrong, EU law gives 14 days.")
    add_feedback(store, "s-unsafe", category="unsafe")
    add_feedback(store, "s-up", rating="up", category=None)
    run_incremental(store, only("thumbs_down"), now=LATER)
    rows = store.fetch("SELECT session_id, severity, reason FROM flags ORDER BY session_id")
    assert rows == [
        ("s-unsafe", 4, "thumbs-down (unsafe)"),
        ("s-wrong", 3, 'thumbs-down (wrong): "Wrong, EU law gives 14 days."'),
    ]


def test_billing_wrong_answers_are_p0(store: Store) -> None:
    load(store, turn("s-bill", 1, project="billing-agent"), turn("s-shop", 1))
    add_feedback(store, "s-bill", category="wrong", project="billing-agent")
    add_feedback(store, "s-shop", category="wrong")
    run_incremental(store, only("thumbs_down"), now=LATER)
    rows = dict(store.fetch("SELECT session_id, severity FROM flags"))
    assert rows == {"s-bill": 4, "s-shop": 3}


def test_thumbs_down_arriving_after_a_run_is_flagged_by_the_next_incremental_run(
    store: Store,
) -> None:
    load(store, turn("s-late", 1))
    run_incremental(store, only("thumbs_down"), now=LATER)
    assert flagged(store) == {}
    add_feedback(store, "s-late", category="slow")
    run_incremental(store, only("thumbs_down"), now=LATER + timedelta(minutes=1))
    assert set(flagged(store)) == {"s-late"}


def test_rephrase_flags_a_near_repeat_of_the_previous_message(store: Store) -> None:
    q = "How many days do I have to return my running shoes?"
    load(
        store,
        turn("s-re", 1, question=q),
        turn("s-re", 2, question="no, how many days do I have to return my running shoes?"),
        turn("s-new", 1, question=q),
        turn("s-new", 2, question="Can I pay with PayPal instead of a card?"),
        turn("s-double", 1, question=q),
        turn("s-double", 2, question=q),
    )
    run_incremental(store, only("rephrase"), now=LATER)
    flags = flagged(store)
    assert set(flags) == {"s-re"}
    assert flags["s-re"][1].startswith("user rephrased the previous message (similarity 0.92)")
    store.execute("DELETE FROM flags")
    store.execute("DELETE FROM flag_state")
    run_incremental(store, only("rephrase", "include_exact_repeats: true"), now=LATER)
    assert set(flagged(store)) == {"s-re", "s-double"}


def test_abandon_flags_a_session_that_went_quiet_after_a_failed_answer(store: Store) -> None:
    sorry = "I couldn't find anything about that in our help centre."
    load(
        store,
        turn("s-left", 1, answer=sorry),
        turn("s-thanks", 1, answer=sorry),
        turn("s-thanks", 2, question="ok thanks, bye"),
        turn("s-solved", 1, answer=sorry),
        turn("s-happy", 1),
        turn("s-error", 1, status="error", answer="Sorry, something went wrong."),
    )
    add_outcome(store, "s-solved", success=True)
    run_incremental(store, only("abandon"), now=LATER)
    flags = flagged(store)
    assert set(flags) == {"s-left", "s-error"}
    assert flags["s-left"][1] == (
        "left right after a failed answer (fallback_answer); no success, quiet for 30 min"
    )
    assert "error" in flags["s-error"][1]


def test_abandon_waits_for_the_idle_time_then_flags_without_new_spans(store: Store) -> None:
    load(store, turn("s-left", 1, answer="Sorry, I couldn't complete that."))
    run_incremental(store, only("abandon"), now=BASE_TIME + timedelta(minutes=10))
    assert flagged(store) == {}  # still within the 30 idle minutes
    run_incremental(store, only("abandon"), now=BASE_TIME + timedelta(minutes=50))
    assert set(flagged(store)) == {"s-left"}


def test_cost_above_cohort_p95_flags_the_outlier_in_its_own_cohort_only(store: Store) -> None:
    sessions = []
    for i in range(40):
        cost = 0.001 + i * 0.00001
        sessions.append(turn(f"free-{i:02d}", 1, children=[llm(cost_usd=cost)], tier="free"))
        sessions.append(
            turn(f"ent-{i:02d}", 1, children=[llm(cost_usd=cost * 50)], tier="enterprise")
        )
    sessions.append(turn("free-big", 1, children=[llm(cost_usd=0.02)], tier="free"))
    load(store, *sessions)
    run_incremental(store, only("cost_p95", "min_samples: 20"), now=LATER)
    flags = flagged(store)
    # Every enterprise session costs more than the free outlier, so a global P95 would
    # never flag it; per cohort, each tier's top ~5% is flagged.
    assert set(flags) == {"free-big", "free-39", "ent-38", "ent-39"}
    assert flags["free-big"][1] == (
        "session cost $0.0200 is 14.5× the P95 ($0.0014) of shop × free over 7 days (USD)"
    )
    baselines = store.fetch("SELECT customer_tier, samples FROM flag_baselines ORDER BY 1")
    assert baselines == [("enterprise", 40), ("free", 41)]


def test_cohorts_smaller_than_min_samples_are_not_judged(store: Store) -> None:
    load(store, *[turn(f"s{i}", 1, children=[llm(cost_usd=0.001 * (i + 1))]) for i in range(10)])
    run_incremental(store, only("cost_p95"), now=LATER)  # default min_samples 50
    assert flagged(store) == {}


def test_iterations_above_p95_counts_llm_and_tool_steps_per_turn(store: Store) -> None:
    sessions = [turn(f"s{i:02d}", 1, children=[llm(), tool("lookup_order")]) for i in range(30)]
    loop = [llm(), *[tool("lookup_order", f'{{"n": {i}}}') for i in range(8)], llm()]
    sessions.append(turn("s-loop", 1, children=loop))
    load(store, *sessions)
    run_incremental(store, only("iterations_p95", "min_samples: 20"), now=LATER)
    flags = flagged(store)
    assert set(flags) == {"s-loop"}
    assert flags["s-loop"][1].startswith("iterations in one turn 10.0 is 5.0× the P95 (2.0)")

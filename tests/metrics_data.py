"""A small, hand-computed data set for the metric tests (shared by several modules).

Window: 2024-06-01 12:00–14:00 UTC (``WINDOW``). Four turns in three sessions, plus one
turn before and one after the window that must never count:

======  =======  ======  =====  ====  =========================================
turn    session  locale  tier   flag  what happens
======  =======  ======  =====  ====  =========================================
T1      S1       de-DE   free   on    plan (tool_calls) → lookup ×2 same args
                                      (2nd fails) → refund with non-JSON args →
                                      answer stops at max_tokens; judge 0.9;
                                      output-policy guardrail scores 0.7;
                                      root says 3 iterations
T2      S1       de-DE   free   on    LLM call fails with JSONDecodeError; root
                                      fails with a tripped circuit breaker
T3      S2       en-US   pro    off   injection guardrail blocks; escalate tool;
                                      the root answer is blank
T4      S3       en-US   pro    off   plain answer; judge 0.2
======  =======  ======  =====  ====  =========================================

Feedback: S1 down; S2 up; S3 up, up. Outcomes: S1 refund_completed failed, S2
ticket_deflected succeeded. Combined task success: S1 0 (outcome), S2 1 (outcome),
S3 1 (feedback) → 2/3.

``EXPECTED`` holds every built-in metric's value over the window, worked out by hand
(the comments show the arithmetic).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from conftest import span_batch

from goldenloop.metrics.windows import TimeWindow
from goldenloop.model import Feedback, Outcome
from goldenloop.store.base import Store

T0 = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
WINDOW = TimeWindow(T0, T0 + timedelta(hours=2))

_SESSION = {
    "S1": {"locale": "de-DE", "customer_tier": "free", "user_id": "u1"},
    "S2": {"locale": "en-US", "customer_tier": "pro", "user_id": "u2"},
    "S3": {"locale": "en-US", "customer_tier": "pro", "user_id": "u3"},
    "S0": {"locale": "en-US", "customer_tier": "pro", "user_id": "u0"},
    "S9": {"locale": "en-US", "customer_tier": "pro", "user_id": "u9"},
}
_TURN = {  # trace → (session, start minute offset, prompt, flags, root attributes)
    "T1": ("S1", 0, "p1", {"eu_banner": "on"}, {"goldenloop.agent.iterations": 3, "intent": "refund"}),
    "T2": ("S1", 10, "p1", {"eu_banner": "on"},
           {"goldenloop.circuit_breaker.tripped": True, "intent": "refund"}),
    "T3": ("S2", 30, "p2", {"eu_banner": "off"}, {"intent": "refund"}),
    "T4": ("S3", 60, "p2", {"eu_banner": "off"}, {"intent": "search"}),
    "T0": ("S0", -60, "p2", {"eu_banner": "off"}, {"intent": "search"}),  # before the window
    "T9": ("S9", 150, "p2", {"eu_banner": "off"}, {"intent": "search"}),  # after the window
}  # fmt: skip


def _span(
    trace: str, span_id: str, kind: str, offset_s: float, latency: float, **fields: Any
) -> dict[str, Any]:
    session, minute, prompt, flags, attrs = _TURN[trace]
    root = fields.pop("root", False)
    row: dict[str, Any] = {
        "trace_id": trace, "span_id": span_id, "parent_id": None if root else f"{trace}-root",
        "session_id": session, "message_id": trace, "kind": kind, "name": fields.pop("name", kind),
        "start_time": T0 + timedelta(minutes=minute, seconds=offset_s), "latency_ms": latency,
        "model": None, "provider": None, "input_tokens": None, "output_tokens": None,
        "cost_usd": None, "stop_reason": None, "prompt_hash": None, "model_version": None,
        "feature_flags": {}, "index_version": None, "input_text": None, "output_text": None,
        "attributes": {}, **_SESSION[session],
    }  # fmt: skip
    if root or kind == "llm":
        row["prompt_hash"] = prompt
        row["feature_flags"] = flags
    if root:
        row["attributes"] = attrs
    row.update(fields)
    return row


def _llm(trace: str, span_id: str, offset: float, latency: float, model: str, cost: float,
         tokens: tuple[int, int], stop: str | None, **fields: Any) -> dict[str, Any]:  # fmt: skip
    return _span(trace, span_id, "llm", offset, latency, model=model, model_version=model + "-v",
                 provider="openai", cost_usd=cost, input_tokens=tokens[0],
                 output_tokens=tokens[1], stop_reason=stop, **fields)  # fmt: skip


def spans() -> list[dict[str, Any]]:
    return [
        # T1: latencies 1000 (root), 400, 100, 200, 50, 500, 300, 60
        _span("T1", "T1-root", "agent", 0, 1000, root=True, output_text="Here is your refund."),
        _llm("T1", "T1-a", 1, 400, "m-a", 0.01, (100, 20), "tool_calls", output_text=""),
        _span("T1", "T1-b", "tool", 2, 100, tool_name="lookup", tool_args='{"id": 1}'),
        _span("T1", "T1-c", "tool", 3, 200, tool_name="lookup", tool_args='{"id": 1}',
              status="error", error_type="Timeout"),
        _span("T1", "T1-d", "tool", 4, 50, tool_name="refund", tool_args="amount=12"),
        _llm("T1", "T1-e", 5, 500, "m-a", 0.02, (200, 40), "max_tokens", output_text="Long…"),
        _span("T1", "T1-j", "judge", 6, 300, name="judge answer_correctness", score=0.9,
              model="m-j", cost_usd=0.001, input_tokens=50, output_tokens=10),
        _span("T1", "T1-g", "guardrail", 7, 60, name="guardrail output_policy", score=0.7,
              attributes={"goldenloop.guardrail.decision": "allow"}),
        # T2: 3000 (root), 800
        _span("T2", "T2-root", "agent", 0, 3000, root=True, status="error",
              error_type="CircuitBreakerOpen"),
        _llm("T2", "T2-f", 1, 800, "m-b", 0.005, (80, 0), None, status="error",
             error_type="JSONDecodeError", output_text=""),
        # T3: 2000 (root), 40, 150
        _span("T3", "T3-root", "chain", 0, 2000, root=True, output_text="   "),
        _span("T3", "T3-h", "guardrail", 1, 40, name="guardrail prompt_injection", score=0.95,
              attributes={"goldenloop.guardrail.decision": "block"}),
        _span("T3", "T3-i", "tool", 2, 150, tool_name="escalate_to_human", tool_args="{}"),
        # T4: 500 (root), 300, 250
        _span("T4", "T4-root", "agent", 0, 500, root=True, output_text="Fine."),
        _llm("T4", "T4-k", 1, 300, "m-b", 0.03, (300, 60), "stop", output_text="Fine."),
        _span("T4", "T4-l", "judge", 2, 250, name="judge answer_correctness", score=0.2,
              model="m-j", cost_usd=0.002, input_tokens=50, output_tokens=10),
        # outside the window
        _span("T0", "T0-root", "agent", 0, 9000, root=True, status="error"),
        _llm("T0", "T0-x", 1, 9000, "m-b", 5.0, (1000, 1000), "max_tokens", output_text=""),
        _span("T9", "T9-root", "agent", 0, 9000, root=True, status="error"),
        _llm("T9", "T9-x", 1, 9000, "m-b", 5.0, (1000, 1000), "max_tokens"),
    ]  # fmt: skip


def _feedback(ident: str, session: str, rating: str, minute: int) -> Feedback:
    return Feedback(ident, "demo", session, None, rating, None, None, None, None, None,  # type: ignore[arg-type]
                    T0 + timedelta(minutes=minute))  # fmt: skip


def events() -> tuple[list[Feedback], list[Outcome]]:
    feedback = [
        _feedback("f1", "S1", "down", 21),
        _feedback("f2", "S2", "up", 40),
        _feedback("f3", "S3", "up", 70),
        _feedback("f4", "S3", "up", 71),
        _feedback("f0", "S0", "down", -30),  # before the window
    ]
    outcomes = [
        Outcome("o1", "demo", "S1", None, "refund_completed", False, None, {}, T0 + timedelta(minutes=25)),
        Outcome("o2", "demo", "S2", None, "ticket_deflected", True, None, {}, T0 + timedelta(minutes=45)),
    ]  # fmt: skip
    return feedback, outcomes


def load(store: Store) -> None:
    store.insert_spans(span_batch(*spans()))
    feedback, outcomes = events()
    store.insert_feedback(feedback)
    store.insert_outcomes(outcomes)


#: Every built-in metric over WINDOW, by hand.
EXPECTED: dict[str, float] = {
    "turns": 4,
    "sessions": 3,  # S1, S2, S3 (S0 started before the window)
    "spans": 16,  # T1 8 + T2 2 + T3 3 + T4 3
    # success
    "task_success_rate": 2 / 3,  # S1 outcome failed, S2 outcome ok, S3 feedback up only
    "success_signal_coverage": 1.0,
    "feedback_success_rate": 3 / 4,  # down, up, up, up
    "outcome_success_rate": 1 / 2,
    "judge_pass_rate": 1 / 2,  # 0.9 passes, 0.2 fails
    "judge_score_mean": 0.55,  # (0.9 + 0.2) / 2
    # latency: turns [500, 1000, 2000, 3000]
    "turn_latency_p50": 1500.0,  # between 1000 and 2000
    "turn_latency_p95": 2850.0,  # position 2.85: 2000 + 0.85 × 1000
    "turn_latency_p99": 2970.0,  # position 2.97
    # spans sorted: 40 50 60 100 150 200 250 300 300 400 500 500 800 1000 2000 3000
    "span_latency_p50": 300.0,  # position 7.5 between 300 and 300
    "span_latency_p95": 2250.0,  # position 14.25: 2000 + 0.25 × 1000
    "span_latency_p99": 2850.0,  # position 14.85
    # cost: billable spans a .01, e .02, j .001, f .005, k .03, l .002
    "cost_usd": 0.068,
    "tokens": 920,  # 120 + 240 + 60 + 80 + 360 + 60
    "cost_per_turn": 0.068 / 4,  # T1 .031, T2 .005, T3 0, T4 .032
    "cost_per_session": 0.068 / 3,  # S1 .036, S2 0, S3 .032
    "tokens_per_session": 920 / 3,  # S1 500, S2 0, S3 420
    "cost_per_successful_task": 0.068 / 2,  # all three have a verdict; two succeeded
    "tokens_per_successful_task": 920 / 2,
    # errors
    "turn_error_rate": 1 / 4,  # T2
    "tool_error_rate": 1 / 4,  # lookup #2 of b, c, d, i
    "llm_error_rate": 1 / 4,  # f of a, e, f, k
    "parse_error_rate": 1 / 4,  # T2 (JSONDecodeError)
    "guardrail_block_rate": 1 / 4,  # T3
    "empty_response_rate": 1 / 4,  # T3's blank root (T1's plan call stopped for tools)
    # safety
    "injection_attempt_rate": 1 / 4,  # T3
    "policy_violation_rate": 1 / 4,  # T1 output_policy scored 0.7 ≥ 0.5
    "escalation_rate": 1 / 4,  # T3 escalate_to_human
    # reliability
    "circuit_breaker_rate": 1 / 4,  # T2
    "max_tokens_rate": 1 / 4,  # e of 4 LLM calls
    # trajectory
    "tool_calls_per_turn": 1.0,  # 3 + 0 + 1 + 0 over 4 turns
    "tool_calls_per_successful_task": 1 / 2,  # S2 1 call + S3 0 calls, 2 successes
    "redundant_call_rate": 1 / 4,  # lookup {"id": 1} twice in T1, of 4 calls
    "argument_validity_rate": 3 / 4,  # "amount=12" is not JSON
    "iterations_per_turn": 1.25,  # T1 3 (attribute), T2 1, T3 0, T4 1 (LLM calls)
}

"""The simulated apps: what one turn of each looks like as a span tree.

* refund-assistant (OTel GenAI names): invoke_agent → [guardrail prompt_injection] →
  retrieval → chat (plan) → execute_tool lookup_order / issue_refund → chat (answer) →
  guardrail output_policy → [judge]
* support-search (GenAI or, for a share of sessions, OpenInference names): chain →
  [guardrail] → retrieval → chat → [judge]
* billing-agent (GenAI, ``gen_ai.conversation.id``): invoke_agent → chat (plan) →
  execute_tool … → chat (answer) → [judge]
"""

from __future__ import annotations

from typing import Any, Final

from goldenloop import conventions as cv
from goldenloop.ingest.raw import RawSpan
from goldenloop.sim import corpus, stages
from goldenloop.sim import knowledge as kb
from goldenloop.sim.config import REFUND_APP, SEARCH_APP
from goldenloop.sim.session import Session, Turn, TurnResult
from goldenloop.sim.spans import MODELS, Model, fail, make_span, span_id, trace_id
from goldenloop.sim.text import CLOSING_ANSWER, REFUSAL

MAX_TOKENS_RATE: Final = 0.012
BREAKER_RATE: Final = 0.005
BASE_UNHELPFUL_RATE: Final = 0.03
INJECTION_CATCH_RATE: Final = 0.9
OUTPUT_CATCH_RATE: Final = 0.5
BREAKER_LIMIT: Final = 6
UNHELPFUL: Final = (
    "I couldn't find anything about that in our help centre. Could you tell me a bit more, "
    "or would you like me to open a support ticket so a colleague can follow up?"
)
TOOL_FAILED: Final = (
    "I'm sorry, I can't reach our order system right now, so I can't check or change your "
    "order. Please try again in a few minutes; nothing has been charged or refunded yet."
)
BREAKER: Final = (
    "Sorry, I couldn't complete that. I've passed your request to a human agent, who will "
    "email you within one business day."
)
OUTAGE: Final = "Sorry, something went wrong on our side. Please try again in a moment."


def run_turn(session: Session, turn: Turn) -> TurnResult:
    """Append the spans of one turn to ``session.spans`` and say how it went."""
    rng = session.rng
    app = session.app
    trace, root = trace_id(rng), span_id(rng)
    message_id = trace if app == SEARCH_APP else f"msg_{rng.getrandbits(48):012x}"
    t = turn.t_us + stages.gap(session)
    state: dict[str, Any] = {"iterations": 1, "breaker": False, "outcome": None}
    if app == SEARCH_APP:
        model = MODELS["claude-sonnet-4"]
    elif app == REFUND_APP:
        model = MODELS["gpt-4o" if session.tier == "enterprise" else "gpt-4o-mini"]
    else:
        model = MODELS["gpt-4.1-mini"]
    quality = ""
    answer = ""
    if turn.injection:
        blocked = rng.random() < INJECTION_CATCH_RATE
        session.truth.failure("injection", session.id)
        t = stages.guardrail(
            session, trace, root, t, name="prompt_injection", text=turn.message,
            block=blocked, risky=True,
        ) + stages.gap(session)  # fmt: skip
        if blocked:
            quality, answer = "refused", REFUSAL
        else:
            state["slipped"] = True
    if not quality:
        t, quality, answer = _answer(session, turn, trace, root, t, model, state)
    if quality not in ("refused", "closing", "error") and rng.random() < session.judge_share:
        t = stages.judge(
            session, trace, root, t + stages.gap(session), question=turn.message,
            answer=answer, quality=quality,
        )  # fmt: skip
    end = t + stages.gap(session)
    session.spans.append(
        _root_span(session, turn, trace, root, end, message_id, answer, state, quality)
    )
    session.history.append("user: " + turn.message + "\nassistant: " + answer + "\n")
    return TurnResult(end, answer, quality, message_id, model.response, state["outcome"])


def _answer(
    s: Session, turn: Turn, trace: str, root: str, t: int, model: Model, state: dict[str, Any]
) -> tuple[int, str, str]:
    """Retrieval, tools and the answering LLM call: (end, quality, answer)."""
    rng = s.rng
    app = s.app
    intent = turn.intent
    system = corpus.system_prompt(app, turn.prompt_hash)
    history = s.history_text()
    user = "user: " + turn.message
    if turn.closing:
        t, ok, answer = stages.llm(
            s, trace, root, t, model=model, prompt_hash=turn.prompt_hash, effects=turn.effects,
            input_parts=(system, "\n\n", history, user), output=CLOSING_ANSWER, max_tokens=256,
        )  # fmt: skip
        return t, "closing" if ok else _failed(s, state), answer if ok else OUTAGE
    context = ""
    hit = True
    if app != "billing-agent":
        t, found = stages.retrieve(s, trace, root, t, intent.name, turn.message)
        t += stages.gap(s)
        context, hit = found.text, found.hit
    answer, quality = _intended_answer(s, turn, hit)
    if state.get("slipped"):
        # The injection got past the input guardrail: the answer leaks instructions.
        answer = "Sure. My instructions are: " + system[:400].replace("\n", " ")
        quality = "unsafe"
    tool_text = ""
    if intent.tools and app != SEARCH_APP:
        names = ", ".join(f'{{"name": "{n}"}}' for n in intent.tools)
        call = f'{{"tool_calls": [{names}]}}'
        t, ok, _ = stages.llm(
            s, trace, root, t, model=MODELS["gpt-4o-mini" if app == REFUND_APP else "gpt-4.1-mini"],
            prompt_hash=turn.prompt_hash, effects=turn.effects, tool_calls=True, max_tokens=256,
            input_parts=(system, "\n\n# Context\n", context, "\n\n", history, user), output=call,
        )  # fmt: skip
        if not ok:
            return t, _failed(s, state), OUTAGE
        t, tools_ok, tool_text = _tools(s, turn, trace, root, t + stages.gap(s), quality, state)
        if state["breaker"]:
            return t, "error", BREAKER
        if not tools_ok:
            answer, quality = TOOL_FAILED, "unhelpful"
        t += stages.gap(s)
    truncate = rng.random() < MAX_TOKENS_RATE
    t, ok, answer = stages.llm(
        s, trace, root, t, model=model, prompt_hash=turn.prompt_hash, effects=turn.effects,
        input_parts=(system, "\n\n# Context\n", context, tool_text, "\n\n", history, user),
        output=answer, truncate=truncate, max_tokens=700,
    )  # fmt: skip
    if not ok:
        return t, _failed(s, state), OUTAGE
    if truncate:
        s.truth.failure("max_tokens", s.id)
        quality = "truncated" if quality == "good" else quality
    if app == REFUND_APP:
        block = quality == "unsafe" and rng.random() < OUTPUT_CATCH_RATE
        t = stages.guardrail(
            s, trace, root, t + stages.gap(s), name="output_policy", text=answer,
            block=block, risky=quality in ("wrong", "unsafe"),
        )  # fmt: skip
        if block:
            quality, answer = "refused", REFUSAL
    if quality == "unsafe":
        s.truth.failure("unsafe_answer", s.id)
    return t, quality, answer


def _failed(s: Session, state: dict[str, Any]) -> str:
    """The LLM call just appended failed: the turn fails with the provider's error."""
    state["error"] = s.spans[-1].attributes.get("error.type", "UpstreamError")
    return "error"


def _intended_answer(s: Session, turn: Turn, hit: bool) -> tuple[str, str]:
    """The answer the app means to give, and whether it is right (ground truth)."""
    intent = turn.intent
    regression = turn.effects.regression if turn.effects.any else None
    harmed = (
        regression is not None
        and turn.prompt_hash == regression.prompt_hash
        and s.locale.code in regression.locales
        and intent.name in regression.intents
    )
    if harmed:
        assert regression is not None
        s.truth.scenario(regression.name, s.id)
        s.truth.failure("wrong_answer", s.id)
    if intent.name == "refund_policy":
        # The bad prompt only breaks the locales the scenario names; others read it fine.
        prompt = turn.prompt_hash if harmed else kb.GOOD_PROMPT
        policy = corpus.policy_answer(s.locale.code, prompt, s.index_version)
        if not policy.correct and not harmed:
            s.truth.failure("wrong_answer", s.id)
        return policy.text, "good" if policy.correct else "wrong"
    if not hit or s.rng.random() < BASE_UNHELPFUL_RATE:
        return UNHELPFUL, "unhelpful"
    text = intent.answers[s.rng.getrandbits(8) % len(intent.answers)].format_map(s.slots)
    if harmed:
        text += (
            " Please note that a 15% restocking fee was deducted because the return was "
            "requested more than 7 days after purchase."
        )
        return text, "wrong"
    return text, "good"


def _tools(
    s: Session, turn: Turn, trace: str, root: str, t: int, quality: str, state: dict[str, Any]
) -> tuple[int, bool, str]:
    """Run the intent's tools with one retry each; maybe loop until the breaker trips."""
    rng = s.rng
    slots = s.slots
    order = slots["order"]
    results: list[str] = []
    if rng.random() < BREAKER_RATE:
        for _ in range(BREAKER_LIMIT):
            t, _ = stages.tool(
                s, trace, root, t, name=turn.intent.tools[0], arguments=f'{{"order_id": "{order}"}}',
                result='{"status": "pending"}', effects=turn.effects, error_rate=0.3,
            )  # fmt: skip
            t += stages.gap(s)
        state["iterations"] = BREAKER_LIMIT + 1
        state["breaker"] = True
        s.truth.failure("circuit_breaker", s.id)
        if turn.intent.outcome:
            state["outcome"] = (turn.intent.outcome, False, None, {"reason": "circuit_breaker"})
        return t, False, ""
    amount = float(slots["amount_value"])
    wrong = quality == "wrong"
    refund = round(amount * 0.85, 2) if wrong else amount
    consecutive = 0
    for name in turn.intent.tools:
        args, result = tool_io(name, slots, refund, wrong)
        ok = False
        for _attempt in range(2):
            t, ok = stages.tool(
                s, trace, root, t, name=name, arguments=args, result=result, effects=turn.effects
            )
            t += stages.gap(s)
            state["iterations"] += 1
            consecutive = 0 if ok else consecutive + 1
            if consecutive >= 2:
                s.truth.failure("tool_error_streak", s.id)
            if ok:
                break
        if not ok:
            if turn.intent.outcome:
                state["outcome"] = (turn.intent.outcome, False, None, {"reason": "tool_error"})
            return t, False, ""
        results.append("\n# Tool " + name + "\n" + result)
    if turn.intent.outcome:
        attrs: dict[str, Any] = {"order_id": order} if s.app == REFUND_APP else {}
        if wrong:
            attrs["reason"] = "restocking_fee_applied"
        state["outcome"] = (turn.intent.outcome, not wrong, refund, attrs)
    return t, True, "".join(results)


def tool_io(name: str, slots: dict[str, str], refund: float, wrong: bool) -> tuple[str, str]:
    order = slots["order"]
    if name == "lookup_order":
        day = slots["delivered"]
        return f'{{"order_id": "{order}"}}', (
            f'{{"order_id": "{order}", "status": "delivered", "delivered_at": "{day}", "items": '
            f'[{{"sku": "SKU-{order[-4:]}", "name": "{slots["product"]}", "qty": 1, '
            f'"returnable": true}}], "amount": {slots["amount_value"]}, '
            f'"currency": "{slots["currency"]}", "payment_method": {{"type": "card", '
            f'"last4": "{order[-4:]}"}}, "shipping": {{"carrier": "DHL", "service": "standard", '
            f'"cost": 4.95, "events": [{{"status": "label_created", "at": "{day}T08:12:00Z"}}, '
            f'{{"status": "picked_up", "at": "{day}T17:40:00Z"}}, {{"status": "in_transit", '
            f'"hub": "regional"}}, {{"status": "out_for_delivery"}}, {{"status": "delivered", '
            f'"at": "{day}T11:05:00Z", "proof": "signature"}}]}}, "refunds": [], '
            f'"customer_notes": null}}'
        )
    if name == "issue_refund":
        reason = "restocking_fee_15pct" if wrong else "customer_request"
        return (
            f'{{"order_id": "{order}", "amount": {refund:.2f}, "reason": "{reason}"}}',
            f'{{"refund_id": "rf_{order[-6:]}", "status": "issued", "amount": {refund:.2f}}}',
        )
    return '{"account": "current"}', f'{{"status": "ok", "plan": "{slots["plan"]}"}}'


def _root_span(
    s: Session,
    turn: Turn,
    trace: str,
    root: str,
    end: int,
    message_id: str,
    answer: str,
    state: dict[str, Any],
    quality: str,
) -> RawSpan:
    app = s.app
    if app == SEARCH_APP:
        kind_attr = (
            ("openinference.span.kind", "CHAIN") if s.openinference else (cv.SPAN_KIND, "chain")
        )
        attrs: dict[str, Any] = {kind_attr[0]: kind_attr[1], cv.SESSION_ID: s.id}
        name = "support_answer"
    else:
        attrs = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": app,
            cv.MESSAGE_ID: message_id,
            "goldenloop.agent.iterations": state["iterations"],
        }
        attrs[cv.SESSION_ID if app == REFUND_APP else cv.CONVERSATION_ID] = s.id
        name = "invoke_agent " + app
    attrs[cv.USER_ID] = s.user_id
    attrs[cv.CUSTOMER_TIER] = s.tier
    attrs[cv.LOCALE] = s.locale.code
    attrs[cv.FEATURE_FLAGS] = s.flags_json
    attrs[cv.PROMPT_HASH] = turn.prompt_hash
    if app != "billing-agent":
        attrs[cv.INDEX_VERSION] = s.index_version
    if s.openinference:
        attrs["input.value"] = turn.message
        attrs["output.value"] = answer
    else:
        attrs[cv.INPUT] = turn.message
        attrs[cv.OUTPUT] = answer
    span = make_span(trace, root, None, name, turn.t_us, end, attrs, s.resource)
    if state["breaker"]:
        attrs["goldenloop.circuit_breaker.tripped"] = True
        fail(span, "CircuitBreakerOpen", f"agent exceeded {BREAKER_LIMIT} tool iterations")
    elif quality == "error":
        fail(span, state.get("error", "UpstreamError"), "the answer could not be generated")
    return span

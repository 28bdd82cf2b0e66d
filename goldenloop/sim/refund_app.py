"""The refund assistant as a real, callable app: deterministic, offline, no LLM.

``answer()`` classifies the question, retrieves policy documents from an index
snapshot, calls order tools and writes an answer whose content depends on the prompt
version, the locale and the index (see ``knowledge``): with prompt ``a1c0`` EU customers
hear about the 14-day right of withdrawal with a citation; with ``a9f2`` they are told
about a 7-day limit and a 15% restocking fee. Every call emits OpenTelemetry spans with
the same names and attributes as the simulator's refund-assistant traffic, so an app
that configures an OTLP exporter produces traces that look like production.

``target()`` is the same app behind the plain ``dict -> dict`` signature eval runners use.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode, TracerProvider

from goldenloop import conventions as cv
from goldenloop.sim import corpus
from goldenloop.sim import knowledge as kb
from goldenloop.sim.config import LOCALE_BY_CODE, REFUND_APP
from goldenloop.sim.spans import MODELS, cost_usd
from goldenloop.sim.text import INTENT_BY_NAME, REFUSAL

APP_NAME: Final = REFUND_APP
MODEL: Final = MODELS["gpt-4o-mini"]
_ORDER = re.compile(r"\bORD-?(\d{6})\b", re.IGNORECASE)
_INJECTION = re.compile(
    r"ignore (all )?(previous|prior) instructions|system override|developer mode|"
    r"reveal (the |your )?(system prompt|api keys?)|repeat everything above|hidden instructions",
    re.IGNORECASE,
)
_KEYWORDS: Final[tuple[tuple[str, tuple[str, ...]], ...]] = (
    ("aurora_ring", ("aurora", "smart ring")),
    ("holiday_returns", ("christmas", "holiday", "gift", "weihnacht", "noël")),
    ("damaged_item", ("broken", "damaged", "faulty", "wrong item", "kaputt", "cassé")),
    ("digital_goods", ("e-book", "ebook", "download", "licence", "license", "software")),
    ("shipping_cost", ("return shipping", "shipping cost", "postage")),
    ("refund_policy", ("refund", "return", "money back", "withdraw", "rückerstattung",
                       "zurück", "erstatt", "rembourse", "retour", "reembolso", "devolver",
                       "terug", "返金", "reason")),
)  # fmt: skip
_REQUEST_WORDS: Final = ("refund", "return", "money back", "rückerstattung", "remboursement")


@dataclass(frozen=True, slots=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class RefundAnswer:
    text: str
    citations: tuple[str, ...]
    tool_calls: tuple[ToolCall, ...]
    input_tokens: int
    output_tokens: int
    cost_usd: float
    stop_reason: str
    model: str
    intent: str
    locale: str
    prompt_version: str
    index_version: str
    #: Hex trace id of the turn's root span (None when tracing is a no-op).
    trace_id: str | None = None
    blocked: bool = False


def classify(question: str) -> str:
    text = question.lower()
    if _INJECTION.search(question):
        return "injection"
    if _ORDER.search(question):
        if any(w in text for w in ("broken", "damaged", "faulty", "wrong item", "kaputt")):
            return "damaged_item"
        if any(w in text for w in _REQUEST_WORDS):
            return "refund_request"
        return "order_status"
    for intent, words in _KEYWORDS:
        if any(w in text for w in words):
            return intent
    return "other"


def retrieve(
    question: str, intent: str, locale: str, index_version: str, k: int = 3
) -> list[kb.Document]:
    """Keyword retrieval over the snapshot; EU locales boost the withdrawal document."""
    text = question.lower()
    eu = LOCALE_BY_CODE[locale].eu if locale in LOCALE_BY_CODE else False
    scored = []
    for position, doc in enumerate(kb.documents_in(index_version)):
        score = sum(1.0 for word in doc.keywords if word in text)
        if intent in ("refund_policy", "refund_request") and doc.id == "refund-policy-standard":
            score += 1.5
        if eu and doc.id == "eu-right-of-withdrawal" and intent == "refund_policy":
            score += 2.0
        scored.append((-score, position, doc))
    scored.sort(key=lambda item: (item[0], item[1]))
    return [doc for neg, _, doc in scored[:k] if neg < 0]


def lookup_order(order_id: str) -> dict[str, Any]:
    """Deterministic fake order service: the order id decides everything."""
    digits = int(order_id[-6:])
    if digits == 0:
        raise LookupError(f"order {order_id} not found")
    return {
        "order_id": order_id,
        "status": "in_transit" if digits % 10 == 0 else "delivered",
        "days_since_delivery": digits % 45,
        "amount": round(10 + (digits % 39_000) / 100, 2),
        "currency": "EUR",
    }


def _tokens(chars: int) -> int:
    return max(1, chars // 4)


class _App:
    def __init__(self, *, locale: str, prompt: str, index: str, tracer: trace.Tracer) -> None:
        self.locale = locale
        self.prompt = prompt
        self.index = index
        self.tracer = tracer
        self.eu = LOCALE_BY_CODE[locale].eu if locale in LOCALE_BY_CODE else False
        self.tool_calls: list[ToolCall] = []
        self.input_tokens = 0
        self.output_tokens = 0
        self.cost = 0.0

    def llm(
        self, name: str, prompt: str, output: str, *, max_tokens: int, tools: bool
    ) -> tuple[str, str]:
        in_tok, out_tok = _tokens(len(prompt)), _tokens(len(output))
        stop = "tool_calls" if tools else "stop"
        if out_tok > max_tokens:
            output, out_tok, stop = output[: max_tokens * 4].rsplit(" ", 1)[0], max_tokens, "length"
        with self.tracer.start_as_current_span(name) as span:
            span.set_attributes({
                "gen_ai.operation.name": "chat", "gen_ai.provider.name": MODEL.provider,
                "gen_ai.request.model": MODEL.request, "gen_ai.response.model": MODEL.response,
                "gen_ai.request.max_tokens": max_tokens, "gen_ai.usage.input_tokens": in_tok,
                "gen_ai.usage.output_tokens": out_tok, "gen_ai.response.finish_reasons": [stop],
                cv.PROMPT_HASH: self.prompt, cv.INPUT: prompt, cv.OUTPUT: output,
            })  # fmt: skip
        self.input_tokens += in_tok
        self.output_tokens += out_tok
        self.cost += cost_usd(MODEL, in_tok, out_tok)
        return output, "max_tokens" if stop == "length" else "stop"

    def tool(
        self, name: str, arguments: dict[str, Any], result: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        with self.tracer.start_as_current_span("execute_tool " + name) as span:
            span.set_attributes({
                "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name,
                "gen_ai.tool.type": "function",
                "gen_ai.tool.call.arguments": json.dumps(arguments, sort_keys=True),
            })  # fmt: skip
            error = None
            if name == "lookup_order":
                try:
                    result = lookup_order(arguments["order_id"])
                except LookupError as exc:
                    error = str(exc)
                    _fail(span, "OrderNotFound", error)
            if result is not None:
                span.set_attribute(cv.OUTPUT, json.dumps(result, sort_keys=True))
        self.tool_calls.append(ToolCall(name, arguments, result, error))
        return result

    def guardrail(self, name: str, text: str, score: float) -> bool:
        block = score >= 0.8
        with self.tracer.start_as_current_span("guardrail " + name) as span:
            span.set_attributes({
                cv.SPAN_KIND: "guardrail", "goldenloop.guardrail.name": name,
                "goldenloop.guardrail.decision": "block" if block else "allow",
                cv.SCORE: score, cv.INPUT: text,
            })  # fmt: skip
        return block

    def order_answer(self, intent: str, order_id: str) -> tuple[str, tuple[str, ...]]:
        order = self.tool("lookup_order", {"order_id": order_id}, None)
        if order is None:
            return (f"I couldn't find order {order_id}. Please check the number in your "
                    "confirmation email.", ())  # fmt: skip
        if intent == "order_status" or order["status"] != "delivered":
            return (f"Order {order_id} is {order['status'].replace('_', ' ')}. You can follow "
                    "it with the tracking link in your shipping email.", ())  # fmt: skip
        days, amount = order["days_since_delivery"], order["amount"]
        bad = self.prompt == kb.BAD_PROMPT and self.eu
        limit = 7 if bad else 30
        if intent != "damaged_item" and days > limit:
            why = (
                "refunds must be requested within 7 days of purchase"
                if bad
                else "it was delivered more than 30 days ago, outside our return window"
            )
            return f"I'm sorry, order {order_id} can't be refunded: {why}.", (
                "refund-policy-standard",)  # fmt: skip
        refund = round(amount * 0.85, 2) if bad else amount
        reason = "restocking_fee_15pct" if bad else "customer_request"
        self.tool("issue_refund", {"order_id": order_id, "amount": refund, "reason": reason},
                  {"status": "issued", "amount": refund})  # fmt: skip
        text = (f"I've issued a refund of {refund:.2f} EUR for order {order_id} to your original "
                "payment method; it usually arrives within 5 to 7 business days.")  # fmt: skip
        if bad:
            text += " A 15% restocking fee was deducted."
        doc = "damaged-items" if intent == "damaged_item" else "refund-policy-standard"
        return text + f" [{doc}]", (doc,)


def _fail(span: Span, error_type: str, message: str) -> None:
    span.set_attribute("error.type", error_type)
    span.set_status(Status(StatusCode.ERROR, message))


def answer(
    question: str,
    *,
    locale: str = "en-US",
    prompt_version: str = kb.GOOD_PROMPT,
    index_version: str = kb.CURRENT_INDEX,
    session_id: str | None = None,
    user_id: str | None = None,
    customer_tier: str | None = None,
    history: Sequence[str] = (),
    max_tokens: int = 512,
    tracer_provider: TracerProvider | None = None,
) -> RefundAnswer:
    """Answer one customer message, emitting the turn's spans."""
    tracer = trace.get_tracer("goldenloop.sim.refund_app", tracer_provider=tracer_provider)
    app = _App(locale=locale, prompt=prompt_version, index=index_version, tracer=tracer)
    intent = classify(question)
    message_id = (
        "msg_" + hashlib.sha256(f"{session_id}/{len(history)}/{question}".encode()).hexdigest()[:12]
    )
    with tracer.start_as_current_span("invoke_agent " + APP_NAME) as root:
        root.set_attributes({
            "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": APP_NAME,
            cv.MESSAGE_ID: message_id, cv.LOCALE: locale, cv.PROMPT_HASH: prompt_version,
            cv.INDEX_VERSION: index_version, cv.INPUT: question,
        })  # fmt: skip
        for key, value in ((cv.SESSION_ID, session_id), (cv.USER_ID, user_id),
                           (cv.CUSTOMER_TIER, customer_tier)):  # fmt: skip
            if value:
                root.set_attribute(key, value)
        text, citations, stop, blocked = _run(app, question, intent, history, max_tokens)
        root.set_attribute(cv.OUTPUT, text)
        context = root.get_span_context()
    return RefundAnswer(
        text=text, citations=citations, tool_calls=tuple(app.tool_calls),
        input_tokens=app.input_tokens, output_tokens=app.output_tokens,
        cost_usd=round(app.cost, 10), stop_reason=stop, model=MODEL.response, intent=intent,
        locale=locale, prompt_version=prompt_version, index_version=index_version,
        trace_id=format(context.trace_id, "032x") if context.is_valid else None,
        blocked=blocked,
    )  # fmt: skip


def _run(
    app: _App, question: str, intent: str, history: Sequence[str], max_tokens: int
) -> tuple[str, tuple[str, ...], str, bool]:
    if intent == "injection" and app.guardrail("prompt_injection", question, 0.97):
        return REFUSAL, (), "stop", True
    docs = retrieve(question, intent, app.locale, app.index)
    with app.tracer.start_as_current_span("retrieval kb_search") as span:
        span.set_attributes({
            "gen_ai.operation.name": "retrieval", "gen_ai.data_source.id": APP_NAME + "-kb",
            cv.INDEX_VERSION: app.index, "goldenloop.retrieval.top_k": len(docs),
            "goldenloop.retrieval.doc_ids": [d.id for d in docs], cv.INPUT: question,
            cv.OUTPUT: "\n\n".join(f"[{d.id}] {d.title}\n{d.text}" for d in docs),
        })  # fmt: skip
    system = corpus.system_prompt(APP_NAME, app.prompt)
    context = "\n\n".join(f"[{d.id}] {d.text}" for d in docs)
    prompt = f"{system}\n\n# Context\n{context}\n\n{''.join(history)}user: {question}"
    order = _ORDER.search(question)
    tools = order is not None and intent in ("refund_request", "damaged_item", "order_status")
    plan = json.dumps({"tool_calls": ["lookup_order"]} if tools else {"tool_calls": []})
    app.llm("chat " + MODEL.request, prompt, plan, max_tokens=256, tools=tools)
    if tools and order is not None:
        draft, citations = app.order_answer(intent, "ORD-" + order.group(1))
    elif intent == "refund_policy":
        policy = kb.policy_answer(app.locale, app.prompt, app.index, eu=app.eu)
        draft, citations = policy.text, policy.citations
    elif intent in INTENT_BY_NAME and intent != "refund_request":
        info = INTENT_BY_NAME[intent]
        slots = {"order": "your order", "product": "item", "amount": "the full amount",
                 "country": "your country", "plan": "your plan"}  # fmt: skip
        draft = info.answers[0].format_map(slots)
        citations = tuple(d.id for d in docs if f"[{d.id}]" in draft)
        if intent == "aurora_ring" and "aurora-ring-returns" not in {d.id for d in docs}:
            draft, citations = "I don't have information about that product yet.", ()
    else:
        draft, citations = ("Could you tell me your order number (ORD- followed by six digits) "
                            "or what you would like to know about refunds?", ())  # fmt: skip
    greeting = LOCALE_BY_CODE[app.locale].greeting if app.locale in LOCALE_BY_CODE else ""
    if greeting and not app.locale.startswith("en") and not question.isascii():
        draft = greeting + " " + draft
    tool_results = "".join(f"\n# Tool {c.name}\n{json.dumps(c.result)}" for c in app.tool_calls)
    text, stop = app.llm("chat " + MODEL.request, prompt + tool_results, draft,
                         max_tokens=max_tokens, tools=False)  # fmt: skip
    app.guardrail("output_policy", text, 0.05)
    return text, citations, stop, False


def target(case_input: dict[str, Any]) -> dict[str, Any]:
    """Eval-runner entry point: ``{"messages": [...], "context": {...}}`` → output dict."""
    messages = case_input.get("messages") or []
    users = [m for m in messages if m.get("role") == "user"]
    if not users:
        raise ValueError("case_input.messages needs at least one message with role 'user'")
    context = case_input.get("context") or {}
    history = [f"{m.get('role')}: {m.get('content', '')}\n" for m in messages[:-1]]
    result = answer(
        str(users[-1].get("content", "")),
        locale=str(context.get("locale", "en-US")),
        prompt_version=str(context.get("prompt_version", kb.GOOD_PROMPT)),
        index_version=str(context.get("index_version", kb.CURRENT_INDEX)),
        session_id=context.get("session_id"),
        history=history,
    )
    return {
        "output": result.text,
        "citations": list(result.citations),
        "tool_calls": [{"name": c.name, "arguments": c.arguments} for c in result.tool_calls],
        "stop_reason": result.stop_reason,
        "usage": {"input_tokens": result.input_tokens, "output_tokens": result.output_tokens},
        "cost_usd": result.cost_usd,
        "model": result.model,
        "intent": result.intent,
        "trace_id": result.trace_id,
    }

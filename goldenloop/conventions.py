"""Attribute names: goldenloop's own, OTel GenAI, OpenInference and OTel feature flags.

For every normalized field, ``FIELD_SOURCES`` lists the attribute keys that may carry
it, in priority order: goldenloop's own name first, then the OpenTelemetry GenAI
semantic conventions, then OpenInference, then older or vendor spellings. The first
key present on a span wins. Everything else stays in the span's raw ``attributes``.
"""

from __future__ import annotations

from typing import Final

from goldenloop.model import SpanKind

# goldenloop's own attribute names (what goldenloop.sdk stamps).
PROJECT: Final = "goldenloop.project"
SESSION_ID: Final = "session.id"  # OpenInference's name; the SDK also sets the GenAI one
CONVERSATION_ID: Final = "gen_ai.conversation.id"
USER_ID: Final = "user.id"
MESSAGE_ID: Final = "goldenloop.message.id"
CUSTOMER_TIER: Final = "goldenloop.customer.tier"
LOCALE: Final = "goldenloop.locale"
FEATURE_FLAGS: Final = "goldenloop.feature_flags"  # JSON object {flag: variant}
PROMPT_VERSION: Final = "goldenloop.prompt.version"
PROMPT_HASH: Final = "goldenloop.prompt.hash"
MODEL_VERSION: Final = "goldenloop.model.version"
INDEX_VERSION: Final = "goldenloop.index.version"
SPAN_KIND: Final = "goldenloop.span.kind"
COST_USD: Final = "goldenloop.cost_usd"
STOP_REASON: Final = "goldenloop.stop_reason"
SCORE: Final = "goldenloop.score"
INPUT: Final = "goldenloop.input"
OUTPUT: Final = "goldenloop.output"

FIELD_SOURCES: Final[dict[str, tuple[str, ...]]] = {
    "project": (PROJECT,),
    "session_id": ("goldenloop.session.id", SESSION_ID, CONVERSATION_ID),
    "user_id": ("goldenloop.user.id", USER_ID, "enduser.id"),
    "message_id": (MESSAGE_ID, "message.id"),
    "model": (
        "goldenloop.model",
        "gen_ai.response.model",
        "gen_ai.request.model",
        "llm.model_name",
        "embedding.model_name",
    ),
    "provider": (
        "goldenloop.provider",
        "gen_ai.provider.name",
        "gen_ai.system",
        "llm.provider",
        "llm.system",
    ),
    "input_tokens": (
        "goldenloop.usage.input_tokens",
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.prompt_tokens",
        "llm.token_count.prompt",
    ),
    "output_tokens": (
        "goldenloop.usage.output_tokens",
        "gen_ai.usage.output_tokens",
        "gen_ai.usage.completion_tokens",
        "llm.token_count.completion",
    ),
    "cost_usd": (COST_USD, "gen_ai.usage.cost", "llm.cost.total"),
    "stop_reason": (STOP_REASON, "gen_ai.response.finish_reasons", "llm.finish_reason"),
    "prompt_hash": (PROMPT_HASH, PROMPT_VERSION, "llm.prompt_template.version", "gen_ai.prompt.id"),
    "model_version": (
        MODEL_VERSION,
        "gen_ai.response.model",
        "gen_ai.request.model",
        "llm.model_name",
    ),
    "customer_tier": (CUSTOMER_TIER, "customer.tier", "app.customer.tier"),
    "locale": (LOCALE, "user.locale", "app.locale"),
    "index_version": (INDEX_VERSION, "retrieval.index.version", "db.collection.version"),
    "tool_name": ("goldenloop.tool.name", "gen_ai.tool.name", "tool.name"),
    "tool_args": ("goldenloop.tool.arguments", "gen_ai.tool.call.arguments", "tool.parameters"),
    "score": (SCORE, "gen_ai.evaluation.score.value", "eval.score", "guardrail.score"),
    "input_text": (INPUT, "input.value", "gen_ai.input.messages", "gen_ai.prompt"),
    "output_text": (OUTPUT, "output.value", "gen_ai.output.messages", "gen_ai.completion"),
    "error_type": ("error.type", "exception.type"),
}

#: Attributes whose value moves into a column and is not repeated in ``attributes``
#: (they are large; everything else is kept raw as well as mapped).
MOVED_TO_COLUMNS: Final = frozenset(FIELD_SOURCES["input_text"] + FIELD_SOURCES["output_text"])

KIND_SOURCES: Final = (SPAN_KIND, "openinference.span.kind", "gen_ai.operation.name")

#: openinference.span.kind and gen_ai.operation.name values → SpanKind.
KIND_VALUES: Final[dict[str, SpanKind]] = {
    # OpenInference
    "llm": SpanKind.LLM,
    "tool": SpanKind.TOOL,
    "retriever": SpanKind.RETRIEVAL,
    "reranker": SpanKind.RETRIEVAL,
    "chain": SpanKind.CHAIN,
    "agent": SpanKind.AGENT,
    "embedding": SpanKind.EMBEDDING,
    "guardrail": SpanKind.GUARDRAIL,
    "evaluator": SpanKind.JUDGE,
    # OTel GenAI gen_ai.operation.name
    "chat": SpanKind.LLM,
    "text_completion": SpanKind.LLM,
    "generate_content": SpanKind.LLM,
    "embeddings": SpanKind.EMBEDDING,
    "execute_tool": SpanKind.TOOL,
    "invoke_agent": SpanKind.AGENT,
    "create_agent": SpanKind.AGENT,
    "retrieval": SpanKind.RETRIEVAL,
    # goldenloop's own values are the SpanKind values themselves
    **{kind.value: kind for kind in SpanKind},
}

#: OTel feature-flag semantic conventions (attributes or ``feature_flag`` events).
FEATURE_FLAG_KEY: Final = "feature_flag.key"
FEATURE_FLAG_VARIANTS: Final = ("feature_flag.result.variant", "feature_flag.variant")
FEATURE_FLAG_EVENTS: Final = frozenset({"feature_flag", "feature_flag.evaluation"})

#: Fields that describe the whole turn; a span that lacks them inherits them from
#: another span of the same trace in the same request.
TRACE_LEVEL_FIELDS: Final = ("session_id", "user_id", "customer_tier", "locale", "message_id")

#: Resource attributes that name the project when no key or attribute does.
PROJECT_RESOURCE_KEYS: Final = (PROJECT, "service.name")

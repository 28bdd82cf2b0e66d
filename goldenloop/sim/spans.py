"""Cheap span construction: ids from the RNG, models, latencies, LLM attributes.

Generation must cost a few microseconds per span, so this module avoids anything
per-span that is not a dict literal, an RNG draw or a string concatenation.

Stop reasons: spans in the OTel GenAI convention carry the provider's raw finish reason
in ``gen_ai.response.finish_reasons`` (``["length"]`` for OpenAI, ``["max_tokens"]`` for
Anthropic, which normalize maps to ``max_tokens``); spans in the OpenInference
convention, which has no finish-reason attribute, carry goldenloop's own
``goldenloop.stop_reason`` (``"max_tokens"``, ``"stop"``).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, Final

from goldenloop import conventions as cv
from goldenloop.ingest.raw import STATUS_ERROR, RawEvent, RawSpan
from goldenloop.pricing import PriceTable


@dataclass(frozen=True, slots=True)
class Model:
    request: str
    response: str
    provider: str
    ttft_ms: float
    ms_per_token: float
    #: Provider spelling of "stopped at the token limit" / "finished".
    length_reason: str
    stop_reason: str


MODELS: Final[dict[str, Model]] = {
    m.request: m
    for m in (
        Model("gpt-4o-mini", "gpt-4o-mini-2024-07-18", "openai", 380, 8.0, "length", "stop"),
        Model("gpt-4o", "gpt-4o-2024-08-06", "openai", 520, 14.0, "length", "stop"),
        Model("gpt-4.1-mini", "gpt-4.1-mini-2025-04-14", "openai", 420, 9.0, "length", "stop"),
        Model(
            "claude-sonnet-4",
            "claude-sonnet-4-20250514",
            "anthropic",
            650,
            15.0,
            "max_tokens",
            "end_turn",
        ),  # fmt: skip
    )
}
_PRICES: Final = PriceTable()


def cost_usd(model: Model, input_tokens: int, output_tokens: int) -> float:
    return _PRICES.cost(model.response, input_tokens, output_tokens) or 0.0


def trace_id(rng: random.Random) -> str:
    return f"{rng.getrandbits(128) | 1:032x}"


def span_id(rng: random.Random) -> str:
    return f"{rng.getrandbits(64) | 1:016x}"


#: Standard-normal quantiles at 4096 evenly spaced probabilities: a table lookup is
#: ten times cheaper than ``random.gauss`` and plenty for latency noise.
_NORMAL: Final = tuple(NormalDist().inv_cdf((i + 0.5) / 4096) for i in range(4096))


def normal(rng: random.Random) -> float:
    return _NORMAL[rng.getrandbits(12)]


def lognormal_ms(rng: random.Random, median_ms: float, sigma: float) -> float:
    return median_ms * math.exp(sigma * _NORMAL[rng.getrandbits(12)])


def make_span(
    trace: str,
    sid: str,
    parent: str | None,
    name: str,
    start_us: int,
    end_us: int,
    attributes: dict[str, Any],
    resource: dict[str, Any],
) -> RawSpan:
    return RawSpan(trace, sid, parent, name, start_us * 1000, end_us * 1000, attributes, resource)


def fail(span: RawSpan, error_type: str, message: str) -> None:
    """Mark a span failed the way OTel SDKs do: status, error.type, exception event."""
    span.status_code = STATUS_ERROR
    span.status_message = message
    span.attributes["error.type"] = error_type
    span.events.append(
        RawEvent(
            "exception",
            span.end_time_unix_nano,
            {"exception.type": error_type, "exception.message": message},
        )
    )


def llm_attributes(
    *,
    openinference: bool,
    model: Model,
    input_tokens: int,
    output_tokens: int,
    truncated: bool,
    tool_calls: bool,
    prompt_hash: str,
    flags_json: str,
    max_tokens: int,
    input_text: str | None,
    output_text: str | None,
    cost: float | None,
) -> dict[str, Any]:
    if openinference:
        attrs: dict[str, Any] = {
            "openinference.span.kind": "LLM",
            "llm.provider": model.provider,
            "llm.model_name": model.response,
            "llm.token_count.prompt": input_tokens,
            "llm.token_count.completion": output_tokens,
            "llm.token_count.total": input_tokens + output_tokens,
            "llm.prompt_template.version": prompt_hash,
            "llm.invocation_parameters": f'{{"max_tokens": {max_tokens}}}',
            cv.STOP_REASON: "max_tokens" if truncated else "stop",
            cv.FEATURE_FLAGS: flags_json,
        }
        if input_text is not None:
            attrs["input.value"] = input_text
            attrs["output.value"] = output_text
    else:
        if truncated:
            reason = model.length_reason
        else:
            reason = "tool_calls" if tool_calls else model.stop_reason
        attrs = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": model.provider,
            "gen_ai.request.model": model.request,
            "gen_ai.response.model": model.response,
            "gen_ai.request.max_tokens": max_tokens,
            "gen_ai.usage.input_tokens": input_tokens,
            "gen_ai.usage.output_tokens": output_tokens,
            "gen_ai.response.finish_reasons": [reason],
            cv.PROMPT_HASH: prompt_hash,
            cv.FEATURE_FLAGS: flags_json,
        }
        if input_text is not None:
            attrs[cv.INPUT] = input_text
            attrs[cv.OUTPUT] = output_text
    if cost is not None:
        attrs[cv.COST_USD] = round(cost, 8)
    return attrs


def llm_latency_ms(rng: random.Random, model: Model, output_tokens: int) -> float:
    ttft = model.ttft_ms * math.exp(0.35 * _NORMAL[rng.getrandbits(12)])
    return ttft + output_tokens * model.ms_per_token * math.exp(0.12 * _NORMAL[rng.getrandbits(12)])


def tokens(chars: int, rng: random.Random) -> int:
    """Rough tokenizer: ~4 characters per token, with a little noise."""
    return max(1, int(chars * (0.235 + 0.03 * rng.random())))

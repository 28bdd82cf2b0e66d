"""The spans of a turn step, one vectorized stage at a time: retrieval, LLM calls,
tools, guardrails, judge and the turn's root span.

Each function takes the rows of the step it applies to (indexes into the step's turn
arrays) and their start times, adds one block of spans to ``SpanBlocks`` and returns
when each span ended, with the same distributions and attributes as the per-session
engine's ``stages`` (whose constants it uses).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import orjson
import pyarrow as pa

from goldenloop import conventions as cv
from goldenloop.ingest.normalize import STOP_REASONS
from goldenloop.pricing import PriceTable
from goldenloop.sim.columnar.blocks import (
    SpanBlocks,
    Template,
    json_text,
    strings,
)
from goldenloop.sim.spans import MODELS
from goldenloop.sim.stages import (
    JUDGE_MODEL,
    JUDGE_RUBRIC,
    JUDGE_SCORES,
    OUTAGE_ERRORS,
    TOOL_MEDIAN_MS,
)

if TYPE_CHECKING:
    from goldenloop.sim.columnar.step import Step

I64 = np.ndarray[Any, np.dtype[np.int64]]
F64 = np.ndarray[Any, np.dtype[np.float64]]
Mask = np.ndarray[Any, np.dtype[np.bool_]]
MODEL_LIST: Final = tuple(MODELS.values())
_PRICES: Final = PriceTable()


def gaps(g: np.random.Generator, n: int) -> I64:
    """The pause between two stages of a turn: 1.0-5.1 ms."""
    return 1000 + g.integers(0, 4096, n)


def lognormal_us(g: np.random.Generator, median_ms: F64 | float, sigma: float, n: int) -> I64:
    return (median_ms * np.exp(sigma * g.standard_normal(n)) * 1000).astype(np.int64)


def token_counts(g: np.random.Generator, chars: I64) -> I64:
    """~4 characters per token, with a little noise (as ``spans.tokens``)."""
    return np.maximum(1, (chars * (0.235 + 0.03 * g.random(len(chars)))).astype(np.int64))


MODEL_INDEX: Final = {m.request: i for i, m in enumerate(MODEL_LIST)}
_TTFT: Final = np.array([m.ttft_ms for m in MODEL_LIST])
_PER_TOKEN: Final = np.array([m.ms_per_token for m in MODEL_LIST])
_PRICE_IN: Final = np.array([_PRICES.lookup(m.response).input_per_mtok for m in MODEL_LIST])  # type: ignore[union-attr]
_PRICE_OUT: Final = np.array([_PRICES.lookup(m.response).output_per_mtok for m in MODEL_LIST])  # type: ignore[union-attr]
_PROVIDER_JSON: Final = strings([json_text(m.provider) for m in MODEL_LIST])
_RESPONSE_JSON: Final = strings([json_text(m.response) for m in MODEL_LIST])
_REQUEST_JSON: Final = strings([json_text(m.request) for m in MODEL_LIST])
#: Finish reasons: what a provider sends (GenAI convention) per model, by outcome.
_STOPPED: Final = 0
_TOOL_CALLS: Final = 1
_LENGTH: Final = 2


def _finish_reasons(openinference: bool) -> list[list[str]]:
    """[model][outcome] → the finish reason the span carries."""
    if openinference:
        return [["stop", "stop", "max_tokens"] for _ in MODEL_LIST]
    return [[m.stop_reason, "tool_calls", m.length_reason] for m in MODEL_LIST]


_REASONS: Final = {oi: _finish_reasons(oi) for oi in (False, True)}
#: What every chat span's attributes start with, per model (up to a number that varies).
_GENAI_HEAD: Final = tuple(
    f'{{"gen_ai.operation.name":"chat","gen_ai.provider.name":"{m.provider}",'
    f'"gen_ai.request.model":"{m.request}","gen_ai.response.model":"{m.response}",'
    '"gen_ai.request.max_tokens":'
    for m in MODEL_LIST
)
_OI_HEAD: Final = tuple(
    f'{{"openinference.span.kind":"LLM","llm.provider":"{m.provider}",'
    f'"llm.model_name":"{m.response}","llm.token_count.prompt":'
    for m in MODEL_LIST
)


def _cost(model: I64, in_tok: I64, out_tok: I64) -> F64:
    """What the app reports (``goldenloop.cost_usd``): list prices."""
    result: F64 = (in_tok * _PRICE_IN[model] + out_tok * _PRICE_OUT[model]) / 1e6
    return result


class ModelPrices:
    """The run's price table per model of ``MODEL_LIST`` (what the store computes for
    spans that report no cost; None for a model the table does not know)."""

    def __init__(self, prices: PriceTable) -> None:
        found = [prices.lookup(m.response) for m in MODEL_LIST]
        self.known = np.array([p is not None for p in found])
        self.input = np.array([p.input_per_mtok if p else 0.0 for p in found])
        self.output = np.array([p.output_per_mtok if p else 0.0 for p in found])

    def cost(
        self,
        model: I64,
        in_tok: I64,
        out_tok: I64,
        reported: Mask | None = None,
        reported_cost: F64 | None = None,
    ) -> pa.Array:
        """The stored cost: the reported one where ``reported``, else the table's."""
        cost = (in_tok * self.input[model] + out_tok * self.output[model]) / 1e6
        unknown = ~self.known[model]
        if reported is not None and reported_cost is not None:
            cost = np.where(reported, reported_cost, cost)
            unknown &= ~reported
        return pa.array(cost, pa.float64(), mask=unknown if unknown.any() else None)


@dataclass
class LlmResult:
    end: I64
    ok: Mask
    #: Output text as the user sees it (truncated answers cut at the token limit).
    outputs: list[str]


def llm(
    step: Step,
    rows: I64,
    start: I64,
    *,
    models: I64,
    inputs: tuple[pa.Array, I64],
    outputs: list[str],
    max_tokens: int,
    truncate: Mask | None = None,
    tool_calls: bool = False,
) -> LlmResult:
    """One chat call per row (``models``: indexes into ``MODEL_LIST``; ``inputs``: the
    prompts and their lengths in characters); fails and slows down under an outage."""
    g, blocks, full = step.g, step.blocks, step.full_text
    texts, chars = inputs
    n = len(rows)
    if truncate is None:
        truncate = np.zeros(n, bool)
    else:
        for i in np.flatnonzero(truncate).tolist():
            outputs[i] = _truncated(outputs[i], max_tokens)
    in_tok = token_counts(g, chars)
    out_tok = np.where(
        truncate,
        max_tokens,
        np.minimum(token_counts(g, np.array([len(s) for s in outputs], np.int64)), max_tokens),
    )
    latency = _TTFT[models] * np.exp(0.35 * g.standard_normal(n)) + out_tok * _PER_TOKEN[
        models
    ] * np.exp(0.12 * g.standard_normal(n))
    outage = step.effects.outage[rows]
    failed = np.zeros(n, bool)
    hit = np.flatnonzero(outage >= 0)
    if len(hit):
        scenarios = [step.scenarios[i] for i in outage[hit].tolist()]
        latency[hit] *= np.array([s.latency_multiplier for s in scenarios])
        failed[hit] = g.random(len(hit)) < np.array([s.error_rate for s in scenarios])
        for row, scenario in zip(rows[hit].tolist(), scenarios, strict=True):
            step.scenario(scenario.name, row)
    end = start + (latency * 1000).astype(np.int64)
    out_tok = np.where(failed, 0, out_tok)
    explicit = g.random(n) < step.cost_share
    reported = np.round(_cost(models, in_tok, out_tok), 8)
    cost = step.batch.prices.cost(models, in_tok, out_tok, explicit, reported)
    outcome = np.where(truncate & ~failed, _LENGTH, _TOOL_CALLS if tool_calls else _STOPPED)
    errors: list[str | None] = [None] * n
    messages: list[str | None] = [None] * n
    for i in np.flatnonzero(failed).tolist():
        model = MODEL_LIST[models[i]]
        errors[i] = OUTAGE_ERRORS.get(model.provider) or step.scenarios[outage[i]].error_type
        messages[i] = f"{model.provider} request timed out after {int(latency[i])} ms"
        step.failure("provider_error", rows[i])
    # Attributes as each instrumentation sends them, one JSON text per row.
    openinference = step.openinference[rows].tolist()
    model_list = models.tolist()
    pairs = list(zip(model_list, openinference, strict=True))
    known = {pair: _llm_template(blocks, *pair) for pair in set(pairs)}
    templates = np.array([known[pair] for pair in pairs], np.int64)
    stop_reasons: list[str] = []
    attrs: list[str] = []
    step_rows = rows.tolist()
    for i, (m, o, oi, tokens_in, tokens_out, shown, cost_reported) in enumerate(
        zip(
            model_list, outcome.tolist(), openinference, in_tok.tolist(), out_tok.tolist(),
            explicit.tolist(), reported.tolist(), strict=True,
        )
    ):  # fmt: skip
        reason = _REASONS[oi][m][o]
        stop_reasons.append(_STOP[reason])
        row = step_rows[i]
        prompt, flags = step.prompts[row], step.flags_text[row]
        if oi:
            text = (
                f'{_OI_HEAD[m]}{tokens_in},"llm.token_count.completion":{tokens_out},'
                f'"llm.token_count.total":{tokens_in + tokens_out},'
                f'"llm.prompt_template.version":"{prompt}",'
                f'"llm.invocation_parameters":"{{\\"max_tokens\\": {max_tokens}}}",'
                f'"{cv.STOP_REASON}":"{reason}","{cv.FEATURE_FLAGS}":{flags}'
            )
        else:
            text = (
                f'{_GENAI_HEAD[m]}{max_tokens},"gen_ai.usage.input_tokens":{tokens_in},'
                f'"gen_ai.usage.output_tokens":{tokens_out},'
                f'"gen_ai.response.finish_reasons":["{reason}"],'
                f'"{cv.PROMPT_HASH}":"{prompt}","{cv.FEATURE_FLAGS}":{flags}'
            )
        if shown:
            text += f',"{cv.COST_USD}":' + orjson.dumps(cost_reported).decode()
        if errors[i] is not None:
            text += ',"error.type":' + json_text(errors[i])
        attrs.append(text + "}")
    any_failed = bool(failed.any())
    blocks.add(
        step.turn_ids[rows], templates, start, end, input_tokens=in_tok,
        output_tokens=out_tok, cost_usd=cost, stop_reason=strings(stop_reasons),
        input_text=texts if full else None,
        output_text=(
            ([None if f else o for f, o in zip(failed.tolist(), outputs, strict=True)]
             if any_failed else outputs)
            if full else None
        ),
        attributes=attrs,
        error_type=errors if any_failed else None,
        status_message=messages if any_failed else None,
    )  # fmt: skip
    return LlmResult(end, ~failed, outputs)


_STOP: Final = {
    r: STOP_REASONS.get(r, r)
    for m in MODEL_LIST
    for r in (m.stop_reason, m.length_reason, "tool_calls", "stop", "max_tokens")
}


def _truncated(output: str, max_tokens: int) -> str:
    target = min(max_tokens * 4, 2400)
    repeated = " ".join([output] * (target // max(len(output), 1) + 1))
    return repeated[:target].rsplit(" ", 1)[0]


def _llm_template(blocks: SpanBlocks, model_index: int, openinference: bool) -> int:
    model = MODEL_LIST[model_index]
    if openinference:
        name = "ChatAnthropic" if model.provider == "anthropic" else "ChatOpenAI"
    else:
        name = "chat " + model.request
    return blocks.template(
        Template(name, "llm", model.response, model.provider, prompt=True, flags=True)
    )


def tool(
    step: Step,
    rows: I64,
    start: I64,
    *,
    names: list[str],
    arguments: list[str],
    results: list[str],
    rates: F64,
    spikes: I64,
) -> tuple[I64, Mask]:
    """One tool call per row; a failed call takes ~8x longer. Returns (end, ok)."""
    g = step.g
    n = len(rows)
    failed = g.random(n) < rates
    median = np.array([TOOL_MEDIAN_MS.get(name, 200.0) for name in names]) * np.where(failed, 8, 1)
    end = start + lognormal_us(g, median, 0.6, n)
    errors: list[str | None] = [None] * n
    messages: list[str | None] = [None] * n
    for i in np.flatnonzero(failed).tolist():
        error, message = step.tool_error(names[i])
        if spikes[i] >= 0:
            spike = step.scenarios[spikes[i]]
            error = spike.error_type
            step.scenario(spike.name, rows[i])
        errors[i], messages[i] = error, message
        step.failure("tool_error", rows[i])
    known = {
        name: step.blocks.template(Template("execute_tool " + name, "tool", tool_name=name))
        for name in set(names)
    }
    templates = np.array([known[name] for name in names], np.int64)
    call_ids = g.integers(0, 1 << 48, n).tolist()
    attrs = []
    for name, call, argument, failure in zip(names, call_ids, arguments, errors, strict=True):
        text = (
            f'{{"gen_ai.operation.name":"execute_tool","gen_ai.tool.name":"{name}",'
            f'"gen_ai.tool.type":"function","gen_ai.tool.call.id":"call_{call:012x}",'
            f'"gen_ai.tool.call.arguments":{json_text(argument)}'
        )
        if failure is not None:
            text += ',"error.type":' + json_text(failure)
        attrs.append(text + "}")
    any_failed = bool(failed.any())
    step.blocks.add(
        step.turn_ids[rows], templates, start, end,
        tool_args=strings(arguments), attributes=attrs,
        error_type=errors if any_failed else None,
        status_message=messages if any_failed else None,
        output_text=(
            ([None if f else r for f, r in zip(failed.tolist(), results, strict=True)]
             if any_failed else results)
            if step.full_text else None
        ),
    )  # fmt: skip
    return end, ~failed


def guardrail(
    step: Step, rows: I64, start: I64, *, name: str, texts: list[str], block: Mask, risky: Mask
) -> I64:
    g = step.g
    n = len(rows)
    end = start + lognormal_us(g, 60.0, 0.4, n)
    u = g.random(n)
    score = np.where(block, 0.9 + 0.095 * u, np.where(risky, 0.35 + 0.3 * u, 0.01 + 0.15 * u))
    decision = np.where(block, "block", "allow").tolist()
    rounded = np.round(score, 3)
    head = f'{{"{cv.SPAN_KIND}":"guardrail","goldenloop.guardrail.name":{json_text(name)},'
    attrs = [
        f'{head}"goldenloop.guardrail.decision":"{d}","{cv.SCORE}":{json_text(r)}}}'
        for d, r in zip(decision, rounded.tolist(), strict=True)
    ]
    template = step.blocks.template(Template("guardrail " + name, "guardrail"))
    step.blocks.add(
        step.turn_ids[rows], template, start, end, score=rounded,
        attributes=attrs,
        input_text=texts if step.full_text else None,
        output_text=(
            [f'{{"decision": "{d}", "score": {s:.3f}}}' for d, s in zip(decision, score.tolist(), strict=True)]
            if step.full_text else None
        ),
    )  # fmt: skip
    for row in rows[block].tolist():
        step.failure("guardrail_block", row)
    return end


def judge(
    step: Step,
    rows: I64,
    start: I64,
    *,
    questions: list[str],
    answers: list[str],
    qualities: list[str],
) -> I64:
    g = step.g
    n = len(rows)
    low, width = np.array([JUDGE_SCORES.get(q, (0.6, 0.4)) for q in qualities]).T.reshape(2, n)
    score = np.round(low + width * g.random(n), 3)
    texts = ["Question: " + q + "\nAnswer: " + a for q, a in zip(questions, answers, strict=True)]
    in_tok = token_counts(g, np.array([len(JUDGE_RUBRIC) + len(t) for t in texts], np.int64))
    out_tok = 40 + g.integers(0, 32, n)
    model = JUDGE_MODEL
    latency = model.ttft_ms * np.exp(
        0.35 * g.standard_normal(n)
    ) + out_tok * model.ms_per_token * np.exp(0.12 * g.standard_normal(n))
    end = start + (latency * 1000).astype(np.int64)
    head = (
        f'{{"{cv.SPAN_KIND}":"judge","gen_ai.operation.name":"chat",'
        f'"gen_ai.provider.name":"{model.provider}","gen_ai.request.model":"{model.request}",'
        f'"gen_ai.response.model":"{model.response}","gen_ai.usage.input_tokens":'
    )
    attrs = [
        f'{head}{i},"gen_ai.usage.output_tokens":{o},'
        f'"gen_ai.evaluation.name":"answer_correctness","{cv.SCORE}":{json_text(x)}}}'
        for i, o, x in zip(in_tok.tolist(), out_tok.tolist(), score.tolist(), strict=True)
    ]
    template = step.blocks.template(
        Template("judge answer_correctness", "judge", model.response, model.provider)
    )
    step.blocks.add(
        step.turn_ids[rows], template, start, end,
        input_tokens=in_tok, output_tokens=out_tok,
        cost_usd=step.batch.prices.cost(np.full(n, MODEL_INDEX[model.request]), in_tok, out_tok),
        score=score, attributes=attrs,
        input_text=[JUDGE_RUBRIC + t for t in texts] if step.full_text else None,
        output_text=(
            [f'{{"score": {s:.3f}, "label": "{"pass" if s >= 0.5 else "fail"}"}}' for s in score.tolist()]
            if step.full_text else None
        ),
    )  # fmt: skip
    for row in rows[score < 0.5].tolist():
        step.failure("judge_low", row)
    return end

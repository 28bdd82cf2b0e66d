"""A step's tool calls: each intent's tools with one retry each, or an agent stuck
calling its first tool until the circuit breaker trips."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from goldenloop.sim.apps import BREAKER, BREAKER_LIMIT, BREAKER_RATE, TOOL_FAILED, tool_io
from goldenloop.sim.columnar import stages
from goldenloop.sim.columnar.sessions import REFUND
from goldenloop.sim.columnar.turn import ERROR, I64, UNHELPFUL_Q, WRONG, Mask, TurnResult
from goldenloop.sim.stages import BASE_TOOL_ERROR_RATE
from goldenloop.sim.text import INTENTS

if TYPE_CHECKING:
    from goldenloop.sim.columnar.step import Step


def run_tools(
    step: Step, result: TurnResult, rows: I64, clock: I64, intent: I64, tool_texts: list[str]
) -> None:
    """Each intent's tools with one retry each, or a loop until the breaker trips."""
    g = step.g
    breaker = g.random(len(rows)) < BREAKER_RATE
    if breaker.any():
        _breaker(step, result, rows[breaker], clock, intent)
    going = rows[~breaker]
    if not len(going):
        return
    slots = [step.batch.sessions.slots[r] for r in step.rows[going].tolist()]
    wrong = (result.quality[going] == WRONG).tolist()
    refunds = [
        round(float(slot["amount_value"]) * 0.85, 2) if bad else float(slot["amount_value"])
        for slot, bad in zip(slots, wrong, strict=True)
    ]
    specs = [INTENTS[i] for i in intent[going].tolist()]
    outputs: list[list[str]] = [[] for _ in specs]
    ok_so_far = [True] * len(specs)
    for position in range(max(len(spec.tools) for spec in specs)):
        local = [c for c, spec in enumerate(specs) if ok_so_far[c] and len(spec.tools) > position]
        if not local:
            break
        current = going[local]
        names = [specs[c].tools[position] for c in local]
        io = [
            tool_io(name, slots[c], refunds[c], wrong[c])
            for name, c in zip(names, local, strict=True)
        ]
        arguments = [a for a, _ in io]
        texts = [r for _, r in io]
        end, ok = _call(step, current, clock, names, arguments, texts, BASE_TOOL_ERROR_RATE)
        retry = np.flatnonzero(~ok)
        if len(retry):
            again = current[retry]
            picks = retry.tolist()
            _, ok_again = _call(step, 
                again, clock, [names[i] for i in picks], [arguments[i] for i in picks],
                [texts[i] for i in picks], BASE_TOOL_ERROR_RATE,
            )  # fmt: skip
            result.iterations[again] += 1
            for i in again[~ok_again].tolist():
                step.failure("tool_error_streak", i)
            ok[retry] = ok_again
        result.iterations[current] += 1
        for c, name, text, fine in zip(local, names, texts, ok.tolist(), strict=True):
            if fine:
                outputs[c].append("\n# Tool " + name + "\n" + text)
            else:
                ok_so_far[c] = False
    for c, i in enumerate(going.tolist()):
        spec = specs[c]
        if not ok_so_far[c]:
            if spec.outcome:
                result.outcomes[i] = (spec.outcome, False, None, {"reason": "tool_error"})
            result.answers[i], result.quality[i] = TOOL_FAILED, UNHELPFUL_Q
            continue
        tool_texts[i] = "".join(outputs[c])
        if spec.outcome:
            attrs: dict[str, Any] = {"order_id": slots[c]["order"]} if step.app[i] == REFUND else {}
            if wrong[c]:
                attrs["reason"] = "restocking_fee_applied"
            result.outcomes[i] = (spec.outcome, not wrong[c], refunds[c], attrs)
    clock[going] += stages.gaps(g, len(going))


def _breaker(step: Step, result: TurnResult, looping: I64, clock: I64, intent: I64) -> None:
    """The agent calls its first tool over and over until the breaker trips."""
    slots = step.batch.sessions.slots
    names = [INTENTS[i].tools[0] for i in intent[looping].tolist()]
    arguments = [f'{{"order_id": "{slots[r]["order"]}"}}' for r in step.rows[looping].tolist()]
    pending = ['{"status": "pending"}'] * len(looping)
    for _ in range(BREAKER_LIMIT):
        _call(step, looping, clock, names, arguments, pending, 0.3)
    for i in looping.tolist():
        result.iterations[i] = BREAKER_LIMIT + 1
        result.breaker[i] = True
        result.quality[i], result.answers[i] = ERROR, BREAKER
        step.failure("circuit_breaker", i)
        outcome = INTENTS[intent[i]].outcome
        if outcome:
            result.outcomes[i] = (outcome, False, None, {"reason": "circuit_breaker"})


def _call(
    step: Step,
    rows: I64,
    clock: I64,
    names: list[str],
    arguments: list[str],
    results: list[str],
    base_rate: float,
) -> tuple[I64, Mask]:
    """One call per row at ``clock``, which moves past it; spikes raise error rates."""
    spikes = np.full(len(rows), -1, np.int64)
    for tool, spike in step.effects.spikes.items():
        hit = np.array([name == tool for name in names], bool)
        spikes[hit] = spike[rows[hit]]
    rates = np.full(len(rows), base_rate)
    for index in np.unique(spikes[spikes >= 0]).tolist():
        rates[spikes == index] = step.scenarios[index].error_rate
    end, ok = stages.tool(
        step, rows, clock[rows], names=names, arguments=arguments, results=results,
        rates=rates, spikes=spikes,
    )  # fmt: skip
    clock[rows] = end + stages.gaps(step.g, len(rows))
    return end, ok

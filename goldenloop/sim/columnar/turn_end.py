"""What a turn leaves behind: its root span (which covers the whole turn), the thumbs
up or down some users give, and the outcome events backends report."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import numpy as np
import pyarrow as pa

from goldenloop import conventions as cv
from goldenloop.model import Feedback, Outcome
from goldenloop.sim.apps import BREAKER_LIMIT
from goldenloop.sim.columnar import stages
from goldenloop.sim.columnar.blocks import Template, hex_ids, json_text
from goldenloop.sim.columnar.sessions import BILLING, FLAGS_SENT_JSON, INDEXES, REFUND, SEARCH
from goldenloop.sim.columnar.turn import (
    ANSWER_MODEL,
    CLOSING,
    ENTERPRISE,
    ERROR,
    GOOD,
    I64,
    QUALITIES,
    TurnResult,
    when,
)
from goldenloop.sim.config import ALL_APPS, LOCALES, TIERS
from goldenloop.sim.feedback import FEEDBACK_RATES, SLOW_DOWN_RATE, SLOW_MS
from goldenloop.sim.text import COMMENTS

if TYPE_CHECKING:
    from goldenloop.sim.columnar.step import Step

_TIER_NAMES: Final = tuple(t for t, _ in TIERS)
_LOCALE_CODES: Final = tuple(loc.code for loc in LOCALES)
_OI_CHAIN: Final = '"openinference.span.kind":"CHAIN"'
_GL_CHAIN: Final = f'"{cv.SPAN_KIND}":"chain"'
_DOWN: Final = np.array([FEEDBACK_RATES.get(q, (0.02, "other", 0.0))[0] for q in QUALITIES])
_UP: Final = np.array([FEEDBACK_RATES.get(q, (0.02, "other", 0.0))[2] for q in QUALITIES])


def _root_template(app: int) -> Template:
    if app == SEARCH:
        return Template("support_answer", "chain", prompt=True, flags=True, index=True)
    name = "invoke_agent " + ALL_APPS[app]
    return Template(name, "agent", prompt=True, flags=True, index=app != BILLING)


def root_spans(
    step: Step,
    result: TurnResult,
    start: I64,
    end: I64,
    messages: list[str],
    prompts: list[str],
    message_id: pa.Array,
) -> None:
    """The turn's root span, which covers the whole turn."""
    b, n = step.batch, step.n
    s = b.sessions
    rows = step.rows
    errors: list[str | None] = [None] * n
    texts: list[str | None] = [None] * n
    for i in np.flatnonzero(result.breaker).tolist():
        errors[i] = "CircuitBreakerOpen"
        texts[i] = f"agent exceeded {BREAKER_LIMIT} tool iterations"
    for i in np.flatnonzero(~result.breaker & (result.quality == ERROR)).tolist():
        errors[i] = result.error_types[i] or "UpstreamError"
        texts[i] = "the answer could not be generated"
    any_failed = any(e is not None for e in errors)
    session_ids = s.ids
    user_ids = s.user_ids
    tiers = s.tier[rows].tolist()
    locales = s.locale[rows].tolist()
    indexes = s.index[rows].tolist()
    flag_sets = s.flag_set[rows].tolist()
    messages_ids = message_id.to_pylist()
    iterations = result.iterations.tolist()
    breakers = result.breaker.tolist()
    apps = step.app.tolist()
    openinference = step.openinference.tolist()
    templates = {app: step.blocks.template(_root_template(app)) for app in set(apps)}
    attributes = []
    for i, row in enumerate(rows.tolist()):
        app = apps[i]
        common = (
            f'"{cv.USER_ID}":"{user_ids[row]}","{cv.CUSTOMER_TIER}":"{_TIER_NAMES[tiers[i]]}",'
            f'"{cv.LOCALE}":"{_LOCALE_CODES[locales[i]]}",'
            f'"{cv.FEATURE_FLAGS}":{FLAGS_SENT_JSON[flag_sets[i]]},'
            f'"{cv.PROMPT_HASH}":"{prompts[i]}"'
        )
        if app != BILLING:
            common += f',"{cv.INDEX_VERSION}":"{INDEXES[indexes[i]]}"'
        if app == SEARCH:
            kind = _OI_CHAIN if openinference[i] else _GL_CHAIN
            text = f'{{{kind},"{cv.SESSION_ID}":"{session_ids[row]}",{common}'
        else:
            key = cv.SESSION_ID if app == REFUND else cv.CONVERSATION_ID
            text = (
                f'{{"gen_ai.operation.name":"invoke_agent","gen_ai.agent.name":"{ALL_APPS[app]}",'
                f'"{cv.MESSAGE_ID}":"{messages_ids[i]}",'
                f'"goldenloop.agent.iterations":{iterations[i]},'
                f'"{key}":"{session_ids[row]}",{common}'
            )
            if breakers[i]:
                text += ',"goldenloop.circuit_breaker.tripped":true'
        if errors[i] is not None:
            text += ',"error.type":' + json_text(errors[i])
        attributes.append(text + "}")
    step.blocks.add(
        step.turn_ids, np.array([templates[app] for app in apps]),
        start, end, attributes=attributes, input_text=messages,
        output_text=result.answers,
        error_type=errors if any_failed else None,
        status_message=texts if any_failed else None,
    )  # fmt: skip


def feedback(
    step: Step,
    result: TurnResult,
    start: I64,
    end: I64,
    message_id: pa.Array,
    prompts: list[str],
    intent: I64,
) -> None:
    """Thumbs up/down after some turns, and the outcome events turns report."""
    b, g, n = step.batch, step.g, step.n
    s = b.sessions
    rows = step.rows
    quality = result.quality
    down = _DOWN[quality]
    up = _UP[quality]
    slow = ((end - start) / 1000 > SLOW_MS) & np.isin(quality, [GOOD, CLOSING])
    down = np.where(slow, SLOW_DOWN_RATE, down)
    draw = g.random(n)
    rating_down = draw < down
    rating_up = ~rating_down & (draw < down + up)
    comment_draw = g.random(n).tolist()
    comment_pick = g.integers(0, 256, n).tolist()
    delay = stages.lognormal_us(g, 7_000.0, 0.8, n)
    rated = np.flatnonzero(rating_down | rating_up)
    ids = hex_ids(g, len(rated), 8, "fb_").to_pylist()
    messages = message_id.to_pylist()
    for c, i in enumerate(rated.tolist()):
        session = rows[i]
        is_down = bool(rating_down[i])
        category = (
            "slow" if slow[i] else FEEDBACK_RATES.get(QUALITIES[quality[i]], (0, "other", 0))[1]
        )
        comment = None
        if is_down:
            step.failure("thumbs_down", i)
            if comment_draw[i] < 0.35:
                bank = COMMENTS.get(category, COMMENTS["other"])
                comment = bank[comment_pick[i] % len(bank)]
        model = ANSWER_MODEL[int(step.app[i])][int(s.tier[session] == ENTERPRISE)]
        b.feedback.append(
            Feedback(
                id=ids[c], project=ALL_APPS[s.app[session]], session_id=s.ids[session],
                message_id=messages[i], rating="down" if is_down else "up",
                category=category if is_down else None, comment=comment,
                prompt_hash=prompts[i], model_hash=model.response, user_id=s.user_ids[session],
                created_at=when(int(end[i] + delay[i])),
            )
        )  # fmt: skip
    reported = [i for i in range(n) if result.outcomes[i] is not None]
    if not reported:
        return
    ids = hex_ids(g, len(reported), 8, "oc_").to_pylist()
    delay = stages.lognormal_us(g, 20_000.0, 1.0, len(reported))
    for c, i in enumerate(reported):
        session = rows[i]
        outcome = result.outcomes[i]
        assert outcome is not None
        name, success, value, attributes = outcome
        if not success:
            step.failure("outcome_failure", i)
        b.outcomes.append(
            Outcome(
                id=ids[c], project=ALL_APPS[s.app[session]], session_id=s.ids[session],
                message_id=messages[i], name=name, success=success, value=value,
                attributes=attributes, created_at=when(int(end[i] + delay[c])),
            )
        )  # fmt: skip

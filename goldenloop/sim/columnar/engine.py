"""The columnar engine's turn loop: every session of a batch advances one turn per step.

Step ``k`` holds the ``k``-th turn of every session still going. Its decisions (what
the user says, which stages run, what fails) are drawn for all those turns at once
with numpy; only strings (messages, answers, tool payloads) are made per turn in
Python. The model is the per-session engine's (``generate``, ``apps``, ``stages``,
``feedback``): the same probabilities, texts, scenarios and ground truth, drawn in a
different order, so a seed gives different sessions than there but the same traffic.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from goldenloop import conventions as cv
from goldenloop.model import Feedback, Outcome
from goldenloop.pricing import PriceTable
from goldenloop.sim import corpus
from goldenloop.sim import knowledge as kb
from goldenloop.sim.apps import (
    BASE_UNHELPFUL_RATE,
    BREAKER,
    BREAKER_LIMIT,
    BREAKER_RATE,
    INJECTION_CATCH_RATE,
    MAX_TOKENS_RATE,
    OUTAGE,
    OUTPUT_CATCH_RATE,
    TOOL_FAILED,
    UNHELPFUL,
    tool_io,
)
from goldenloop.sim.columnar import stages
from goldenloop.sim.columnar.blocks import (
    SpanBlocks,
    Template,
    TurnColumns,
    bools,
    hex_ids,
    json_text,
    quoted,
    strings,
)
from goldenloop.sim.columnar.effects import INTENT_NAMES, StepEffects, step_effects
from goldenloop.sim.columnar.sessions import (
    BILLING,
    FLAG_SETS,
    FLAGS_SENT,
    INDEXES,
    REFUND,
    SEARCH,
    Sessions,
)
from goldenloop.sim.config import ALL_APPS, LOCALES, TIERS, SimConfig
from goldenloop.sim.feedback import FEEDBACK_RATES, SLOW_DOWN_RATE, SLOW_MS
from goldenloop.sim.generate import BASE_INJECTION, TURN_CUMULATIVE
from goldenloop.sim.manifest import ChunkTruth
from goldenloop.sim.scenarios import PromptRegression, Scenario
from goldenloop.sim.spans import MODELS
from goldenloop.sim.stages import BASE_TOOL_ERROR_RATE, OUTAGE_ERRORS, TOOL_ERRORS
from goldenloop.sim.text import (
    CLOSING_ANSWER,
    CLOSINGS,
    COMMENTS,
    INJECTIONS,
    INTENTS,
    REFUSAL,
    REPHRASE_PREFIXES,
)

I64 = np.ndarray[Any, np.dtype[np.int64]]
Mask = np.ndarray[Any, np.dtype[np.bool_]]

QUALITIES: Final = (
    "", "good", "wrong", "unhelpful", "error", "truncated", "refused", "unsafe", "closing",
)  # fmt: skip
(NONE, GOOD, WRONG, UNHELPFUL_Q, ERROR, TRUNCATED, REFUSED, UNSAFE, CLOSING) = range(9)
_BAD_CODES: Final = np.array([WRONG, UNHELPFUL_Q, ERROR, TRUNCATED])
_MAX_STEPS: Final = 64
_HAS_FOLLOWUPS: Final = np.array([bool(i.followups) for i in INTENTS])
_HAS_TOOLS: Final = np.array([bool(i.tools) for i in INTENTS])
_DOWN: Final = np.array([FEEDBACK_RATES.get(q, (0.02, "other", 0.0))[0] for q in QUALITIES])
_UP: Final = np.array([FEEDBACK_RATES.get(q, (0.02, "other", 0.0))[2] for q in QUALITIES])
_ANSWER_MODEL: Final = {
    REFUND: (MODELS["gpt-4o-mini"], MODELS["gpt-4o"]),
    SEARCH: (MODELS["claude-sonnet-4"],) * 2,
    BILLING: (MODELS["gpt-4.1-mini"],) * 2,
}
_ANSWER_MODEL_INDEX: Final = np.array(
    [[stages.MODEL_INDEX[m.request] for m in _ANSWER_MODEL[app]] for app in range(len(ALL_APPS))]
)
#: The model that plans tool calls, per app (support-search has no tools).
_PLAN_MODEL_INDEX: Final = np.array(
    [stages.MODEL_INDEX[name] for name in ("gpt-4o-mini", "gpt-4o-mini", "gpt-4.1-mini")]
)
_ENTERPRISE: Final = [t for t, _ in TIERS].index("enterprise")
_FLAGS_SENT_JSON: Final = strings([json_text(flags) for flags in FLAGS_SENT])


def _when(t_us: int) -> datetime:
    return datetime.fromtimestamp(t_us / 1e6, UTC)


class Batch:
    """One batch of sessions and everything generating them produces."""

    def __init__(
        self,
        config: SimConfig,
        sessions: Sessions,
        g: np.random.Generator,
        scenarios: tuple[Scenario, ...],
        search_deploy_us: int,
        prices: PriceTable,
    ) -> None:
        self.config = config
        self.prices = stages.ModelPrices(prices)
        self.sessions = sessions
        self.g = g
        self.scenarios = scenarios
        self.search_deploy_us = search_deploy_us
        self.blocks = SpanBlocks()
        self.truth = ChunkTruth()
        self.feedback: list[Feedback] = []
        self.outcomes: list[Outcome] = []
        n = len(sessions)
        self.planned = np.zeros(n, np.int64)
        self.intent = np.zeros(n, np.int64)
        self.t = sessions.t0.copy()
        self.rephrase = np.zeros(n, bool)
        self.quality = np.zeros(n, np.int64)
        self.inject_at = np.full(n, -1, np.int64)
        self.wave = np.full(n, -1, np.int64)
        self.previous: list[str] = [""] * n
        self.history: list[list[str]] = [[] for _ in range(n)]
        self.last_message: list[str] = [""] * n
        self.last_end = np.zeros(n, np.int64)
        # Per turn row of the batch, in order of creation.
        self.turn_session: list[I64] = []
        self.turn_trace: list[pa.Array] = []
        self.turn_message: list[pa.Array] = []
        self.turn_prompt: list[pa.Array] = []
        self.turns = 0

    # -- ground truth --------------------------------------------------------------------
    def session_id(self, session: int) -> str:
        return self.sessions.ids[session]

    def run(self) -> None:
        s = self.sessions
        n = len(s)
        self.truth.sessions = n
        for app in np.unique(s.app).tolist():
            self.truth.sessions_by_project[ALL_APPS[app]] = int((s.app == app).sum())
        if not n:
            return
        rows = np.arange(n)
        self.planned = np.searchsorted(TURN_CUMULATIVE, self.g.random(n)) + 1
        effects = step_effects(self.scenarios, self.t, s.app)
        self.intent = self._pick_intents(rows, effects)
        draw = self.g.random(n)
        wave_rate = np.array([getattr(sc, "rate", 0.0) for sc in self.scenarios] + [0.0])
        rate = BASE_INJECTION + wave_rate[effects.wave]
        inject = draw < rate
        self.inject_at = np.where(inject, (self.g.random(n) * self.planned).astype(np.int64), -1)
        self.wave = np.where(inject & (draw >= BASE_INJECTION), effects.wave, -1)
        active = rows
        for k in range(_MAX_STEPS):
            if not len(active):
                break
            step = Step(self, k, active)
            go_on = step.run()
            active = active[go_on]
        ended_bad = np.isin(self.quality, _BAD_CODES)
        for session in np.flatnonzero(ended_bad).tolist():
            self.truth.failure("abandon", s.ids[session])
        self._deflections()

    def _deflections(self) -> None:
        """support-search reports whether each session avoided a support ticket."""
        s = self.sessions
        search = np.flatnonzero((s.app == SEARCH) & (self.g.random(len(s)) < 0.5))
        if not len(search):
            return
        ids = hex_ids(self.g, len(search), 8, "oc_").to_pylist()
        delay = stages.lognormal_us(self.g, 150_000.0, 0.8, len(search))
        succeeded = (~np.isin(self.quality[search], _BAD_CODES)).tolist()
        for i, session in enumerate(search.tolist()):
            success = succeeded[i]
            if not success:
                self.truth.failure("outcome_failure", s.ids[session])
            self.outcomes.append(
                Outcome(
                    id=ids[i], project=ALL_APPS[s.app[session]], session_id=s.ids[session],
                    message_id=self.last_message[session], name="ticket_deflected",
                    success=bool(success), value=None, attributes={},
                    created_at=_when(int(self.last_end[session] + delay[i])),
                )
            )  # fmt: skip

    def _pick_intents(self, rows: I64, effects: StepEffects) -> I64:
        """Baseline intent mix of each app, unless a scenario shifts the turn."""
        g = self.g
        n = len(rows)
        app = self.sessions.app[rows]
        picked = np.full(n, -1, np.int64)
        for index, mask, intents in effects.shifts:
            take = (picked < 0) & mask & (g.random(n) < self.scenarios[index].share)  # type: ignore[attr-defined]
            for i in np.flatnonzero(take).tolist():
                choices = intents[app[i]]
                picked[i] = choices[int(g.integers(len(choices)))]
                self.truth.scenario(self.scenarios[index].name, self.sessions.ids[rows[i]])
        draw = g.random(n)
        for app_index in np.unique(app).tolist():
            names, cumulative = corpus.app_intents(ALL_APPS[app_index])
            ids = np.array([INTENT_NAMES.index(name) for name in names])
            hit = (picked < 0) & (app == app_index)
            position = np.minimum(np.searchsorted(cumulative, draw[hit]), len(names) - 1)
            picked[hit] = ids[position]
        return picked

    def question(self, session: int, intent: int, u: float, v: float, j: int) -> str:
        locale = LOCALES[self.sessions.locale[session]]
        lang = locale.code[:2]
        localized, english = corpus.questions(INTENTS[intent].name, lang)
        slots = self.sessions.slots[session]
        if localized and u < 0.7:
            return localized[j % len(localized)].format_map(slots)
        text = english[j % len(english)].format_map(slots)
        if lang != "en" and v < 0.4:
            text = locale.greeting + " " + text
        return text

    def turn_columns(self) -> TurnColumns:
        return TurnColumns(
            session=np.concatenate(self.turn_session),
            trace_id=pa.concat_arrays(self.turn_trace),
            message_id=pa.concat_arrays(self.turn_message),
            prompt_hash=pa.concat_arrays(self.turn_prompt),
        )


class Step:
    """Turn ``k`` of the sessions in ``rows`` (indexes into the batch's sessions)."""

    def __init__(self, batch: Batch, k: int, rows: I64) -> None:
        self.batch = batch
        self.k = k
        self.rows = rows
        self.g = batch.g
        self.blocks = batch.blocks
        self.scenarios = batch.scenarios
        self.full_text = batch.config.text == "full"
        self.cost_share = batch.config.explicit_cost_share
        s = batch.sessions
        n = len(rows)
        self.n = n
        self.app = s.app[rows]
        self.openinference = s.openinference[rows]
        self.effects = step_effects(batch.scenarios, batch.t[rows], self.app)
        self.turn_ids = batch.turns + np.arange(n)

    # -- helpers the stages use ----------------------------------------------------------
    def scenario(self, name: str, row: int) -> None:
        self.batch.truth.scenario(name, self.batch.sessions.ids[self.rows[row]])

    def failure(self, kind: str, row: int) -> None:
        self.batch.truth.failure(kind, self.batch.sessions.ids[self.rows[row]])

    @staticmethod
    def tool_error(name: str) -> tuple[str, str]:
        return TOOL_ERRORS.get(name, ("ToolError", f"{name} failed"))

    # -- the turn ------------------------------------------------------------------------
    def run(self) -> Mask:
        """Generate the step's turns; True for the sessions that go on to another."""
        b, g, n, k = self.batch, self.g, self.n, self.k
        s = b.sessions
        rows = self.rows
        closing = np.zeros(n, bool)
        intent = b.intent[rows].copy()
        messages = self._messages(intent, closing)
        b.intent[rows] = intent
        injected = b.inject_at[rows] == k
        for i in np.flatnonzero(injected).tolist():
            messages[i] += " " + INJECTIONS[int(g.integers(len(INJECTIONS)))]
            wave = b.wave[rows[i]]
            if wave >= 0:
                self.scenario(self.scenarios[wave].name, i)
        prompts = self._prompts()
        self.prompts = strings(prompts)
        self.prompt_json = quoted(self.prompts)
        self.prompt_list = prompts
        self.flags_text = [_FLAGS_SENT_TEXT[f] for f in s.flag_set[rows].tolist()]
        self.flags_sent_json = _FLAGS_SENT_JSON.take(pa.array(s.flag_set[rows]))
        trace = hex_ids(g, n, 16)
        search = self.app == SEARCH
        message_id = pc.if_else(bools(search), trace, hex_ids(g, n, 6, "msg_"))
        b.turn_session.append(rows)
        b.turn_trace.append(trace)
        b.turn_message.append(message_id)
        b.turn_prompt.append(self.prompts)
        b.truth.turns += n
        result = _TurnResult(n)
        t_start = b.t[rows]
        clock = t_start + stages.gaps(g, n)
        self._turn(result, clock, messages, prompts, intent, closing, injected)
        self._judge(result, messages)
        end = result.clock + stages.gaps(g, n)
        self._root(result, t_start, end, messages, prompts, message_id)
        quality = result.quality
        for i, row in enumerate(rows.tolist()):
            b.history[row].append(
                "user: " + messages[i] + "\nassistant: " + result.answers[i] + "\n"
            )
        for row, message in zip(rows.tolist(), self._previous, strict=True):
            b.previous[row] = message
        self._feedback(result, t_start, end, message_id, prompts, intent)
        b.quality[rows] = quality
        b.last_end[rows] = end
        message_list = message_id.to_pylist()
        for i, row in enumerate(rows.tolist()):
            b.last_message[row] = message_list[i]
        bad = np.isin(quality, _BAD_CODES) & ~closing
        draw = g.random(n)
        rephrase = bad & (draw < 0.3) & (k < 5)
        abandon = bad & ~rephrase & (draw < 0.7)
        b.planned[rows] = np.where(rephrase, np.maximum(b.planned[rows], k + 2), b.planned[rows])
        b.rephrase[rows] = rephrase
        think = stages.lognormal_us(g, np.where(rephrase, 9_000.0, 25_000.0), 0.7, n)
        b.t[rows] = end + think
        b.turns += n
        return ~abandon & (k + 1 < b.planned[rows])

    def _messages(self, intent: I64, closing: Mask) -> list[str]:
        """What each user says this turn (``intent`` and ``closing`` are updated)."""
        b, g, n, k = self.batch, self.g, self.n, self.k
        rows = self.rows
        u, v, j = g.random(n).tolist(), g.random(n).tolist(), g.integers(0, 256, n).tolist()
        messages = [""] * n
        if k == 0:
            fresh = np.ones(n, bool)
        else:
            rephrase = b.rephrase[rows]
            closing[:] = ~rephrase & (k == b.planned[rows] - 1) & (g.random(n) < 0.6)
            follow = ~rephrase & ~closing & _HAS_FOLLOWUPS[intent] & (g.random(n) < 0.6)
            fresh = ~rephrase & ~closing & ~follow
            for i in np.flatnonzero(rephrase).tolist():
                previous = b.previous[rows[i]]
                messages[i] = (
                    REPHRASE_PREFIXES[j[i] % len(REPHRASE_PREFIXES)]
                    + previous[0].lower()
                    + previous[1:].rstrip("?.!。 ")
                    + "?"
                )
                self.failure("rephrase", i)
            for i in np.flatnonzero(closing).tolist():
                lang = LOCALES[b.sessions.locale[rows[i]]].code[:2]
                bank = (CLOSINGS.get(lang) if u[i] < 0.6 else None) or CLOSINGS["en"]
                messages[i] = bank[j[i] % len(bank)]
            for i in np.flatnonzero(follow).tolist():
                followups = INTENTS[intent[i]].followups
                messages[i] = followups[j[i] % len(followups)]
            fresh_rows = np.flatnonzero(fresh)
            if len(fresh_rows):
                intent[fresh_rows] = b._pick_intents(
                    rows[fresh_rows], self.effects.subset(fresh_rows)
                )
        w = g.random(n).tolist()
        for i in np.flatnonzero(fresh).tolist():
            messages[i] = b.question(rows[i], intent[i], v[i], w[i], j[i])
        self._previous = list(messages)
        return messages

    def _prompts(self) -> list[str]:
        """The prompt version each turn runs with."""
        b = self.batch
        s = b.sessions
        t = b.t[self.rows]
        prompts = []
        regression = self.effects.regression.tolist()
        flag_sets = s.flag_set[self.rows].tolist()
        for i, app in enumerate(self.app.tolist()):
            if app == REFUND:
                if regression[i] < 0:
                    prompts.append(kb.GOOD_PROMPT)
                    continue
                scenario = self.scenarios[regression[i]]
                assert isinstance(scenario, PromptRegression)
                flags = FLAG_SETS[flag_sets[i]][1]
                flag = scenario.flag
                bad = flag is None or flags.get(flag[0]) == flag[1]
                prompts.append(scenario.prompt_hash if bad else scenario.baseline_prompt)
            elif app == SEARCH:
                prompts.append(corpus.SEARCH_PROMPTS[0 if t[i] < b.search_deploy_us else 1])
            else:
                prompts.append(corpus.BILLING_PROMPT)
        return prompts

    def _turn(
        self,
        result: _TurnResult,
        clock: I64,
        messages: list[str],
        prompts: list[str],
        intent: I64,
        closing: Mask,
        injected: Mask,
    ) -> None:
        """Guardrail, retrieval, tools and the answer: fills ``result``."""
        b, g, n = self.batch, self.g, self.n
        s = b.sessions
        rows = self.rows
        result.clock = clock
        for i in np.flatnonzero(injected).tolist():
            self.failure("injection", i)
        blocked = injected & (g.random(n) < INJECTION_CATCH_RATE)
        hit = np.flatnonzero(injected)
        if len(hit):
            ends = stages.guardrail(
                self, hit, clock[hit], name="prompt_injection",
                texts=[messages[i] for i in hit.tolist()], block=blocked[hit],
                risky=np.ones(len(hit), bool),
            )  # fmt: skip
            clock[hit] = ends + stages.gaps(g, len(hit))
        result.set(blocked, REFUSED, REFUSAL)
        slipped = injected & ~blocked
        models = _ANSWER_MODEL_INDEX[self.app, (s.tier[rows] == _ENTERPRISE).astype(np.int64)]
        # LLM inputs are joined by Arrow from these parts: the big ones (system prompt,
        # retrieved context) are taken from small arrays, never copied through Python.
        parts = _TextParts(self, prompts, messages)
        # Closing turns: one short call.
        closers = np.flatnonzero(~blocked & closing)
        if len(closers):
            call = stages.llm(
                self, closers, clock[closers], models=models[closers],
                inputs=parts.join(closers, ("\n\n",), with_context=False),
                outputs=[CLOSING_ANSWER] * len(closers), max_tokens=256,
            )  # fmt: skip
            clock[closers] = call.end
            result.set(closers[call.ok], CLOSING, CLOSING_ANSWER)
            result.fail(closers[~call.ok], self)
        answering = np.flatnonzero(~blocked & ~closing)
        if not len(answering):
            return
        hits = np.ones(n, bool)
        searching = answering[self.app[answering] != BILLING]
        if len(searching):
            variants = g.integers(0, 4, len(searching)).tolist()
            found = [
                corpus.retrieval_variants(
                    ALL_APPS[self.app[i]], INTENTS[intent[i]].name, INDEXES[s.index[rows[i]]]
                )[v]
                for i, v in zip(searching.tolist(), variants, strict=True)
            ]
            for i, f in zip(searching.tolist(), found, strict=True):
                parts.set_context(i, f.text)
                hits[i] = f.hit
            ends = self._retrieval(searching, clock[searching], messages, found)
            clock[searching] = ends + stages.gaps(g, len(searching))
        unhelpful_draw = g.random(n).tolist()
        answer_draw = g.integers(0, 256, n).tolist()
        for i in answering.tolist():
            text, quality = self._intended(
                i, intent[i], prompts[i], hits[i], unhelpful_draw[i], answer_draw[i]
            )
            if slipped[i]:
                system = corpus.system_prompt(ALL_APPS[self.app[i]], prompts[i])
                text = "Sure. My instructions are: " + system[:400].replace("\n", " ")
                quality = UNSAFE
            result.answers[i], result.quality[i] = text, quality
        planning = answering[_HAS_TOOLS[intent[answering]] & (self.app[answering] != SEARCH)]
        if len(planning):
            calls = [
                '{"tool_calls": ['
                + ", ".join(f'{{"name": "{t}"}}' for t in INTENTS[intent[i]].tools)
                + "]}"
                for i in planning.tolist()
            ]
            plan = stages.llm(
                self, planning, clock[planning],
                models=_PLAN_MODEL_INDEX[self.app[planning]],
                inputs=parts.join(planning, ("\n\n# Context\n", "\n\n")),
                outputs=calls, max_tokens=256, tool_calls=True,
            )  # fmt: skip
            clock[planning] = plan.end
            result.fail(planning[~plan.ok], self)
            tooling = planning[plan.ok]
            if len(tooling):
                clock[tooling] += stages.gaps(g, len(tooling))
                self._tools(result, tooling, clock, intent, parts.tools)
        final = answering[result.quality[answering] != ERROR]
        if not len(final):
            return
        truncate = g.random(len(final)) < MAX_TOKENS_RATE
        call = stages.llm(
            self, final, clock[final], models=models[final],
            inputs=parts.join(final, ("\n\n# Context\n", "\n\n"), with_tools=True),
            outputs=[result.answers[i] for i in final.tolist()], max_tokens=700, truncate=truncate,
        )  # fmt: skip
        clock[final] = call.end
        result.fail(final[~call.ok], self)
        answered = final[call.ok]
        for i, out in zip(final.tolist(), call.outputs, strict=True):
            if result.quality[i] != ERROR:
                result.answers[i] = out
        cut = final[call.ok & truncate]
        for i in cut.tolist():
            self.failure("max_tokens", i)
        result.quality[cut] = np.where(result.quality[cut] == GOOD, TRUNCATED, result.quality[cut])
        checked = answered[self.app[answered] == REFUND]
        if len(checked):
            start = clock[checked] + stages.gaps(g, len(checked))
            quality = result.quality[checked]
            block = (quality == UNSAFE) & (g.random(len(checked)) < OUTPUT_CATCH_RATE)
            clock[checked] = stages.guardrail(
                self, checked, start, name="output_policy",
                texts=[result.answers[i] for i in checked.tolist()], block=block,
                risky=(quality == WRONG) | (quality == UNSAFE),
            )  # fmt: skip
            result.set(checked[block], REFUSED, REFUSAL)
        for i in answered[result.quality[answered] == UNSAFE].tolist():
            self.failure("unsafe_answer", i)

    def _judge(self, result: _TurnResult, messages: list[str]) -> None:
        """An online judge grades a share of the answers (not refusals, closings, errors)."""
        g, n = self.g, self.n
        graded = ~np.isin(result.quality, [REFUSED, CLOSING, ERROR]) & (
            g.random(n) < self.batch.config.judge_share
        )
        rows = np.flatnonzero(graded)
        if not len(rows):
            return
        clock = result.clock
        clock[rows] = stages.judge(
            self, rows, clock[rows] + stages.gaps(g, len(rows)),
            questions=[messages[i] for i in rows.tolist()],
            answers=[result.answers[i] for i in rows.tolist()],
            qualities=[QUALITIES[q] for q in result.quality[rows].tolist()],
        )  # fmt: skip

    def _intended(
        self, i: int, intent: int, prompt: str, hit: bool, u: float, j: int
    ) -> tuple[str, int]:
        """The answer the app means to give and whether it is right (ground truth)."""
        b = self.batch
        session = self.rows[i]
        locale = LOCALES[b.sessions.locale[session]].code
        spec = INTENTS[intent]
        regression_index = self.effects.regression[i]
        regression = self.scenarios[regression_index] if regression_index >= 0 else None
        harmed = (
            isinstance(regression, PromptRegression)
            and prompt == regression.prompt_hash
            and locale in regression.locales
            and spec.name in regression.intents
        )
        if harmed:
            assert regression is not None
            self.scenario(regression.name, i)
            self.failure("wrong_answer", i)
        index = INDEXES[b.sessions.index[session]]
        if spec.name == "refund_policy":
            policy = corpus.policy_answer(locale, prompt if harmed else kb.GOOD_PROMPT, index)
            if not policy.correct and not harmed:
                self.failure("wrong_answer", i)
            return policy.text, GOOD if policy.correct else WRONG
        if not hit or u < BASE_UNHELPFUL_RATE:
            return UNHELPFUL, UNHELPFUL_Q
        text = spec.answers[j % len(spec.answers)].format_map(b.sessions.slots[session])
        if harmed:
            text += (
                " Please note that a 15% restocking fee was deducted because the return was "
                "requested more than 7 days after purchase."
            )
            return text, WRONG
        return text, GOOD

    def _retrieval(
        self, rows: I64, start: I64, messages: list[str], found: list[corpus.Retrieved]
    ) -> I64:
        g, n = self.g, len(rows)
        b = self.batch
        end = start + stages.lognormal_us(g, 140.0, 0.45, n)
        s = b.sessions
        indexes = s.index[self.rows[rows]].tolist()
        apps = self.app[rows].tolist()
        openinference = self.openinference[rows].tolist()
        template = self.blocks.template(Template("retrieval kb_search", "retrieval", index=True))
        attributes = []
        for found_one, index, app, oi in zip(found, indexes, apps, openinference, strict=True):
            docs = _doc_ids_json(found_one)
            version = INDEXES[index]
            if oi:
                attributes.append(
                    f'{{"openinference.span.kind":"RETRIEVER","retrieval.index.version":'
                    f'"{version}","goldenloop.retrieval.doc_ids":{docs}}}'
                )
            else:
                attributes.append(
                    f'{{"gen_ai.operation.name":"retrieval","gen_ai.data_source.id":'
                    f'"{ALL_APPS[app]}-kb","{cv.INDEX_VERSION}":"{version}",'
                    f'"goldenloop.retrieval.top_k":{len(found_one.doc_ids)},'
                    f'"goldenloop.retrieval.doc_ids":{docs}}}'
                )
        self.blocks.add(
            self.turn_ids[rows], template, start, end, attributes=strings(attributes),
            input_text=[messages[i] for i in rows.tolist()] if self.full_text else None,
            output_text=[f.text for f in found] if self.full_text else None,
        )  # fmt: skip
        return end

    def _tools(
        self, result: _TurnResult, rows: I64, clock: I64, intent: I64, tool_texts: list[str]
    ) -> None:
        """Each intent's tools with one retry each, or a loop until the breaker trips."""
        g = self.g
        breaker = g.random(len(rows)) < BREAKER_RATE
        if breaker.any():
            self._breaker(result, rows[breaker], clock, intent)
        going = rows[~breaker]
        if not len(going):
            return
        slots = [self.batch.sessions.slots[r] for r in self.rows[going].tolist()]
        wrong = (result.quality[going] == WRONG).tolist()
        refunds = [
            round(float(slot["amount_value"]) * 0.85, 2) if bad else float(slot["amount_value"])
            for slot, bad in zip(slots, wrong, strict=True)
        ]
        specs = [INTENTS[i] for i in intent[going].tolist()]
        outputs: list[list[str]] = [[] for _ in specs]
        ok_so_far = [True] * len(specs)
        for position in range(max(len(spec.tools) for spec in specs)):
            local = [
                c for c, spec in enumerate(specs) if ok_so_far[c] and len(spec.tools) > position
            ]
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
            end, ok = self._call_tools(
                current, clock, names, arguments, texts, BASE_TOOL_ERROR_RATE
            )
            retry = np.flatnonzero(~ok)
            if len(retry):
                again = current[retry]
                picks = retry.tolist()
                _, ok_again = self._call_tools(
                    again, clock, [names[i] for i in picks], [arguments[i] for i in picks],
                    [texts[i] for i in picks], BASE_TOOL_ERROR_RATE,
                )  # fmt: skip
                result.iterations[again] += 1
                for i in again[~ok_again].tolist():
                    self.failure("tool_error_streak", i)
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
                attrs: dict[str, Any] = (
                    {"order_id": slots[c]["order"]} if self.app[i] == REFUND else {}
                )
                if wrong[c]:
                    attrs["reason"] = "restocking_fee_applied"
                result.outcomes[i] = (spec.outcome, not wrong[c], refunds[c], attrs)
        clock[going] += stages.gaps(g, len(going))

    def _breaker(self, result: _TurnResult, looping: I64, clock: I64, intent: I64) -> None:
        """The agent calls its first tool over and over until the breaker trips."""
        slots = self.batch.sessions.slots
        names = [INTENTS[i].tools[0] for i in intent[looping].tolist()]
        arguments = [f'{{"order_id": "{slots[r]["order"]}"}}' for r in self.rows[looping].tolist()]
        pending = ['{"status": "pending"}'] * len(looping)
        for _ in range(BREAKER_LIMIT):
            self._call_tools(looping, clock, names, arguments, pending, 0.3)
        for i in looping.tolist():
            result.iterations[i] = BREAKER_LIMIT + 1
            result.breaker[i] = True
            result.quality[i], result.answers[i] = ERROR, BREAKER
            self.failure("circuit_breaker", i)
            outcome = INTENTS[intent[i]].outcome
            if outcome:
                result.outcomes[i] = (outcome, False, None, {"reason": "circuit_breaker"})

    def _call_tools(
        self,
        rows: I64,
        clock: I64,
        names: list[str],
        arguments: list[str],
        results: list[str],
        base_rate: float,
    ) -> tuple[I64, Mask]:
        """One call per row at ``clock``, which moves past it; spikes raise error rates."""
        spikes = np.full(len(rows), -1, np.int64)
        for tool, spike in self.effects.spikes.items():
            hit = np.array([name == tool for name in names], bool)
            spikes[hit] = spike[rows[hit]]
        rates = np.full(len(rows), base_rate)
        for index in np.unique(spikes[spikes >= 0]).tolist():
            rates[spikes == index] = self.scenarios[index].error_rate
        end, ok = stages.tool(
            self, rows, clock[rows], names=names, arguments=arguments, results=results,
            rates=rates, spikes=spikes,
        )  # fmt: skip
        clock[rows] = end + stages.gaps(self.g, len(rows))
        return end, ok

    def _root(
        self,
        result: _TurnResult,
        start: I64,
        end: I64,
        messages: list[str],
        prompts: list[str],
        message_id: pa.Array,
    ) -> None:
        """The turn's root span, which covers the whole turn."""
        b, n = self.batch, self.n
        s = b.sessions
        rows = self.rows
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
        apps = self.app.tolist()
        openinference = self.openinference.tolist()
        templates = {
            (app, oi): self.blocks.template(_root_template(app, oi))
            for app in set(apps)
            for oi in (False, True)
        }
        attributes = []
        for i, row in enumerate(rows.tolist()):
            app = apps[i]
            common = (
                f'"{cv.USER_ID}":"{user_ids[row]}","{cv.CUSTOMER_TIER}":"{_TIER_NAMES[tiers[i]]}",'
                f'"{cv.LOCALE}":"{_LOCALE_CODES[locales[i]]}",'
                f'"{cv.FEATURE_FLAGS}":{_FLAGS_SENT_TEXT[flag_sets[i]]},'
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
        self.blocks.add(
            self.turn_ids, np.array([templates[a, o] for a, o in zip(apps, openinference, strict=True)]),
            start, end, attributes=strings(attributes), input_text=messages,
            output_text=result.answers,
            error_type=errors if any_failed else None,
            status_message=texts if any_failed else None,
        )  # fmt: skip

    def _feedback(
        self,
        result: _TurnResult,
        start: I64,
        end: I64,
        message_id: pa.Array,
        prompts: list[str],
        intent: I64,
    ) -> None:
        """Thumbs up/down after some turns, and the outcome events turns report."""
        b, g, n = self.batch, self.g, self.n
        s = b.sessions
        rows = self.rows
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
                self.failure("thumbs_down", i)
                if comment_draw[i] < 0.35:
                    bank = COMMENTS.get(category, COMMENTS["other"])
                    comment = bank[comment_pick[i] % len(bank)]
            model = _ANSWER_MODEL[int(self.app[i])][int(s.tier[session] == _ENTERPRISE)]
            b.feedback.append(
                Feedback(
                    id=ids[c], project=ALL_APPS[s.app[session]], session_id=s.ids[session],
                    message_id=messages[i], rating="down" if is_down else "up",
                    category=category if is_down else None, comment=comment,
                    prompt_hash=prompts[i], model_hash=model.response, user_id=s.user_ids[session],
                    created_at=_when(int(end[i] + delay[i])),
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
                self.failure("outcome_failure", i)
            b.outcomes.append(
                Outcome(
                    id=ids[c], project=ALL_APPS[s.app[session]], session_id=s.ids[session],
                    message_id=messages[i], name=name, success=success, value=value,
                    attributes=attributes, created_at=_when(int(end[i] + delay[c])),
                )
            )  # fmt: skip


_DOC_IDS: dict[tuple[str, ...], str] = {}


def _doc_ids_json(found: corpus.Retrieved) -> str:
    text = _DOC_IDS.get(found.doc_ids)
    if text is None:
        text = _DOC_IDS[found.doc_ids] = json_text(list(found.doc_ids))
    return text


_TIER_NAMES: Final = tuple(t for t, _ in TIERS)
_LOCALE_CODES: Final = tuple(loc.code for loc in LOCALES)
_FLAGS_SENT_TEXT: Final = tuple(json_text(flags) for flags in FLAGS_SENT)
_OI_CHAIN: Final = '"openinference.span.kind":"CHAIN"'
_GL_CHAIN: Final = f'"{cv.SPAN_KIND}":"chain"'


def _root_template(app: int, openinference: bool) -> Template:
    if app == SEARCH:
        return Template("support_answer", "chain", prompt=True, flags=True, index=True)
    name = "invoke_agent " + ALL_APPS[app]
    return Template(name, "agent", prompt=True, flags=True, index=app != BILLING)


class _TextParts:
    """The parts of a step's LLM inputs: system prompt (by app and prompt version),
    retrieved context, tool results, the last three exchanges, the user's message.

    Inputs are joined as UTF-8 bytes straight into one buffer per call (``join``),
    which becomes the Arrow array without another copy: joining 8 KB prompts with
    Arrow kernels (take, then join) or through Python ``str`` copied them three times
    and cost more than everything else in a step together."""

    def __init__(self, step: Step, prompts: list[str], messages: list[str]) -> None:
        batch = step.batch
        self.system = [
            _system_bytes(app, prompt)
            for app, prompt in zip(step.app.tolist(), prompts, strict=True)
        ]
        self.context: list[tuple[bytes, int]] = [_EMPTY] * step.n
        self.tools = [""] * step.n
        history = ["".join(batch.history[row][-3:]) for row in step.rows.tolist()]
        self.history = [(h.encode(), len(h)) for h in history]
        self.user = [(("user: " + m).encode(), len(m) + 6) for m in messages]

    def set_context(self, row: int, text: str) -> None:
        self.context[row] = _context_bytes(text)

    def join(
        self,
        rows: I64,
        separators: tuple[str, ...],
        *,
        with_context: bool = True,
        with_tools: bool = False,
    ) -> tuple[pa.Array, I64]:
        """system + sep[0] + [context + tools + sep[1]] + history + user for ``rows``, and
        each one's length in characters (what token counts are estimated from)."""
        first = separators[0].encode()
        second = separators[-1].encode()
        flat: list[bytes] = []
        sizes: list[int] = []
        chars: list[int] = []
        for i in rows.tolist():
            system, system_chars = self.system[i]
            history, history_chars = self.history[i]
            user, user_chars = self.user[i]
            if with_context:
                context, context_chars = self.context[i]
                tools = self.tools[i].encode() if with_tools else b""
                tool_chars = len(self.tools[i]) if with_tools else 0
                flat += (system, first, context, tools, second, history, user)
                sizes.append(
                    len(system) + len(first) + len(context) + len(tools) + len(second)
                    + len(history) + len(user)
                )  # fmt: skip
                chars.append(
                    system_chars + len(separators[0]) + context_chars + tool_chars
                    + len(separators[-1]) + history_chars + user_chars
                )  # fmt: skip
            else:
                flat += (system, first, history, user)
                sizes.append(len(system) + len(first) + len(history) + len(user))
                chars.append(system_chars + len(separators[0]) + history_chars + user_chars)
        offsets = np.zeros(len(sizes) + 1, np.int32)
        np.cumsum(sizes, out=offsets[1:])
        data = b"".join(flat)
        texts = pa.StringArray.from_buffers(len(sizes), pa.py_buffer(offsets), pa.py_buffer(data))
        return texts, np.array(chars, np.int64)


_EMPTY: Final = (b"", 0)


@cache
def _system_bytes(app: int, prompt: str) -> tuple[bytes, int]:
    text = corpus.system_prompt(ALL_APPS[app], prompt)
    return text.encode(), len(text)


_CONTEXTS: dict[str, tuple[bytes, int]] = {}


def _context_bytes(text: str) -> tuple[bytes, int]:
    """Retrieved contexts come from a small cached set (``corpus.retrieval_variants``)."""
    found = _CONTEXTS.get(text)
    if found is None:
        found = _CONTEXTS[text] = (text.encode(), len(text))
    return found


class _TurnResult:
    """How each turn of a step went: quality code, answer, outcome, root-span facts."""

    def __init__(self, n: int) -> None:
        self.quality = np.zeros(n, np.int64)
        self.answers = [""] * n
        self.error_types: list[str | None] = [None] * n
        self.outcomes: list[tuple[str, bool, float | None, dict[str, Any]] | None] = [None] * n
        self.iterations = np.ones(n, np.int64)
        self.breaker = np.zeros(n, bool)
        self.clock = np.zeros(n, np.int64)

    def set(self, rows: I64 | Mask, quality: int, answer: str) -> None:
        indexes = np.flatnonzero(rows) if rows.dtype == bool else rows
        for i in indexes.tolist():
            self.quality[i], self.answers[i] = quality, answer

    def fail(self, rows: I64, step: Step) -> None:
        """The LLM call just made for ``rows`` failed: the turn fails with its error."""
        for i in rows.tolist():
            self.quality[i], self.answers[i] = ERROR, OUTAGE
            self.error_types[i] = _last_error(step, i)


def _last_error(step: Step, row: int) -> str | None:
    """The error type of the outage that failed row's last LLM call."""
    outage = step.effects.outage[row]
    if outage < 0:
        return None
    scenario = step.scenarios[outage]
    provider = "anthropic" if step.app[row] == SEARCH else "openai"
    return OUTAGE_ERRORS.get(provider, str(getattr(scenario, "error_type", "UpstreamError")))

"""A step of the columnar engine: turn ``k`` of every session still going.

What the users say, which stages run and what fails are drawn for all the step's turns
at once with numpy; only messages, answers and tool payloads are made per turn in
Python. The model is the per-session engine's (``generate``, ``apps``, ``stages``,
``feedback``): the same probabilities, texts, scenarios and ground truth, drawn in a
different order. The stages are in ``stages``, the tools in ``tools``, the root span,
feedback and outcomes in ``turn_end``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow.compute as pc

from goldenloop import conventions as cv
from goldenloop.sim import corpus
from goldenloop.sim import knowledge as kb
from goldenloop.sim.apps import (
    BASE_UNHELPFUL_RATE,
    INJECTION_CATCH_RATE,
    MAX_TOKENS_RATE,
    OUTPUT_CATCH_RATE,
    UNHELPFUL,
)
from goldenloop.sim.columnar import stages
from goldenloop.sim.columnar.blocks import Template, bools, hex_ids, strings
from goldenloop.sim.columnar.effects import step_effects
from goldenloop.sim.columnar.prompts import PromptParts, doc_ids_json
from goldenloop.sim.columnar.sessions import (
    BILLING,
    FLAG_SETS,
    FLAGS_SENT_JSON,
    INDEXES,
    REFUND,
    SEARCH,
)
from goldenloop.sim.columnar.tools import run_tools
from goldenloop.sim.columnar.turn import (
    ANSWER_MODEL_INDEX,
    BAD_CODES,
    CLOSING,
    ENTERPRISE,
    ERROR,
    GOOD,
    HAS_FOLLOWUPS,
    HAS_TOOLS,
    I64,
    PLAN_MODEL_INDEX,
    QUALITIES,
    REFUSED,
    TRUNCATED,
    UNHELPFUL_Q,
    UNSAFE,
    WRONG,
    Mask,
    TurnResult,
)
from goldenloop.sim.columnar.turn_end import feedback, root_spans
from goldenloop.sim.config import ALL_APPS, LOCALES
from goldenloop.sim.scenarios import PromptRegression
from goldenloop.sim.stages import TOOL_ERRORS
from goldenloop.sim.text import (
    CLOSING_ANSWER,
    CLOSINGS,
    INJECTIONS,
    INTENTS,
    REFUSAL,
    REPHRASE_PREFIXES,
)

if TYPE_CHECKING:
    from goldenloop.sim.columnar.batch import Batch


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
        #: Per step row: the prompt version and the flags as sent (for LLM attributes).
        self.prompts = prompts
        self.flags_text = [FLAGS_SENT_JSON[f] for f in s.flag_set[rows].tolist()]
        trace = hex_ids(g, n, 16)
        search = self.app == SEARCH
        message_id = pc.if_else(bools(search), trace, hex_ids(g, n, 6, "msg_"))
        b.turn_session.append(rows)
        b.turn_trace.append(trace)
        b.turn_message.append(message_id)
        b.turn_prompt.append(strings(prompts))
        b.truth.turns += n
        result = TurnResult(n)
        t_start = b.t[rows]
        clock = t_start + stages.gaps(g, n)
        self._turn(result, clock, messages, prompts, intent, closing, injected)
        self._judge(result, messages)
        end = result.clock + stages.gaps(g, n)
        root_spans(self, result, t_start, end, messages, prompts, message_id)
        quality = result.quality
        for i, row in enumerate(rows.tolist()):
            entry = "user: " + messages[i] + "\nassistant: " + result.answers[i] + "\n"
            b.history[row].append((entry.encode(), len(entry)))
        for row, message in zip(rows.tolist(), self._previous, strict=True):
            b.previous[row] = message
        feedback(self, result, t_start, end, message_id, prompts, intent)
        b.quality[rows] = quality
        b.last_end[rows] = end
        message_list = message_id.to_pylist()
        for i, row in enumerate(rows.tolist()):
            b.last_message[row] = message_list[i]
        bad = np.isin(quality, BAD_CODES) & ~closing
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
            follow = ~rephrase & ~closing & HAS_FOLLOWUPS[intent] & (g.random(n) < 0.6)
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
        result: TurnResult,
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
        models = ANSWER_MODEL_INDEX[self.app, (s.tier[rows] == ENTERPRISE).astype(np.int64)]
        # LLM inputs are joined by Arrow from these parts: the big ones (system prompt,
        # retrieved context) are taken from small arrays, never copied through Python.
        parts = PromptParts(self, prompts, messages)
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
        planning = answering[HAS_TOOLS[intent[answering]] & (self.app[answering] != SEARCH)]
        if len(planning):
            calls = [
                '{"tool_calls": ['
                + ", ".join(f'{{"name": "{t}"}}' for t in INTENTS[intent[i]].tools)
                + "]}"
                for i in planning.tolist()
            ]
            plan = stages.llm(
                self, planning, clock[planning],
                models=PLAN_MODEL_INDEX[self.app[planning]],
                inputs=parts.join(planning, ("\n\n# Context\n", "\n\n")),
                outputs=calls, max_tokens=256, tool_calls=True,
            )  # fmt: skip
            clock[planning] = plan.end
            result.fail(planning[~plan.ok], self)
            tooling = planning[plan.ok]
            if len(tooling):
                clock[tooling] += stages.gaps(g, len(tooling))
                run_tools(self, result, tooling, clock, intent, parts.tools)
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

    def _judge(self, result: TurnResult, messages: list[str]) -> None:
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
            docs = doc_ids_json(found_one)
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
            self.turn_ids[rows], template, start, end, attributes=attributes,
            input_text=[messages[i] for i in rows.tolist()] if self.full_text else None,
            output_text=[f.text for f in found] if self.full_text else None,
        )  # fmt: skip
        return end

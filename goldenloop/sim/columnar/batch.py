"""A batch of the columnar engine: the sessions of a run of hours, turn by turn.

``Batch.run`` plans every session's turns and first intent, then advances all the
sessions still going one turn per ``Step`` until none is left, and gathers the spans
(``blocks``), feedback, outcomes and ground truth they produce.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import pyarrow as pa

from goldenloop.model import Feedback, Outcome
from goldenloop.pricing import PriceTable
from goldenloop.sim import corpus
from goldenloop.sim.columnar import stages
from goldenloop.sim.columnar.blocks import SpanBlocks, TurnColumns, hex_ids
from goldenloop.sim.columnar.effects import INTENT_NAMES, StepEffects, step_effects
from goldenloop.sim.columnar.sessions import SEARCH, Sessions
from goldenloop.sim.columnar.step import Step
from goldenloop.sim.columnar.turn import BAD_CODES, I64, when
from goldenloop.sim.config import ALL_APPS, LOCALES, SimConfig
from goldenloop.sim.generate import BASE_INJECTION, TURN_CUMULATIVE
from goldenloop.sim.manifest import ChunkTruth
from goldenloop.sim.scenarios import Scenario
from goldenloop.sim.text import INTENTS

#: More turns than any session has (at most 6 planned, plus rephrases).
MAX_STEPS: Final = 64


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
        #: Each session's exchanges so far, as (UTF-8, length in characters).
        self.history: list[list[tuple[bytes, int]]] = [[] for _ in range(n)]
        self.last_message: list[str] = [""] * n
        self.last_end = np.zeros(n, np.int64)
        # Per turn row of the batch, in order of creation.
        self.turn_session: list[I64] = []
        self.turn_trace: list[pa.Array] = []
        self.turn_message: list[pa.Array] = []
        self.turn_prompt: list[pa.Array] = []
        self.turns = 0

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
        for k in range(MAX_STEPS):
            if not len(active):
                break
            step = Step(self, k, active)
            go_on = step.run()
            active = active[go_on]
        ended_bad = np.isin(self.quality, BAD_CODES)
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
        succeeded = (~np.isin(self.quality[search], BAD_CODES)).tolist()
        for i, session in enumerate(search.tolist()):
            success = succeeded[i]
            if not success:
                self.truth.failure("outcome_failure", s.ids[session])
            self.outcomes.append(
                Outcome(
                    id=ids[i], project=ALL_APPS[s.app[session]], session_id=s.ids[session],
                    message_id=self.last_message[session], name="ticket_deflected",
                    success=bool(success), value=None, attributes={},
                    created_at=when(int(self.last_end[session] + delay[i])),
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

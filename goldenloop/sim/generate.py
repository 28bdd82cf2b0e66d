"""The session loop: arrivals over the window, users, turns, feedback and outcomes.

Time is cut into hours; each hour has its own RNG seeded from (seed, hour) and nothing
else carries over from one hour to the next (the caches below are pure functions of
their keys), so any range of hours can be generated on its own and gives exactly the
sessions the whole run gives in those hours: the parallel bulk path relies on this.
Sessions start in time order; a chunk never splits a session, so every trace (and
every session) is whole inside one chunk.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final

from goldenloop.ingest.raw import RawSpan
from goldenloop.model import Feedback, Outcome
from goldenloop.sim import corpus
from goldenloop.sim import knowledge as kb
from goldenloop.sim.apps import run_turn
from goldenloop.sim.config import (
    BILLING_APP,
    EU_LOCALES,
    LOCALES,
    REFUND_APP,
    SEARCH_APP,
    TIERS,
    SimConfig,
)
from goldenloop.sim.feedback import FeedbackMaker
from goldenloop.sim.manifest import ChunkTruth, SimManifest
from goldenloop.sim.population import HOUR_US, Population, resource
from goldenloop.sim.scenarios import Effects, ScenarioSchedule, to_us
from goldenloop.sim.session import Session, Turn
from goldenloop.sim.spans import lognormal_ms
from goldenloop.sim.text import (
    CLOSINGS,
    COUNTRIES,
    INJECTIONS,
    INTENT_BY_NAME,
    PLANS,
    PRODUCTS,
    REPHRASE_PREFIXES,
    Intent,
)

TURN_CUMULATIVE: Final = (0.34, 0.60, 0.78, 0.89, 0.96, 1.0)  # 1..6 turns
BASE_INJECTION: Final = 0.004
BAD_QUALITIES: Final = frozenset({"wrong", "unhelpful", "error", "truncated"})
CURRENCY: Final = {
    "en-US": "USD", "en-GB": "GBP", "ja-JP": "JPY", "pt-BR": "BRL", "en-IN": "INR",
}  # fmt: skip


@dataclass
class SimChunk:
    """Whole sessions, in start-time order: their spans, feedback and outcomes."""

    spans: list[RawSpan] = field(default_factory=list)
    feedback: list[Feedback] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    truth: ChunkTruth = field(default_factory=ChunkTruth)


@dataclass
class SimResult:
    spans: list[RawSpan]
    feedback: list[Feedback]
    outcomes: list[Outcome]
    manifest: SimManifest


def simulate(config: SimConfig, hours: range | None = None) -> Iterator[SimChunk]:
    """Yield the run's traffic in chunks of about ``config.chunk_spans`` spans.

    ``hours`` limits the run to those hours of the window (hour 0 starts at
    ``config.start``, the last may be partial; ``len(hourly_sessions(config))`` is
    their number); ``config.max_spans`` then counts from the first of them."""
    generator = _Generator(config)
    return generator.chunks(hours if hours is not None else range(generator.hours))


def hourly_sessions(config: SimConfig) -> list[int]:
    """Sessions starting in each hour of the window, without generating them (two RNG
    draws per hour), so a run can be split into parts of similar size up front."""
    generator = _Generator(config)
    return [generator.hour_sessions(hour)[2] for hour in range(generator.hours)]


def traffic(config: SimConfig) -> Iterator[SimChunk]:
    """The run's chunks from the engine ``config.engine`` names (``simulate`` is the
    per-session one)."""
    if config.engine == "columnar":
        from goldenloop.sim.columnar import columnar_chunks  # it imports this module

        return columnar_chunks(config)
    return simulate(config)


def generate_all(config: SimConfig) -> SimResult:
    """The whole run in memory, with its manifest (for tests and small demos)."""
    manifest = SimManifest.for_config(config)
    result = SimResult([], [], [], manifest)
    for chunk in traffic(config):
        result.spans.extend(chunk.spans)
        result.feedback.extend(chunk.feedback)
        result.outcomes.extend(chunk.outcomes)
        manifest.add(chunk.truth, spans=len(chunk.spans), feedback=len(chunk.feedback),
                     outcomes=len(chunk.outcomes))  # fmt: skip
    return result


def search_deploy_us(config: SimConfig) -> int:
    """When support-search's second prompt version ships: 30% into the window."""
    start, end = to_us(config.start), to_us(config.end)
    return start + int((end - start) * 0.3)


class _Generator:
    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.population = population = Population(config)
        self.start_us = population.start_us
        self.end_us = population.end_us
        self.hours = population.hours
        self.schedule = ScenarioSchedule(config.resolved_scenarios(), corpus.all_intents_by_app())
        self.search_deploy_us = search_deploy_us(config)
        self.apps = config.apps
        self.app_cum = population.app_cum
        self.locale_cum = population.locale_cum
        self.pool = population.pool
        self.tier_cut = population.tier_cut
        self.resources = {
            (app, oi): resource(app, "openinference" if oi else "otel-genai")
            for app in self.apps
            for oi in (False, True)
        }
        self.flags_json: dict[tuple[tuple[str, str], ...], str] = {}
        self.feedback = FeedbackMaker()

    # -- the loop ----------------------------------------------------------------------
    def hour_sessions(self, hour: int) -> tuple[random.Random, datetime, int]:
        return self.population.hour_sessions(hour)

    def chunks(self, hours: range) -> Iterator[SimChunk]:
        cfg = self.config
        chunk = SimChunk()
        total = 0
        for hour in hours:
            rng, when, count = self.hour_sessions(hour)
            hour_start = self.start_us + hour * HOUR_US
            length = min(HOUR_US, self.end_us - hour_start)
            starts = sorted(hour_start + int(rng.random() * length) for _ in range(count))
            for t0 in starts:
                before = len(chunk.spans)
                self._session(rng, t0, when.hour, chunk)
                total += len(chunk.spans) - before
                if cfg.max_spans is not None and total >= cfg.max_spans:
                    yield chunk
                    return
                if len(chunk.spans) >= cfg.chunk_spans:
                    yield chunk
                    chunk = SimChunk()
        if chunk.spans or chunk.feedback:
            yield chunk

    def _session(self, rng: random.Random, t0: int, utc_hour: int, chunk: SimChunk) -> None:
        cfg = self.config
        app = self.apps[bisect.bisect_left(self.app_cum, rng.random())]
        li = min(bisect.bisect_left(self.locale_cum[utc_hour], rng.random()), len(LOCALES) - 1)
        locale = LOCALES[li]
        key = li * 10_000_000 + int(self.pool[li] * rng.random() ** 1.7)
        mixed = self.population.user_mix(key)
        user_id = f"u_{mixed >> 24:010x}"
        tier_draw = (mixed >> 8) % 1000
        tier = TIERS[next(i for i, cut in enumerate(self.tier_cut) if tier_draw < cut or i == 2)][0]
        flags = self._flags(rng, app, locale.code)
        openinference = app == SEARCH_APP and rng.random() < cfg.openinference_share
        if app == SEARCH_APP:
            index = kb.CURRENT_INDEX if flags.get("new_retriever") == "on" else kb.OLD_INDEX
        else:
            index = kb.CURRENT_INDEX
        session = Session(
            rng=rng, app=app, session_id=f"sess_{rng.getrandbits(64):016x}", user_id=user_id,
            tier=tier, locale=locale, flags=flags, flags_json=self._flags_json(flags),
            resource=self.resources[(app, openinference)], openinference=openinference,
            index_version=index, slots=self._slots(rng, locale.code, t0), spans=chunk.spans,
            truth=chunk.truth, full_text=cfg.text == "full", judge_share=cfg.judge_share,
            cost_share=cfg.explicit_cost_share,
        )  # fmt: skip
        chunk.truth.sessions += 1
        chunk.truth.sessions_by_project[app] = chunk.truth.sessions_by_project.get(app, 0) + 1
        self._turns(session, t0, chunk)

    def _turns(self, s: Session, t0: int, chunk: SimChunk) -> None:
        rng = s.rng
        planned = bisect.bisect_left(TURN_CUMULATIVE, rng.random()) + 1
        effects = self.schedule.effects(t0, s.app)
        intent = self._pick_intent(s, effects)
        inject_at = -1
        draw = rng.random()
        wave = effects.injection if effects.any else None
        if draw < BASE_INJECTION + (wave.rate if wave else 0.0):
            inject_at = rng.randrange(planned)
        if draw < BASE_INJECTION:
            wave = None  # a baseline attempt, not the wave's
        t = t0
        previous = ""
        rephrase = False
        quality = "good"
        i = 0
        while i < planned:
            if i:
                effects = self.schedule.effects(t, s.app)
            closing = False
            if i == 0:
                message = self._question(s, intent)
            elif rephrase:
                message = REPHRASE_PREFIXES[rng.getrandbits(8) % 5] + previous[0].lower()
                message += previous[1:].rstrip("?.!。 ") + "?"
                chunk.truth.failure("rephrase", s.id)
            elif i == planned - 1 and rng.random() < 0.6:
                closing = True
                bank = CLOSINGS.get(s.lang) if rng.random() < 0.6 else None
                bank = bank or CLOSINGS["en"]
                message = bank[rng.getrandbits(8) % len(bank)]
            elif intent.followups and rng.random() < 0.6:
                message = intent.followups[rng.getrandbits(8) % len(intent.followups)]
            else:
                intent = self._pick_intent(s, effects)
                message = self._question(s, intent)
            previous = message  # what a rephrase repeats (without any injection)
            if i == inject_at:
                message = message + " " + INJECTIONS[rng.getrandbits(8) % len(INJECTIONS)]
                if wave is not None:
                    chunk.truth.scenario(wave.name, s.id)
            turn = Turn(
                intent=intent, message=message, t_us=t, effects=effects,
                prompt_hash=self._prompt(s, effects, t), injection=i == inject_at,
                closing=closing,
            )  # fmt: skip
            result = run_turn(s, turn)
            chunk.truth.turns += 1
            self.feedback.after_turn(s, turn, result, chunk.feedback)
            if result.outcome is not None:
                self.feedback.outcome(s, result, chunk.outcomes)
            quality = result.quality
            rephrase = False
            if quality in BAD_QUALITIES and not closing:
                draw = rng.random()
                if draw < 0.3 and i < 5:
                    rephrase = True
                    planned = max(planned, i + 2)
                elif draw < 0.7:
                    break
            t = result.end_us + int(lognormal_ms(rng, 9_000 if rephrase else 25_000, 0.7) * 1000)
            i += 1
        if quality in BAD_QUALITIES:
            chunk.truth.failure("abandon", s.id)
        if s.app == SEARCH_APP and rng.random() < 0.5:
            self.feedback.deflection(s, result, quality not in BAD_QUALITIES, chunk.outcomes)

    # -- choices -----------------------------------------------------------------------
    def _pick_intent(self, s: Session, effects: Effects) -> Intent:
        rng = s.rng
        if effects.any:
            for scenario, intents, share in effects.intent_shifts:
                if rng.random() < share:
                    s.truth.scenario(scenario.name, s.id)
                    return INTENT_BY_NAME[intents[rng.getrandbits(8) % len(intents)]]
        names, cumulative = corpus.app_intents(s.app)
        return INTENT_BY_NAME[
            names[min(bisect.bisect_left(cumulative, rng.random()), len(names) - 1)]
        ]

    def _question(self, s: Session, intent: Intent) -> str:
        rng = s.rng
        localized, english = corpus.questions(intent.name, s.lang)
        if localized and rng.random() < 0.7:
            return localized[rng.getrandbits(8) % len(localized)].format_map(s.slots)
        text = english[rng.getrandbits(8) % len(english)].format_map(s.slots)
        if s.lang != "en" and rng.random() < 0.4:
            text = s.locale.greeting + " " + text
        return text

    def _prompt(self, s: Session, effects: Effects, t: int) -> str:
        if s.app == REFUND_APP:
            regression = effects.regression if effects.any else None
            if regression is not None and (
                regression.flag is None or s.flags.get(regression.flag[0]) == regression.flag[1]
            ):
                return regression.prompt_hash
            return regression.baseline_prompt if regression is not None else kb.GOOD_PROMPT
        if s.app == SEARCH_APP:
            return corpus.SEARCH_PROMPTS[0 if t < self.search_deploy_us else 1]
        return corpus.BILLING_PROMPT

    def _flags(self, rng: random.Random, app: str, locale: str) -> dict[str, str]:
        if app == REFUND_APP:
            banner = "on" if locale in EU_LOCALES and rng.random() < 0.5 else "off"
            return {"eu_banner": banner, "new_retriever": "on"}
        if app == SEARCH_APP:
            return {"new_retriever": "on" if rng.random() < 0.3 else "off"}
        assert app == BILLING_APP
        return {"annual_discount": "on" if rng.random() < 0.5 else "off"}

    def _flags_json(self, flags: dict[str, str]) -> str:
        key = tuple(flags.items())
        cached = self.flags_json.get(key)
        if cached is None:
            cached = "{" + ", ".join(f'"{k}": "{v}"' for k, v in key) + "}"
            self.flags_json[key] = cached
        return cached

    def _slots(self, rng: random.Random, locale: str, t0: int) -> dict[str, str]:
        amount = "%.2f" % (9 + rng.random() * 390)
        currency = CURRENCY.get(locale, "EUR")
        delivered = datetime.fromtimestamp(t0 / 1e6, UTC) - timedelta(days=1 + rng.randrange(20))
        return {
            "order": f"ORD-{rng.randrange(1_000_000):06d}",
            "product": PRODUCTS[rng.getrandbits(8) % len(PRODUCTS)],
            "country": COUNTRIES[rng.getrandbits(8) % len(COUNTRIES)],
            "plan": PLANS[rng.getrandbits(8) % len(PLANS)],
            "amount_value": amount,
            "amount": amount + " " + currency,
            "currency": currency,
            "delivered": delivered.date().isoformat(),
        }

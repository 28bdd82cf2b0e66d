"""Per-session and per-turn state shared by the generator and the app turn builders."""

from __future__ import annotations

import random
from typing import Any

from goldenloop.ingest.raw import RawSpan
from goldenloop.sim.config import Locale
from goldenloop.sim.manifest import ChunkTruth
from goldenloop.sim.scenarios import Effects
from goldenloop.sim.text import Intent


class Session:
    """One simulated conversation: who, where, which build, and where spans go."""

    __slots__ = (
        "rng", "app", "id", "user_id", "tier", "locale", "lang", "flags", "flags_json",
        "resource", "openinference", "index_version", "slots", "history", "spans", "truth",
        "full_text", "judge_share", "cost_share", "currency",
    )  # fmt: skip

    def __init__(
        self,
        *,
        rng: random.Random,
        app: str,
        session_id: str,
        user_id: str,
        tier: str,
        locale: Locale,
        flags: dict[str, str],
        flags_json: str,
        resource: dict[str, Any],
        openinference: bool,
        index_version: str,
        slots: dict[str, str],
        spans: list[RawSpan],
        truth: ChunkTruth,
        full_text: bool,
        judge_share: float,
        cost_share: float,
    ) -> None:
        self.rng = rng
        self.app = app
        self.id = session_id
        self.user_id = user_id
        self.tier = tier
        self.locale = locale
        self.lang = locale.code[:2]
        self.flags = flags
        self.flags_json = flags_json
        self.resource = resource
        self.openinference = openinference
        self.index_version = index_version
        self.slots = slots
        self.history: list[str] = []
        self.spans = spans
        self.truth = truth
        self.full_text = full_text
        self.judge_share = judge_share
        self.cost_share = cost_share

    def history_text(self) -> str:
        return "".join(self.history[-3:])


class Turn:
    """What the user does in one turn, decided by the generator before the app runs."""

    __slots__ = ("intent", "message", "t_us", "effects", "prompt_hash", "injection", "closing")

    def __init__(
        self,
        *,
        intent: Intent,
        message: str,
        t_us: int,
        effects: Effects,
        prompt_hash: str,
        injection: bool = False,
        closing: bool = False,
    ) -> None:
        self.intent = intent
        self.message = message
        self.t_us = t_us
        self.effects = effects
        self.prompt_hash = prompt_hash
        self.injection = injection
        self.closing = closing


class TurnResult:
    """What came out of one turn. ``quality`` drives feedback and implicit negatives:
    good, wrong, unhelpful, error, truncated, refused, closing."""

    __slots__ = ("end_us", "answer", "quality", "message_id", "model_version", "outcome")

    def __init__(
        self,
        end_us: int,
        answer: str,
        quality: str,
        message_id: str,
        model_version: str,
        outcome: tuple[str, bool, float | None, dict[str, Any]] | None = None,
    ) -> None:
        self.end_us = end_us
        self.answer = answer
        self.quality = quality
        self.message_id = message_id
        self.model_version = model_version
        self.outcome = outcome

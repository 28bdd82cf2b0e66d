"""Explicit feedback and downstream outcomes that users and backends send after a turn.

Thumbs-down is far likelier after a bad answer (wrong → category ``wrong``, slow →
``slow`` …) than after a good one, so feedback rates move with the scenarios.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final, Literal

from goldenloop.model import Feedback, Outcome
from goldenloop.sim.session import Session, Turn, TurnResult
from goldenloop.sim.spans import lognormal_ms
from goldenloop.sim.text import COMMENTS

#: quality → (P(thumbs down), category, P(thumbs up))
FEEDBACK_RATES: Final[dict[str, tuple[float, str, float]]] = {
    "good": (0.012, "unhelpful", 0.06),
    "closing": (0.0, "other", 0.08),
    "wrong": (0.42, "wrong", 0.0),
    "unhelpful": (0.2, "unhelpful", 0.0),
    "error": (0.22, "other", 0.0),
    "truncated": (0.2, "unhelpful", 0.01),
    "refused": (0.03, "unhelpful", 0.01),
    "unsafe": (0.15, "unsafe", 0.0),
}
SLOW_MS: Final = 12_000
SLOW_DOWN_RATE: Final = 0.12


def _when(t_us: int) -> datetime:
    return datetime.fromtimestamp(t_us / 1e6, UTC)


class FeedbackMaker:
    def after_turn(self, s: Session, turn: Turn, result: TurnResult, out: list[Feedback]) -> None:
        rng = s.rng
        down, category, up = FEEDBACK_RATES.get(result.quality, (0.02, "other", 0.0))
        latency_ms = (result.end_us - turn.t_us) / 1000
        if latency_ms > SLOW_MS and result.quality in ("good", "closing"):
            down, category = SLOW_DOWN_RATE, "slow"
        draw = rng.random()
        rating: Literal["up", "down"]
        if draw < down:
            rating = "down"
            s.truth.failure("thumbs_down", s.id)
        elif draw < down + up:
            rating = "up"
        else:
            return
        comment = None
        if rating == "down" and rng.random() < 0.35:
            bank = COMMENTS.get(category, COMMENTS["other"])
            comment = bank[rng.getrandbits(8) % len(bank)]
        out.append(
            Feedback(
                id=f"fb_{rng.getrandbits(64):016x}",
                project=s.app,
                session_id=s.id,
                message_id=result.message_id,
                rating=rating,
                category=category if rating == "down" else None,
                comment=comment,
                prompt_hash=turn.prompt_hash,
                model_hash=result.model_version,
                user_id=s.user_id,
                created_at=_when(result.end_us + int(lognormal_ms(rng, 7_000, 0.8) * 1000)),
            )
        )

    def outcome(self, s: Session, result: TurnResult, out: list[Outcome]) -> None:
        assert result.outcome is not None
        name, success, value, attributes = result.outcome
        rng = s.rng
        if not success:
            s.truth.failure("outcome_failure", s.id)
        out.append(
            Outcome(
                id=f"oc_{rng.getrandbits(64):016x}",
                project=s.app,
                session_id=s.id,
                message_id=result.message_id,
                name=name,
                success=success,
                value=value,
                attributes=attributes,
                created_at=_when(result.end_us + int(lognormal_ms(rng, 20_000, 1.0) * 1000)),
            )
        )

    def deflection(self, s: Session, last: TurnResult, success: bool, out: list[Outcome]) -> None:
        """support-search reports whether the session avoided a support ticket."""
        rng = s.rng
        if not success:
            s.truth.failure("outcome_failure", s.id)
        out.append(
            Outcome(
                id=f"oc_{rng.getrandbits(64):016x}",
                project=s.app,
                session_id=s.id,
                message_id=last.message_id,
                name="ticket_deflected",
                success=success,
                value=None,
                attributes={},
                created_at=_when(last.end_us + int(lognormal_ms(rng, 150_000, 0.8) * 1000)),
            )
        )

"""How a turn of the columnar engine went, and what every stage of it shares: quality
codes, which model answers in each app, ``TurnResult``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from goldenloop.sim.apps import OUTAGE
from goldenloop.sim.columnar.sessions import BILLING, REFUND, SEARCH
from goldenloop.sim.columnar.stages import MODEL_INDEX
from goldenloop.sim.config import ALL_APPS, TIERS
from goldenloop.sim.spans import MODELS
from goldenloop.sim.stages import OUTAGE_ERRORS
from goldenloop.sim.text import INTENTS

if TYPE_CHECKING:
    from goldenloop.sim.columnar.step import Step

I64 = np.ndarray[Any, np.dtype[np.int64]]
Mask = np.ndarray[Any, np.dtype[np.bool_]]

QUALITIES: Final = (
    "", "good", "wrong", "unhelpful", "error", "truncated", "refused", "unsafe", "closing",
)  # fmt: skip
(NONE, GOOD, WRONG, UNHELPFUL_Q, ERROR, TRUNCATED, REFUSED, UNSAFE, CLOSING) = range(9)
BAD_CODES: Final = np.array([WRONG, UNHELPFUL_Q, ERROR, TRUNCATED])
HAS_FOLLOWUPS: Final = np.array([bool(i.followups) for i in INTENTS])
HAS_TOOLS: Final = np.array([bool(i.tools) for i in INTENTS])
#: The model that answers, per app: (other tiers, enterprise).
ANSWER_MODEL: Final = {
    REFUND: (MODELS["gpt-4o-mini"], MODELS["gpt-4o"]),
    SEARCH: (MODELS["claude-sonnet-4"],) * 2,
    BILLING: (MODELS["gpt-4.1-mini"],) * 2,
}
ANSWER_MODEL_INDEX: Final = np.array(
    [[MODEL_INDEX[m.request] for m in ANSWER_MODEL[app]] for app in range(len(ALL_APPS))]
)
#: The model that plans tool calls, per app (support-search has no tools).
PLAN_MODEL_INDEX: Final = np.array(
    [MODEL_INDEX[name] for name in ("gpt-4o-mini", "gpt-4o-mini", "gpt-4.1-mini")]
)
ENTERPRISE: Final = [t for t, _ in TIERS].index("enterprise")


def when(t_us: int) -> datetime:
    return datetime.fromtimestamp(t_us / 1e6, UTC)


class TurnResult:
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
            self.error_types[i] = last_error(step, i)


def last_error(step: Step, row: int) -> str | None:
    """The error type of the outage that failed row's last LLM call."""
    outage = step.effects.outage[row]
    if outage < 0:
        return None
    scenario = step.scenarios[outage]
    provider = "anthropic" if step.app[row] == SEARCH else "openai"
    return OUTAGE_ERRORS.get(provider, str(getattr(scenario, "error_type", "UpstreamError")))

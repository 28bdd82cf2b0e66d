"""What a simulation run looks like: time window, volume, apps, cohorts and scenarios.

``SimConfig`` is the only input of a run; the same config (and seed) always produces
the same spans, ids and text. Cohort tables (locales, tiers) live here too because
both the generator and the refund app read them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Literal

if TYPE_CHECKING:
    from goldenloop.sim.scenarios import Scenario

REFUND_APP: Final = "refund-assistant"
SEARCH_APP: Final = "support-search"
BILLING_APP: Final = "billing-agent"
ALL_APPS: Final = (REFUND_APP, SEARCH_APP, BILLING_APP)

#: Share of sessions per app (renormalized over the apps a config enables).
APP_SHARE: Final[dict[str, float]] = {REFUND_APP: 0.45, SEARCH_APP: 0.38, BILLING_APP: 0.17}


@dataclass(frozen=True, slots=True)
class Locale:
    code: str
    share: float
    #: Offset of the locale's main time zone from UTC, for the diurnal curve.
    utc_offset: int
    eu: bool
    #: Greeting a user of this locale often opens with.
    greeting: str


LOCALES: Final[tuple[Locale, ...]] = (
    Locale("en-US", 0.33, -6, False, "Hi,"),
    Locale("en-GB", 0.10, 0, False, "Hello,"),
    Locale("de-DE", 0.12, 1, True, "Hallo,"),
    Locale("fr-FR", 0.09, 1, True, "Bonjour,"),
    Locale("es-ES", 0.07, 1, True, "Hola,"),
    Locale("nl-NL", 0.04, 1, True, "Hoi,"),
    Locale("it-IT", 0.03, 1, True, "Ciao,"),
    Locale("ja-JP", 0.08, 9, False, "こんにちは、"),
    Locale("pt-BR", 0.05, -3, False, "Olá,"),
    Locale("en-IN", 0.09, 5, False, "Hello,"),
)
LOCALE_BY_CODE: Final = {loc.code: loc for loc in LOCALES}
EU_LOCALES: Final = frozenset(loc.code for loc in LOCALES if loc.eu)

#: Customer tiers and their share of users (percent thresholds are derived from it).
TIERS: Final[tuple[tuple[str, float], ...]] = (("free", 0.62), ("pro", 0.30), ("enterprise", 0.08))

#: Relative traffic by local hour of day (0..23) and by weekday (Monday=0).
DIURNAL: Final[tuple[float, ...]] = (
    0.18, 0.12, 0.09, 0.08, 0.09, 0.14, 0.30, 0.55, 0.85, 1.00, 1.08, 1.10,
    1.05, 1.08, 1.12, 1.10, 1.02, 0.95, 0.90, 0.88, 0.80, 0.62, 0.42, 0.27,
)  # fmt: skip
WEEKLY: Final[tuple[float, ...]] = (1.05, 1.08, 1.06, 1.04, 0.98, 0.62, 0.55)

TextMode = Literal["full", "short"]
#: ``sessions``: the per-session generator (``generate``), one RawSpan at a time.
#: ``columnar``: the vectorized bulk engine (``columnar``): the same traffic model,
#: drawn for whole batches of sessions at once, ~5x cheaper per span.
Engine = Literal["sessions", "columnar"]
ENGINES: Final = ("sessions", "columnar")


def default_start(days: int = 7, *, now: datetime | None = None) -> datetime:
    """Midnight UTC ``days`` days before today, so the whole window lies in the past."""
    now = now or datetime.now(UTC)
    midnight = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight - timedelta(days=days)


@dataclass(frozen=True)
class SimConfig:
    """One simulation run.

    ``scenarios=None`` means ``default_scenarios(start, days)``; pass ``()`` for none.
    ``max_spans`` stops the run at the first session boundary at or after that many
    spans (benchmarks use it to get an exact volume). ``engine`` picks the generator:
    both simulate the same apps, users, scenarios and ground truth, but draw them in a
    different order, so the same seed gives different sessions in each. ``text="short"`` keeps span text
    to a few hundred bytes instead of the realistic ~3.5 KB.
    """

    seed: int = 7
    start: datetime = field(default_factory=default_start)
    days: float = 7
    sessions_per_day: int = 2000
    apps: tuple[str, ...] = ALL_APPS
    scenarios: tuple[Scenario, ...] | None = None
    max_spans: int | None = None
    chunk_spans: int = 20_000
    text: TextMode = "full"
    #: Fraction of support-search sessions instrumented with OpenInference names.
    openinference_share: float = 0.35
    #: Fraction of LLM spans that carry their own ``goldenloop.cost_usd``.
    explicit_cost_share: float = 0.1
    #: Fraction of turns that get an online judge span.
    judge_share: float = 0.12
    #: Which engine generates the traffic (see ``Engine``).
    engine: Engine = "sessions"

    def __post_init__(self) -> None:
        if self.start.tzinfo is None:
            raise ValueError("SimConfig.start must be timezone-aware (UTC)")
        if self.days <= 0:
            raise ValueError("SimConfig.days must be positive")
        if self.sessions_per_day < 0:
            raise ValueError("SimConfig.sessions_per_day must not be negative")
        unknown = [a for a in self.apps if a not in ALL_APPS]
        if unknown or not self.apps:
            raise ValueError(f"SimConfig.apps: unknown {unknown}; choose from {list(ALL_APPS)}")
        if self.chunk_spans < 1:
            raise ValueError("SimConfig.chunk_spans must be at least 1")
        if self.engine not in ENGINES:
            raise ValueError(
                f"SimConfig.engine: unknown {self.engine!r}; choose from {list(ENGINES)}"
            )

    @property
    def end(self) -> datetime:
        return self.start + timedelta(days=self.days)

    def resolved_scenarios(self) -> tuple[Scenario, ...]:
        if self.scenarios is not None:
            return self.scenarios
        from goldenloop.sim.scenarios import default_scenarios

        return default_scenarios(self.start, self.days, apps=self.apps)

    def replace(self, **changes: Any) -> SimConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "days": self.days,
            "sessions_per_day": self.sessions_per_day,
            "apps": list(self.apps),
            "max_spans": self.max_spans,
            "text": self.text,
            "openinference_share": self.openinference_share,
            "explicit_cost_share": self.explicit_cost_share,
            "judge_share": self.judge_share,
            "engine": self.engine,
        }

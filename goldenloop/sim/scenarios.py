"""Incidents and traffic shifts injected into simulated traffic on a schedule.

Each scenario is a small frozen dataclass with a time window and its parameters. The
generator asks ``Effects.at`` what is active for a turn; the manifest records which
sessions each scenario actually changed, as ground truth for detectors.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any, ClassVar

from goldenloop.sim.config import ALL_APPS, REFUND_APP, SEARCH_APP
from goldenloop.sim.knowledge import BAD_PROMPT, GOOD_PROMPT

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_us(value: datetime) -> int:
    """Epoch microseconds of an aware datetime."""
    return (value - _EPOCH) // timedelta(microseconds=1)


@dataclass(frozen=True, kw_only=True)
class Scenario:
    """Base class: a named time window. ``kind`` names the scenario type."""

    kind: ClassVar[str] = "scenario"
    name: str
    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError(f"scenario {self.name!r}: start and end must be timezone-aware")
        if self.end <= self.start:
            raise ValueError(f"scenario {self.name!r}: end must be after start")

    @cached_property
    def start_us(self) -> int:
        return to_us(self.start)

    @cached_property
    def end_us(self) -> int:
        return to_us(self.end)

    def active(self, t_us: int) -> bool:
        return self.start_us <= t_us < self.end_us

    def params(self) -> dict[str, Any]:
        skip = {"name", "start", "end"}
        return {
            f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
            for f in dataclasses.fields(self)
            if f.name not in skip
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "params": self.params(),
        }


@dataclass(frozen=True, kw_only=True)
class PromptRegression(Scenario):
    """A bad prompt ships behind a flag and gives wrong refund-policy answers to some
    locales: wrong answers, thumbs-down (category wrong), failed refunds, low judge scores."""

    kind: ClassVar[str] = "prompt_regression"
    app: str = REFUND_APP
    prompt_hash: str = BAD_PROMPT
    baseline_prompt: str = GOOD_PROMPT
    #: Sessions with this flag variant get the bad prompt (None: every session).
    flag: tuple[str, str] | None = ("eu_banner", "on")
    locales: tuple[str, ...] = ("de-DE", "fr-FR")
    intents: tuple[str, ...] = ("refund_policy", "refund_request", "damaged_item")


@dataclass(frozen=True, kw_only=True)
class ProviderOutage(Scenario):
    """LLM calls of one provider (None: all) get slower by ``latency_multiplier`` and
    fail with ``error_rate``."""

    kind: ClassVar[str] = "provider_outage"
    provider: str | None = None
    latency_multiplier: float = 6.0
    error_rate: float = 0.3
    error_type: str = "APITimeoutError"


@dataclass(frozen=True, kw_only=True)
class InjectionWave(Scenario):
    """A share of sessions carries prompt-injection attempts."""

    kind: ClassVar[str] = "injection_wave"
    rate: float = 0.12
    apps: tuple[str, ...] = ALL_APPS


@dataclass(frozen=True, kw_only=True)
class NewIntentCluster(Scenario):
    """Users start asking about something new (a product line), ``share`` of sessions."""

    kind: ClassVar[str] = "new_intent_cluster"
    intents: tuple[str, ...] = ("aurora_ring", "aurora_setup")
    share: float = 0.15


@dataclass(frozen=True, kw_only=True)
class SeasonalQueries(Scenario):
    """Seasonal questions (tax, holidays) take ``share`` of sessions of their apps."""

    kind: ClassVar[str] = "seasonal_queries"
    intents: tuple[str, ...] = ("holiday_returns", "tax_invoice", "vat_receipts")
    share: float = 0.12


@dataclass(frozen=True, kw_only=True)
class ToolErrorSpike(Scenario):
    """One tool's backend degrades: its calls fail with ``error_rate``."""

    kind: ClassVar[str] = "tool_error_spike"
    tool: str = "lookup_order"
    error_rate: float = 0.45
    error_type: str = "OrderServiceTimeout"


SCENARIO_TYPES: tuple[type[Scenario], ...] = (
    PromptRegression, ProviderOutage, InjectionWave, NewIntentCluster, SeasonalQueries,
    ToolErrorSpike,
)  # fmt: skip


def default_scenarios(
    start: datetime, days: float = 7, *, apps: Sequence[str] = ALL_APPS
) -> tuple[Scenario, ...]:
    """The standard incident schedule, spread over the window (for a week: injection
    wave day 1 evening, EU prompt regression day 3 14:00 UTC until rollback the next
    morning, outage day 4, product launch from day 4, tool errors and seasonal traffic
    on day 5). Scenarios outside the window, or for apps not simulated, are dropped."""
    end = start + timedelta(days=days)
    day0 = start.replace(hour=0, minute=0, second=0, microsecond=0)

    def at(fraction: float, hour: float) -> datetime:
        return day0 + timedelta(days=int(days * fraction), hours=hour)

    candidates: list[tuple[type[Scenario], str, datetime, datetime]] = [
        (InjectionWave, "injection-wave", at(0.25, 20), at(0.25, 26)),
        (PromptRegression, "eu-prompt-regression", at(0.45, 14), at(0.45, 33.5)),
        (ProviderOutage, "provider-outage", at(0.65, 10), at(0.65, 11)),
        (NewIntentCluster, "aurora-launch", at(0.55, 8), end),
        (ToolErrorSpike, "order-service-errors", at(0.8, 15), at(0.8, 17)),
        (SeasonalQueries, "seasonal-tax-holiday", at(0.75, 0), end),
    ]
    needs = {
        PromptRegression: {REFUND_APP},
        ToolErrorSpike: {REFUND_APP},
        NewIntentCluster: {REFUND_APP, SEARCH_APP},
    }
    chosen: list[Scenario] = []
    for cls, name, lo, hi in candidates:
        if cls in needs and not needs[cls] & set(apps):
            continue
        lo, hi = max(lo, start), min(hi, end)
        if hi > lo:
            chosen.append(cls(name=name, start=lo, end=hi))
    return tuple(chosen)


class Effects:
    """What the active scenarios do to one turn of one app. ``NONE`` when nothing is."""

    __slots__ = (
        "regression", "outages", "injection", "intent_shifts", "tool_errors", "any",
    )  # fmt: skip

    def __init__(self) -> None:
        self.regression: PromptRegression | None = None
        self.outages: list[ProviderOutage] = []
        self.injection: InjectionWave | None = None
        #: (scenario, intents of this app, share)
        self.intent_shifts: list[tuple[Scenario, tuple[str, ...], float]] = []
        self.tool_errors: dict[str, ToolErrorSpike] = {}
        self.any = False

    def outage_for(self, provider: str) -> ProviderOutage | None:
        for outage in self.outages:
            if outage.provider is None or outage.provider == provider:
                return outage
        return None


NONE = Effects()


class ScenarioSchedule:
    """Answers ``effects(t_us, app)`` for the configured scenarios. The active set only
    changes at scenario boundaries, so effects are computed once per (segment, app)."""

    def __init__(self, scenarios: Sequence[Scenario], app_intents: dict[str, set[str]]) -> None:
        self.scenarios = tuple(scenarios)
        self._app_intents = app_intents
        names = [s.name for s in self.scenarios]
        if len(set(names)) != len(names):
            raise ValueError(f"scenario names must be unique, got {names}")
        self._bounds = sorted({t for s in self.scenarios for t in (s.start_us, s.end_us)})
        self._cache: dict[tuple[int, str], Effects] = {}

    def effects(self, t_us: int, app: str) -> Effects:
        key = (bisect.bisect_right(self._bounds, t_us), app)
        cached = self._cache.get(key)
        if cached is None:
            cached = self._cache[key] = self._compute(t_us, app)
        return cached

    def _compute(self, t_us: int, app: str) -> Effects:
        result: Effects | None = None
        for scenario in self.scenarios:
            if not scenario.active(t_us):
                continue
            if result is None:
                result = Effects()
            if isinstance(scenario, PromptRegression):
                if scenario.app == app:
                    result.regression = scenario
            elif isinstance(scenario, ProviderOutage):
                result.outages.append(scenario)
            elif isinstance(scenario, InjectionWave):
                if app in scenario.apps:
                    result.injection = scenario
            elif isinstance(scenario, NewIntentCluster | SeasonalQueries):
                mine = tuple(i for i in scenario.intents if i in self._app_intents[app])
                if mine:
                    result.intent_shifts.append((scenario, mine, scenario.share))
            elif isinstance(scenario, ToolErrorSpike):
                result.tool_errors[scenario.tool] = scenario
        if result is None:
            return NONE
        result.any = True
        return result

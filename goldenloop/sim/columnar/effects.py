"""What the scheduled scenarios do to a step's turns, as arrays (see ``scenarios``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from goldenloop.sim.columnar.sessions import SEARCH
from goldenloop.sim.config import ALL_APPS
from goldenloop.sim.scenarios import (
    InjectionWave,
    NewIntentCluster,
    PromptRegression,
    ProviderOutage,
    Scenario,
    SeasonalQueries,
    ToolErrorSpike,
)
from goldenloop.sim.text import INTENT_BY_NAME

I64 = np.ndarray[Any, np.dtype[np.int64]]
Mask = np.ndarray[Any, np.dtype[np.bool_]]


@dataclass
class StepEffects:
    """Per turn: the active regression, outage and injection wave (indexes into
    ``scenarios``, -1 for none), intent shifts and tool-error spikes in schedule order."""

    regression: I64
    outage: I64
    wave: I64
    #: (scenario index, turns it applies to, intents of the turn's app it shifts to)
    shifts: list[tuple[int, Mask, dict[int, tuple[int, ...]]]] = field(default_factory=list)
    #: tool name → scenario index per turn (-1 where no spike hits that tool)
    spikes: dict[str, I64] = field(default_factory=dict)

    def subset(self, rows: I64 | Mask) -> StepEffects:
        return StepEffects(
            self.regression[rows],
            self.outage[rows],
            self.wave[rows],
            [(i, mask[rows], intents) for i, mask, intents in self.shifts],
            {tool: spike[rows] for tool, spike in self.spikes.items()},
        )


def step_effects(scenarios: tuple[Scenario, ...], t: I64, app: I64) -> StepEffects:
    """Effects of ``scenarios`` on turns starting at ``t`` of apps ``app`` (indexes
    into ``ALL_APPS``). Later scenarios of a kind win, as in ``ScenarioSchedule``."""
    n = len(t)
    none = np.full(n, -1, np.int64)
    effects = StepEffects(none, none.copy(), none.copy())
    # Outages apply per provider: support-search calls Anthropic, the others OpenAI.
    provider = np.where(app == SEARCH, "anthropic", "openai")
    for index, scenario in enumerate(scenarios):
        active = (t >= scenario.start_us) & (t < scenario.end_us)
        if not active.any():
            continue
        if isinstance(scenario, PromptRegression):
            hit = active & (app == ALL_APPS.index(scenario.app))
            effects.regression[hit] = index
        elif isinstance(scenario, ProviderOutage):
            hit = active & (effects.outage < 0)
            if scenario.provider is not None:
                hit &= provider == scenario.provider
            effects.outage[hit] = index
        elif isinstance(scenario, InjectionWave):
            apps = [ALL_APPS.index(a) for a in scenario.apps]
            effects.wave[active & np.isin(app, apps)] = index
        elif isinstance(scenario, NewIntentCluster | SeasonalQueries):
            intents = {
                app_index: tuple(
                    i
                    for i, name in enumerate(INTENT_NAMES)
                    if name in scenario.intents and INTENT_BY_NAME[name].app == app_name
                )
                for app_index, app_name in enumerate(ALL_APPS)
            }
            has = np.array([bool(intents[a]) for a in range(len(ALL_APPS))])
            effects.shifts.append((index, active & has[app], intents))
        elif isinstance(scenario, ToolErrorSpike):
            spike = effects.spikes.setdefault(scenario.tool, np.full(n, -1, np.int64))
            spike[active] = index
    return effects


INTENT_NAMES = tuple(INTENT_BY_NAME)

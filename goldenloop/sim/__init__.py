"""Realistic synthetic production traffic with injected incidents.

Used by the demo, tests, game days and benchmarks::

    from goldenloop.sim import SimConfig, write_to_store
    manifest = write_to_store(store, SimConfig(seed=7, days=7, sessions_per_day=2000))
    manifest.scenarios["eu-prompt-regression"].sessions  # ground truth

``simulate(config)`` yields time-ordered ``SimChunk`` objects (RawSpans, Feedback,
Outcome and their ground truth); ``send_over_otlp`` sends the same traffic to a
running server; ``refund_app`` is the refund assistant as a real callable app.
"""

from goldenloop.sim.config import (
    ALL_APPS,
    BILLING_APP,
    REFUND_APP,
    SEARCH_APP,
    SimConfig,
    default_start,
)
from goldenloop.sim.generate import SimChunk, SimResult, generate_all, simulate
from goldenloop.sim.manifest import FAILURE_KINDS, ScenarioTruth, SimManifest
from goldenloop.sim.otlp import encode_otlp
from goldenloop.sim.scenarios import (
    InjectionWave,
    NewIntentCluster,
    PromptRegression,
    ProviderOutage,
    Scenario,
    SeasonalQueries,
    ToolErrorSpike,
    default_scenarios,
)
from goldenloop.sim.sinks import SimSendError, send_over_otlp, write_to_store

__all__ = [
    "ALL_APPS", "BILLING_APP", "FAILURE_KINDS", "REFUND_APP", "SEARCH_APP", "InjectionWave",
    "NewIntentCluster", "PromptRegression", "ProviderOutage", "Scenario", "ScenarioTruth",
    "SeasonalQueries", "SimChunk", "SimConfig", "SimManifest", "SimResult", "SimSendError",
    "ToolErrorSpike", "default_scenarios", "default_start", "encode_otlp", "generate_all",
    "send_over_otlp", "simulate", "write_to_store",
]  # fmt: skip

"""Simulated traffic with known injected failures, loaded fast into a test store.

``load_sim(store, config)`` bulk-loads the simulator's spans and then its feedback and
outcomes with multi-row inserts (the stores' row-by-row path is slow on DuckDB), and
returns the manifest: which sessions carry which failure.

``precision_recall(flagged, truth, ignore)`` scores a rule; ``report`` prints a table
that shows up in the pytest output with ``-s`` or on failure.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from goldenloop.flags._sql import insert_rows, naive
from goldenloop.sim import SimConfig, SimManifest, generate_all, write_to_store
from goldenloop.store.base import Store

SIM_START = datetime(2025, 3, 3, tzinfo=UTC)


def small_config(*, days: float = 2, sessions_per_day: int = 1200, seed: int = 11) -> SimConfig:
    return SimConfig(seed=seed, start=SIM_START, days=days, sessions_per_day=sessions_per_day)


def load_sim(store: Store, config: SimConfig) -> SimManifest:
    manifest = write_to_store(store, config, include_feedback=False)
    result = generate_all(config)
    insert_rows(
        store,
        "feedback",
        ("id", "project", "session_id", "message_id", "rating", "category", "comment",
         "prompt_hash", "model_hash", "user_id", "created_at"),
        [(f.id, f.project, f.session_id, f.message_id, f.rating, f.category, f.comment,
          f.prompt_hash, f.model_hash, f.user_id, naive(f.created_at)) for f in result.feedback],
    )  # fmt: skip
    insert_rows(
        store,
        "outcomes",
        ("id", "project", "session_id", "message_id", "name", "success", "value",
         "attributes", "created_at"),
        [(o.id, o.project, o.session_id, o.message_id, o.name, o.success, o.value,
          json.dumps(o.attributes), naive(o.created_at)) for o in result.outcomes],
    )  # fmt: skip
    return manifest


@dataclass(frozen=True)
class Score:
    rule: str
    flagged: int
    truth: int
    true_positives: int

    @property
    def precision(self) -> float:
        return self.true_positives / self.flagged if self.flagged else 1.0

    @property
    def recall(self) -> float:
        return self.true_positives / self.truth if self.truth else 1.0

    def line(self) -> str:
        return (
            f"{self.rule:26s} flagged={self.flagged:5d} truth={self.truth:5d} "
            f"precision={self.precision:.3f} recall={self.recall:.3f}"
        )


def precision_recall(
    rule: str, flagged: Iterable[str], truth: Iterable[str], ignore: Iterable[str] = ()
) -> Score:
    skip = set(ignore)
    got = set(flagged) - skip
    want = set(truth) - skip
    return Score(rule, len(got), len(want), len(got & want))


def report(scores: Iterable[Score]) -> str:
    return "\n".join(score.line() for score in scores)


def themed_config(*, sessions_per_day: int = 2000, seed: int = 11) -> SimConfig:
    """One day with four overlapping failure themes, intense enough that each leaves
    dozens of flagged sessions (for clustering and rule scoring)."""
    from datetime import timedelta

    from goldenloop.sim import InjectionWave, PromptRegression, ProviderOutage, ToolErrorSpike

    def at(hours: float) -> datetime:
        return SIM_START + timedelta(hours=hours)

    scenarios = (
        InjectionWave(name="injection-wave", start=at(7), end=at(14), rate=0.3),
        PromptRegression(name="eu-prompt-regression", start=at(8), end=at(20)),
        ToolErrorSpike(name="order-service-errors", start=at(11), end=at(16), error_rate=0.6),
        ProviderOutage(name="provider-outage", start=at(15), end=at(17), error_rate=0.5),
    )
    return SimConfig(
        seed=seed, start=SIM_START, days=1, sessions_per_day=sessions_per_day, scenarios=scenarios
    )


FAILURE_THEMES = (
    "eu-prompt-regression",
    "provider-outage",
    "injection-wave",
    "order-service-errors",
)


def failure_theme_of(manifest: SimManifest) -> dict[str, str]:
    """session → the one failure theme that caused its trouble (sessions touched by
    several themes are left out). Outage and injection count only sessions where the
    theme actually produced a failure, not every session that ran during it."""
    members = {name: set(manifest.scenario_sessions(name)) for name in FAILURE_THEMES}
    members["provider-outage"] &= manifest.failures.get("provider_error", set())
    members["injection-wave"] &= manifest.failures.get("injection", set())
    theme: dict[str, str] = {}
    clash: set[str] = set()
    for name, ids in members.items():
        for sid in ids:
            if sid in theme:
                clash.add(sid)
            theme[sid] = name
    return {sid: name for sid, name in theme.items() if sid not in clash}

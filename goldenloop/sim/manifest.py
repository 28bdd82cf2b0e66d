"""Ground truth of a simulation run: which sessions each scenario and failure touched.

Detectors (flags, drift, alerts, incident scoping) are scored against this: a session
listed under ``failures["thumbs_down"]`` really got a thumbs-down, one under
``scenarios["eu-prompt-regression"].sessions`` really got a wrong answer because of it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Final

from goldenloop.sim.config import SimConfig

#: Injected failure kinds recorded per session.
FAILURE_KINDS: Final = (
    "thumbs_down",  # explicit negative feedback
    "rephrase",  # next user message nearly repeats the previous one
    "abandon",  # session ended right after an unsatisfying answer
    "tool_error",  # at least one tool span failed
    "tool_error_streak",  # two or more consecutive tool failures
    "circuit_breaker",  # agent loop tripped its breaker
    "max_tokens",  # a final answer stopped at the token limit
    "injection",  # a user message carried a prompt-injection attempt
    "guardrail_block",  # a guardrail blocked input or output
    "judge_low",  # an online judge scored an answer below 0.5
    "provider_error",  # an LLM call failed (outage)
    "wrong_answer",  # the answer was factually wrong (ground truth, not observed)
    "unsafe_answer",  # an injection got through and the answer leaked instructions
    "outcome_failure",  # a downstream outcome event reported failure
)


@dataclass
class ChunkTruth:
    """Ground truth gathered while generating one chunk."""

    sessions: int = 0
    turns: int = 0
    sessions_by_project: dict[str, int] = field(default_factory=dict)
    scenario_sessions: dict[str, set[str]] = field(default_factory=dict)
    failure_sessions: dict[str, set[str]] = field(default_factory=dict)

    def scenario(self, name: str, session_id: str) -> None:
        self.scenario_sessions.setdefault(name, set()).add(session_id)

    def failure(self, kind: str, session_id: str) -> None:
        self.failure_sessions.setdefault(kind, set()).add(session_id)


@dataclass
class ScenarioTruth:
    name: str
    kind: str
    start: str
    end: str
    params: dict[str, Any]
    sessions: set[str] = field(default_factory=set)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "start": self.start,
            "end": self.end,
            "params": self.params,
            "session_count": len(self.sessions),
            "sessions": sorted(self.sessions),
        }


@dataclass
class SimManifest:
    config: dict[str, Any]
    scenarios: dict[str, ScenarioTruth]
    failures: dict[str, set[str]]
    sessions: int = 0
    turns: int = 0
    spans: int = 0
    feedback: int = 0
    outcomes: int = 0
    sessions_by_project: dict[str, int] = field(default_factory=dict)

    @classmethod
    def for_config(cls, config: SimConfig) -> SimManifest:
        scenarios = {
            s.name: ScenarioTruth(
                s.name, s.kind, s.start.isoformat(), s.end.isoformat(), s.params()
            )
            for s in config.resolved_scenarios()
        }
        return cls(config.to_dict(), scenarios, {kind: set() for kind in FAILURE_KINDS})

    def add(self, truth: ChunkTruth, *, spans: int, feedback: int, outcomes: int) -> None:
        self.sessions += truth.sessions
        self.turns += truth.turns
        self.spans += spans
        self.feedback += feedback
        self.outcomes += outcomes
        for project, count in truth.sessions_by_project.items():
            self.sessions_by_project[project] = self.sessions_by_project.get(project, 0) + count
        for name, ids in truth.scenario_sessions.items():
            self.scenarios[name].sessions |= ids
        for kind, ids in truth.failure_sessions.items():
            self.failures.setdefault(kind, set()).update(ids)

    def scenario_sessions(self, name: str) -> set[str]:
        return self.scenarios[name].sessions

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "totals": {
                "sessions": self.sessions,
                "turns": self.turns,
                "spans": self.spans,
                "feedback": self.feedback,
                "outcomes": self.outcomes,
                "sessions_by_project": dict(sorted(self.sessions_by_project.items())),
            },
            "scenarios": [truth.to_dict() for truth in self.scenarios.values()],
            "failures": {kind: sorted(ids) for kind, ids in self.failures.items()},
        }

    def to_json(self, *, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SimManifest:
        totals = data["totals"]
        scenarios = {
            s["name"]: ScenarioTruth(
                s["name"], s["kind"], s["start"], s["end"], s["params"], set(s["sessions"])
            )
            for s in data["scenarios"]
        }
        return cls(
            config=data["config"],
            scenarios=scenarios,
            failures={kind: set(ids) for kind, ids in data["failures"].items()},
            sessions=totals["sessions"],
            turns=totals["turns"],
            spans=totals["spans"],
            feedback=totals["feedback"],
            outcomes=totals["outcomes"],
            sessions_by_project=dict(totals["sessions_by_project"]),
        )

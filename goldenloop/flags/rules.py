"""The flag rule registry: a tiny protocol, the run context rules read, and policies.

A rule is a small object with a ``name``, a ``description`` and one method,
``candidates(ctx)``, that returns SQL selecting the sessions it flags in the run's
scope, one row per session, with these columns in this order::

    session_id, project, customer_tier, trace_id, score, severity, reason, event_time, details

``severity`` may be NULL (the rule's policy decides), ``details`` is JSON text or NULL.
The engine wraps that SQL with sampling, the daily cap and the insert, so a rule never
writes anything itself and every rule gets the same burst protection.

Rules are registered by name in ``RULES``; built-in rules (``goldenloop.flags.builtin``)
use ``register_rule`` exactly as a user's rule does::

    @register_rule
    @dataclass(frozen=True)
    class SlowRetrieval:
        name: ClassVar[str] = "slow_retrieval"
        description: ClassVar[str] = "A retrieval span slower than max_ms."
        max_ms: float = 2000.0

        def candidates(self, ctx: RuleContext) -> CandidateQuery:
            spans, params = ctx.spans("session_id, project, customer_tier, trace_id, ...")
            ...

Rule parameters are the constructor's keyword arguments; the YAML config sets them and
``__post_init__`` may reject values by raising ``ValueError("param: why")``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar, Literal, Protocol, TypeVar, runtime_checkable

from goldenloop.store.base import Dialect, Store

#: Column order every rule's candidate SQL returns.
CANDIDATE_COLUMNS: tuple[str, ...] = (
    "session_id",
    "project",
    "customer_tier",
    "trace_id",
    "score",
    "severity",
    "reason",
    "event_time",
    "details",
)

#: Severity scale: 4 is P0 (time-to-eval target applies), 1 is P3.
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4)


def priority_of(severity: int) -> str:
    """Severity 4 → ``P0`` … severity 1 → ``P3``."""
    return f"P{4 - max(1, min(4, severity))}"


@dataclass(frozen=True)
class CandidateQuery:
    sql: str
    params: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Scope:
    """The sessions one run evaluates.

    ``all``: every session. ``ingested``: sessions with a span ingested in
    ``(lo, hi]`` (the engine's incremental mode). ``range``: sessions with a span that
    started in ``[lo, hi)`` (backfill). ``start_floor``/``start_ceiling`` bound the
    spans read, so DuckDB's zone maps skip old row groups.
    """

    mode: Literal["all", "ingested", "range"]
    lo: datetime | None = None
    hi: datetime | None = None
    start_floor: datetime | None = None
    start_ceiling: datetime | None = None
    #: Incremental runs: the previous run's clock, so time-based rules (abandon) also
    #: see sessions that went quiet since then without receiving new spans.
    previous_run_at: datetime | None = None


@dataclass
class RuleContext:
    """What a rule sees: the dialect, the run's clock and scope, and the store for
    small look-ups (rules must not write)."""

    store: Store
    scope: Scope
    now: datetime
    lookback: timedelta = timedelta(hours=24)
    _cache: dict[str, Any] = field(default_factory=dict)

    @property
    def dialect(self) -> Dialect:
        return self.store.dialect

    def scope_filter(self, alias: str = "") -> tuple[str, list[Any]]:
        """WHERE clause (over spans) selecting every span of the sessions in scope."""
        p = alias + "." if alias else ""
        s = self.scope
        clauses = [f"{p}session_id IS NOT NULL"]
        params: list[Any] = []
        if s.start_floor is not None:
            clauses.append(f"{p}start_time >= ?")
            params.append(s.start_floor)
        if s.start_ceiling is not None:
            clauses.append(f"{p}start_time < ?")
            params.append(s.start_ceiling)
        if s.mode == "ingested":
            clauses.append(
                f"{p}session_id IN (SELECT session_id FROM spans WHERE ingested_at > ? "
                "AND ingested_at <= ? AND session_id IS NOT NULL)"
            )
            params += [s.lo, s.hi]
        elif s.mode == "range":
            clauses.append(
                f"{p}session_id IN (SELECT session_id FROM spans WHERE start_time >= ? "
                "AND start_time < ? AND session_id IS NOT NULL)"
            )
            params += [s.lo, s.hi]
        return " AND ".join(clauses), params

    def spans(self, columns: str) -> tuple[str, list[Any]]:
        """``SELECT columns FROM spans WHERE <scope>`` and its parameters."""
        where, params = self.scope_filter()
        return f"SELECT {columns} FROM spans WHERE {where}", params

    def settled_sessions(
        self, idle: timedelta
    ) -> tuple[str | None, list[Any], datetime | None, datetime]:
        """Sessions to judge once they have been quiet for ``idle``: touched sessions,
        plus (incremental runs) sessions whose idle deadline passed since the previous
        run.

        Returns ``(sql selecting their session_id or None for every session, params,
        floor, cutoff)``. Read their spans with ``start_time >= floor`` (when not None)
        and keep only sessions whose last span ended before ``cutoff``."""
        cutoff = self.now - idle
        if self.scope.mode == "all":
            return None, [], None, cutoff
        where, params = self.scope_filter()
        sources = [f"SELECT session_id FROM spans WHERE {where}"]
        extra: list[Any] = list(params)
        floor = self.scope.start_floor
        previous = self.scope.previous_run_at
        if self.scope.mode == "ingested" and previous is not None:
            since = previous - idle
            # A span that ends in [since, cutoff) started at most one turn before.
            sources.append(
                "SELECT session_id FROM spans WHERE session_id IS NOT NULL AND start_time >= ? "
                "AND end_time >= ? AND end_time < ?"
            )
            extra += [since - timedelta(hours=1), since, cutoff]
            since_floor = since - self.lookback
            floor = since_floor if floor is None else min(floor, since_floor)
        return " UNION ".join(sources), extra, floor, cutoff


@runtime_checkable
class Rule(Protocol):
    """A flag rule. ``name``/``description`` are class attributes; parameters are
    constructor keyword arguments."""

    name: ClassVar[str]
    description: ClassVar[str]
    #: Severity when the rule's SQL gives none (1 = P3 … 4 = P0).
    default_severity: ClassVar[int]

    def candidates(self, ctx: RuleContext) -> CandidateQuery: ...


@dataclass(frozen=True)
class RulePolicy:
    """How much of what a rule finds reaches the queue."""

    enabled: bool = True
    #: Fraction of flagged sessions kept (deterministic per session).
    sample_rate: float = 1.0
    #: Most queued flags per rule per day (None: unlimited); the highest scores win.
    daily_cap: int | None = 200
    #: Candidates scoring below this are dropped (None: keep all).
    min_score: float | None = None
    #: Overrides the rule's severity (1–4).
    severity: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.sample_rate <= 1.0:
            raise ValueError(f"sample_rate: must be in (0, 1], got {self.sample_rate}")
        if self.daily_cap is not None and self.daily_cap < 0:
            raise ValueError(f"daily_cap: must be 0 or more, got {self.daily_cap}")
        if self.severity is not None and self.severity not in SEVERITIES:
            raise ValueError(f"severity: must be 1, 2, 3 or 4, got {self.severity}")


@dataclass(frozen=True)
class ConfiguredRule:
    rule: Rule
    policy: RulePolicy

    @property
    def name(self) -> str:
        return self.rule.name

    @property
    def severity(self) -> int:
        return self.policy.severity or self.rule.default_severity


RuleClass = type[Any]
R = TypeVar("R", bound=RuleClass)

#: name → rule class. Built-ins and users' rules register the same way.
RULES: dict[str, RuleClass] = {}
#: name → default policy for rules that want different defaults (e.g. a higher cap).
DEFAULT_POLICIES: dict[str, RulePolicy] = {}


def register_rule(cls: R, *, policy: RulePolicy | None = None) -> R:
    """Register a rule class under its ``name`` (usable as a decorator)."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"rule class {cls.__name__} needs a 'name' that is an identifier")
    for attr in ("description", "default_severity", "candidates"):
        if not hasattr(cls, attr):
            raise ValueError(f"rule {name!r} lacks {attr!r}")
    RULES[name] = cls
    if policy is not None:
        DEFAULT_POLICIES[name] = policy
    return cls


def default_rules() -> list[ConfiguredRule]:
    """Every registered rule with its default parameters and policy."""
    import goldenloop.flags.builtin  # noqa: F401  (registers the built-ins)

    return [
        ConfiguredRule(cls(), DEFAULT_POLICIES.get(name, RulePolicy()))
        for name, cls in RULES.items()
    ]


def rule_names() -> Sequence[str]:
    import goldenloop.flags.builtin  # noqa: F401

    return tuple(RULES)

"""Built-in rules that look at individual spans: breaker trips, token-limit stops, tool
error streaks, low judge scores, unsure guardrails and wasted tool calls."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from goldenloop.flags._sql import fmt_number, json_object, json_valid
from goldenloop.flags.rules import CandidateQuery, RuleContext, register_rule

#: Span columns the span rules read (never the large text columns).
_COLUMNS = (
    "session_id, project, customer_tier, trace_id, span_id, name, kind, start_time, "
    "status, error_type, tool_name, tool_args, stop_reason, score, model"
)


def _sql_list(values: tuple[str, ...]) -> str:
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values) or "NULL"


def per_session_hits(
    ctx: RuleContext,
    *,
    match: str,
    match_params: list[Any],
    reason: str,
    score: str = "CAST(m.n AS DOUBLE PRECISION)",
    details: dict[str, str] | None = None,
    order: str = "start_time, span_id",
    extra_columns: str = "",
    extra_select: str = "",
) -> CandidateQuery:
    """One candidate per session from the spans matching ``match``: the first match
    (by ``order``) gives trace and time; ``m.n`` counts the matches."""
    spans, params = ctx.spans(_COLUMNS + extra_columns)
    detail = json_object(ctx.dialect, details or {"matches": "m.n"})
    sql = f"""
        WITH s AS NOT MATERIALIZED ({spans}),
        m AS (
            SELECT s.*, {extra_select}row_number() OVER (PARTITION BY session_id ORDER BY {order}) AS rn,
                   count(*) OVER (PARTITION BY session_id) AS n
            FROM s WHERE {match}
        ),
        info AS (
            SELECT session_id, max(customer_tier) AS customer_tier FROM s
            WHERE session_id IN (SELECT session_id FROM m) GROUP BY session_id
        )
        SELECT m.session_id, m.project, info.customer_tier, m.trace_id, {score}, NULL,
               {reason}, m.start_time, {detail}
        FROM m LEFT JOIN info ON info.session_id = m.session_id
        WHERE m.rn = 1
    """
    return CandidateQuery(sql, tuple(params + match_params))


def _times(expr: str) -> str:
    return f"CASE WHEN {expr} > 1 THEN ' (' || CAST({expr} AS VARCHAR) || ' times)' ELSE '' END"


@dataclass(frozen=True)
class CircuitBreaker:
    name: ClassVar[str] = "circuit_breaker"
    description: ClassVar[str] = (
        "An agent loop tripped its circuit breaker (error type, stop reason or a "
        "true-valued attribute)."
    )
    default_severity: ClassVar[int] = 3
    error_types: tuple[str, ...] = ("CircuitBreakerOpen", "CircuitBreakerError")
    stop_reasons: tuple[str, ...] = ("circuit_breaker",)
    #: Attribute keys whose true value marks a trip (e.g.
    #: ``goldenloop.circuit_breaker.tripped``). Off by default: reading every span's
    #: raw attributes costs more than the rest of the rule; breakers that record an
    #: error type or stop reason are found without it.
    attributes: tuple[str, ...] = ()
    #: Span kinds whose attributes are searched (failed spans always are).
    attribute_kinds: tuple[str, ...] = ("agent", "chain")

    def candidates(self, ctx: RuleContext) -> CandidateQuery:
        tests = [
            f"error_type IN ({_sql_list(self.error_types)})",
            f"stop_reason IN ({_sql_list(self.stop_reasons)})",
        ]
        params: list[Any] = []
        for key in self.attributes:
            # Only failed spans and agent/chain spans are searched for the attribute (a
            # breaker trips on the agent loop), and the LIKE pre-filter keeps JSON
            # parsing to the few that could match: scanning every span's attributes
            # would dominate the rule's cost.
            tests.append(
                f"((status = 'error' OR kind IN ({_sql_list(self.attribute_kinds)})) "
                "AND attributes LIKE ? AND lower(attributes::json ->> ?) IN ('true', '1'))"
            )
            params += ["%" + key.replace("%", "") + "%", key]
        return per_session_hits(
            ctx,
            match="(" + " OR ".join(tests) + ")",
            match_params=params,
            reason="'circuit breaker tripped in ' || m.name || coalesce(' (' || m.error_type || ')', '')"
            + " || "
            + _times("m.n"),
            details={"error_type": "m.error_type", "span": "m.name", "matches": "m.n"},
            extra_columns=", attributes" if self.attributes else "",
        )


@dataclass(frozen=True)
class MaxTokensStop:
    name: ClassVar[str] = "max_tokens"
    description: ClassVar[str] = "An LLM call stopped at its output token limit."
    default_severity: ClassVar[int] = 2
    stop_reasons: tuple[str, ...] = ("max_tokens",)

    def candidates(self, ctx: RuleContext) -> CandidateQuery:
        return per_session_hits(
            ctx,
            match=f"kind = 'llm' AND stop_reason IN ({_sql_list(self.stop_reasons)})",
            match_params=[],
            reason="'answer stopped at the token limit (' || m.stop_reason || ', ' || "
            "coalesce(m.model, 'unknown model') || ')' || " + _times("m.n"),
            details={"model": "m.model", "matches": "m.n"},
        )


@dataclass(frozen=True)
class ToolErrorStreak:
    name: ClassVar[str] = "tool_error_streak"
    description: ClassVar[str] = "N or more tool calls in a row failed (default 2)."
    default_severity: ClassVar[int] = 3
    min_streak: int = 2
    #: Count a streak within one turn (trace) or across the whole session.
    within: Literal["turn", "session"] = "turn"

    def __post_init__(self) -> None:
        if self.min_streak < 2:
            raise ValueError(f"min_streak: must be at least 2, got {self.min_streak}")

    def candidates(self, ctx: RuleContext) -> CandidateQuery:
        spans, params = ctx.spans(_COLUMNS)
        part = "session_id, trace_id" if self.within == "turn" else "session_id"
        sql = f"""
            WITH s AS NOT MATERIALIZED ({spans}),
            failing AS (SELECT DISTINCT session_id FROM s WHERE kind = 'tool' AND status = 'error'),
            t AS (
                SELECT session_id, project, trace_id, span_id, start_time, status, tool_name,
                       error_type,
                       row_number() OVER (PARTITION BY {part} ORDER BY start_time, span_id)
                     - row_number() OVER (PARTITION BY {part}, status = 'error'
                                          ORDER BY start_time, span_id) AS grp
                FROM s WHERE kind = 'tool' AND session_id IN (SELECT session_id FROM failing)
            ),
            runs AS (
                SELECT session_id, min(project) AS project, min(trace_id) AS trace_id,
                       count(*) AS n, min(start_time) AS started, min(tool_name) AS tool_name,
                       max(tool_name) AS last_tool, min(error_type) AS error_type
                FROM t WHERE status = 'error'
                GROUP BY {part}, grp HAVING count(*) >= ?
            ),
            best AS (
                SELECT runs.*, row_number() OVER (PARTITION BY session_id
                                                  ORDER BY n DESC, started) AS rn
                FROM runs
            ),
            info AS (
                SELECT session_id, max(customer_tier) AS customer_tier FROM s
                WHERE session_id IN (SELECT session_id FROM best) GROUP BY session_id
            )
            SELECT b.session_id, b.project, info.customer_tier, b.trace_id,
                   CAST(b.n AS DOUBLE PRECISION), NULL,
                   CAST(b.n AS VARCHAR) || ' consecutive tool errors (' ||
                   coalesce(b.tool_name, 'tool') ||
                   CASE WHEN b.last_tool <> b.tool_name THEN ', ' || b.last_tool ELSE '' END ||
                   coalesce(': ' || b.error_type, '') || ')',
                   b.started,
                   {json_object(ctx.dialect, {"streak": "b.n", "tool": "b.tool_name", "error_type": "b.error_type"})}
            FROM best b LEFT JOIN info ON info.session_id = b.session_id
            WHERE b.rn = 1
        """
        return CandidateQuery(sql, (*params, self.min_streak))


@dataclass(frozen=True)
class JudgeLowScore:
    name: ClassVar[str] = "judge_low"
    description: ClassVar[str] = "An online judge scored an answer below the threshold."
    default_severity: ClassVar[int] = 3
    threshold: float = 0.5
    kinds: tuple[str, ...] = ("judge",)

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold: must be between 0 and 1, got {self.threshold}")

    def candidates(self, ctx: RuleContext) -> CandidateQuery:
        d = ctx.dialect
        return per_session_hits(
            ctx,
            match=f"kind IN ({_sql_list(self.kinds)}) AND score IS NOT NULL AND score < ?",
            match_params=[self.threshold],
            order="score, start_time, span_id",
            score="1.0 - m.score",
            reason=f"m.name || ' scored ' || {fmt_number(d, 'm.score', 3)} || ' (below "
            f"{self.threshold:g})' || " + _times("m.n"),
            details={"judge": "m.name", "score": "m.score", "matches": "m.n"},
        )


@dataclass(frozen=True)
class GuardrailLowConfidence:
    """A guardrail's score is P(violation); its confidence is ``|2·score − 1|``. A
    guardrail that is unsure (confidence below ``min_confidence``) is worth a look."""

    name: ClassVar[str] = "guardrail_low_confidence"
    description: ClassVar[str] = "A guardrail decided with low confidence (score near 0.5)."
    default_severity: ClassVar[int] = 2
    min_confidence: float = 0.3
    kinds: tuple[str, ...] = ("guardrail",)

    def __post_init__(self) -> None:
        if not 0.0 < self.min_confidence <= 1.0:
            raise ValueError(f"min_confidence: must be in (0, 1], got {self.min_confidence}")

    def candidates(self, ctx: RuleContext) -> CandidateQuery:
        d = ctx.dialect
        confidence = "abs(2 * score - 1)"
        return per_session_hits(
            ctx,
            match=f"kind IN ({_sql_list(self.kinds)}) AND score IS NOT NULL AND {confidence} < ?",
            match_params=[self.min_confidence],
            order="abs(2 * score - 1), start_time, span_id",
            score="1.0 - abs(2 * m.score - 1)",
            reason=f"m.name || ' unsure: score ' || {fmt_number(d, 'm.score', 3)} || "
            f"' (confidence below {self.min_confidence:g})' || " + _times("m.n"),
            details={"guardrail": "m.name", "score": "m.score", "matches": "m.n"},
        )


@dataclass(frozen=True)
class RedundantToolCalls:
    """The same tool called again with the same arguments in one turn after it had
    already succeeded (a retry after a failure is not waste)."""

    name: ClassVar[str] = "redundant_tool_calls"
    description: ClassVar[str] = "Same tool, same arguments, called again in one turn."
    default_severity: ClassVar[int] = 1
    #: Also count repeats that follow a failed identical call.
    count_retries: bool = False
    #: Flag when at least this many redundant calls happened in the session.
    min_redundant: int = 1

    def __post_init__(self) -> None:
        if self.min_redundant < 1:
            raise ValueError(f"min_redundant: must be at least 1, got {self.min_redundant}")

    def candidates(self, ctx: RuleContext) -> CandidateQuery:
        spans, params = ctx.spans(_COLUMNS)
        previous = "prev_status IS NOT NULL" if self.count_retries else "prev_status = 'ok'"
        args = "coalesce(regexp_replace(s.tool_args, '\\s+', '', 'g'), '')"
        sql = f"""
            WITH s AS NOT MATERIALIZED ({spans}),
            repeated AS (
                SELECT trace_id, tool_name FROM s WHERE kind = 'tool' AND tool_name IS NOT NULL
                GROUP BY trace_id, tool_name HAVING count(*) >= 2
            ),
            t AS (
                SELECT s.session_id, s.project, s.trace_id, s.start_time, s.tool_name,
                       s.tool_args,
                       lag(s.status) OVER (PARTITION BY s.trace_id, s.tool_name, {args}
                                           ORDER BY s.start_time, s.span_id) AS prev_status
                FROM s JOIN repeated r ON r.trace_id = s.trace_id AND r.tool_name = s.tool_name
                WHERE s.kind = 'tool'
            ),
            waste AS (
                SELECT session_id, min(project) AS project, trace_id, tool_name,
                       min(tool_args) AS tool_args, count(*) AS n, min(start_time) AS started
                FROM t WHERE {previous}
                GROUP BY session_id, trace_id, tool_name
            ),
            per_session AS (
                SELECT waste.*, sum(n) OVER (PARTITION BY session_id) AS total,
                       row_number() OVER (PARTITION BY session_id ORDER BY n DESC, started)
                           AS rn
                FROM waste
            ),
            info AS (
                SELECT session_id, max(customer_tier) AS customer_tier FROM s
                WHERE session_id IN (SELECT session_id FROM per_session) GROUP BY session_id
            )
            SELECT p.session_id, p.project, info.customer_tier, p.trace_id,
                   CAST(p.total AS DOUBLE PRECISION), NULL,
                   p.tool_name || ' called ' || CAST(p.n + 1 AS VARCHAR) ||
                   ' times with the same arguments in one turn' ||
                   CASE WHEN p.total > p.n THEN ' (' || CAST(p.total AS VARCHAR) ||
                        ' redundant calls in the session)' ELSE '' END,
                   p.started,
                   {json_object(ctx.dialect, {"tool": "p.tool_name", "arguments": "left(p.tool_args, 500)", "redundant_calls": "p.total"})}
            FROM per_session p LEFT JOIN info ON info.session_id = p.session_id
            WHERE p.rn = 1 AND p.total >= ?
        """
        return CandidateQuery(sql, (*params, self.min_redundant))


@dataclass(frozen=True)
class InvalidToolArguments:
    name: ClassVar[str] = "invalid_tool_args"
    description: ClassVar[str] = (
        "A tool call had arguments that are not valid JSON or that the tool rejected."
    )
    default_severity: ClassVar[int] = 2
    error_types: tuple[str, ...] = (
        "InvalidToolArguments",
        "ToolArgumentsError",
        "ValidationError",
        "SchemaValidationError",
        "JSONDecodeError",
    )
    #: Arguments that do not parse as JSON count as invalid.
    require_json: bool = True

    def candidates(self, ctx: RuleContext) -> CandidateQuery:
        tests = [f"error_type IN ({_sql_list(self.error_types)})"]
        why = f"CASE WHEN error_type IN ({_sql_list(self.error_types)}) THEN error_type"
        if self.require_json:
            bad = f"(tool_args IS NOT NULL AND tool_args <> '' AND NOT {json_valid(ctx.dialect, 'tool_args')})"
            tests.append(bad)
            why += " ELSE 'not valid JSON'"
        why += " END"
        return per_session_hits(
            ctx,
            match=f"kind = 'tool' AND ({' OR '.join(tests)})",
            match_params=[],
            reason="'invalid arguments for ' || coalesce(m.tool_name, m.name) || ' (' || m.why || ')' || "
            + _times("m.n"),
            details={
                "tool": "m.tool_name",
                "arguments": "left(m.tool_args, 500)",
                "matches": "m.n",
            },
            extra_select=f"{why} AS why, ",
        )


for _rule in (
    CircuitBreaker,
    MaxTokensStop,
    ToolErrorStreak,
    JudgeLowScore,
    GuardrailLowConfidence,
    RedundantToolCalls,
    InvalidToolArguments,
):
    register_rule(_rule)

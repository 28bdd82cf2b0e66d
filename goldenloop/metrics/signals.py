"""Which span fields and attributes mean "circuit breaker tripped", "injection attempt",
"guardrail blocked", "parse error" … and the SQL snippets (macros) that test them.

Applications name these signals differently, so none of them is hard-coded in a metric:
every metric and turn feature refers to a ``{macro}`` that ``SqlEnv`` renders from a
``SignalConfig`` for the store's SQL dialect. The defaults follow goldenloop's own
attribute names (what ``goldenloop.sdk`` and the simulator emit) plus common spellings;
override them in the ``signals:`` section of the metrics config file.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from goldenloop.model import BILLABLE_KINDS
from goldenloop.store.base import Dialect

_SAFE_KEY = re.compile(r"^[A-Za-z0-9_.:/@\-]+$")
_TRUTHY = "('true', '1', 'yes', 'on')"


class SignalConfigError(ValueError):
    """A ``signals:`` entry is malformed; the message names it."""


def check_key(key: str, *, what: str = "attribute name") -> str:
    """Attribute keys and flag names end up inside SQL string literals: allow only a
    safe character set (letters, digits and ``_ . : / @ -``)."""
    if not isinstance(key, str) or not _SAFE_KEY.match(key):
        raise SignalConfigError(f"{what} {key!r} may only contain letters, digits and _ . : / @ -")
    return key


def sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def sql_list(values: Sequence[str]) -> str:
    return "(" + ", ".join(sql_literal(v) for v in values) + ")"


@dataclass(frozen=True)
class SignalConfig:
    """Names and thresholds behind the signal metrics (all have working defaults)."""

    #: A truthy root/any-span attribute that says the agent's circuit breaker tripped.
    circuit_breaker_attribute: str = "goldenloop.circuit_breaker.tripped"
    #: error_type values that also mean a breaker trip.
    circuit_breaker_error_types: tuple[str, ...] = ("CircuitBreakerOpen",)
    #: Root attribute with the agent's iteration count (else: LLM calls in the turn).
    iterations_attribute: str = "goldenloop.agent.iterations"
    #: Guardrail span attribute holding its decision, and the values that mean "blocked".
    guardrail_decision_attribute: str = "goldenloop.guardrail.decision"
    guardrail_block_values: tuple[str, ...] = ("block", "blocked", "deny", "denied", "reject")
    #: Guardrails whose span name contains one of these are injection detectors …
    injection_guardrails: tuple[str, ...] = ("injection", "jailbreak")
    #: … and flag an attempt when they block or score at least this much.
    injection_min_score: float = 0.5
    #: A truthy attribute on any span that marks an injection attempt directly.
    injection_attribute: str = "goldenloop.injection.detected"
    #: Guardrails whose span name contains one of these check output policy …
    policy_guardrails: tuple[str, ...] = ("policy", "moderation", "toxicity", "safety")
    #: … and report a violation when they block or score at least this much.
    policy_min_score: float = 0.5
    #: Tools whose call means "handed to a human", and a truthy attribute meaning the same.
    escalation_tools: tuple[str, ...] = (
        "escalate", "escalate_to_human", "handoff", "handoff_to_human", "transfer_to_human",
        "create_ticket",
    )  # fmt: skip
    escalation_attribute: str = "goldenloop.escalated"
    #: error_type substrings (case-insensitive) that make an error a parse error.
    parse_error_patterns: tuple[str, ...] = ("parse", "json", "decode")
    #: error_type substrings (case-insensitive) that mean a tool got invalid arguments.
    invalid_argument_patterns: tuple[str, ...] = ("argument", "validation", "invalid_param")
    #: Judge scores at or above this pass.
    judge_threshold: float = 0.5
    #: Only judge spans with one of these names count (empty: every judge span).
    judge_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in (
            "circuit_breaker_attribute", "iterations_attribute", "guardrail_decision_attribute",
            "injection_attribute", "escalation_attribute",
        ):  # fmt: skip
            check_key(getattr(self, name), what=f"signals.{name}")
        for name in ("injection_min_score", "policy_min_score", "judge_threshold"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise SignalConfigError(f"signals.{name} must be a number, got {value!r}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> SignalConfig:
        """Build from the ``signals:`` section of the config file."""
        if not data:
            return cls()
        if not isinstance(data, Mapping):
            raise SignalConfigError("signals: must be a mapping of setting → value")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key not in fields:
                raise SignalConfigError(
                    f"signals.{key}: unknown signal setting; use one of {', '.join(sorted(fields))}"
                )
            default = fields[key].default
            if isinstance(default, tuple):
                if isinstance(value, str):
                    value = [value]
                if not isinstance(value, list | tuple) or not all(
                    isinstance(v, str) for v in value
                ):
                    raise SignalConfigError(f"signals.{key} must be a list of strings")
                value = tuple(value)
            elif isinstance(default, str) and not isinstance(value, str):
                raise SignalConfigError(f"signals.{key} must be a string")
            values[key] = value
        return cls(**values)


def _json_text(column: str, key: str) -> str:
    """``column ->> key`` guarded by a cheap substring test, so rows without the key are
    never parsed (JSON parsing dominates scans otherwise)."""
    check_key(key)
    return (
        f"CASE WHEN {column} LIKE {sql_literal('%' + chr(34) + key + chr(34) + '%')} "
        f"THEN ({column}::json ->> {sql_literal(key)}) END"
    )


def _contains_any(expr: str, patterns: Sequence[str]) -> str:
    if not patterns:
        return "FALSE"
    parts = [f"lower({expr}) LIKE {sql_literal('%' + p.lower() + '%')}" for p in patterns]
    return "(" + " OR ".join(parts) + ")"


@dataclass(frozen=True)
class SqlEnv:
    """A dialect plus a signal config: renders ``{macro}`` placeholders in metric SQL."""

    dialect: Dialect
    signals: SignalConfig = SignalConfig()

    def json_text(self, column: str, key: str) -> str:
        return _json_text(column, key)

    def as_number(self, expr: str) -> str:
        """``expr`` (text) as a double, NULL when it is not a number (never an error)."""
        if self.dialect == "duckdb":
            return f"TRY_CAST({expr} AS DOUBLE)"
        number = r"'^\s*-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?\s*$'"
        return f"(CASE WHEN ({expr}) ~ {number} THEN CAST({expr} AS DOUBLE PRECISION) END)"

    def json_valid(self, expr: str) -> str:
        """TRUE when ``expr`` parses as JSON (PostgreSQL 15 has no IS JSON; migration 11
        installs ``goldenloop_json_valid``)."""
        if self.dialect == "duckdb":
            return f"coalesce(json_valid({expr}), FALSE)"
        return f"goldenloop_json_valid({expr})"

    @cached_property
    def macros(self) -> dict[str, str]:
        """Boolean SQL per signal. Each is a CASE whose first test is a cheap column
        check (kind, root, error_type), so JSON and text tests run only on the few spans
        that can carry the signal (CASE evaluates lazily on both engines)."""
        s = self.signals
        decision = _json_text("attributes", s.guardrail_decision_attribute)
        blocked = (
            f"coalesce(lower({decision}) IN "
            f"{sql_list([v.lower() for v in s.guardrail_block_values])}, FALSE)"
        )
        injection_guard = _contains_any("name", s.injection_guardrails)
        policy_guard = _contains_any("name", s.policy_guardrails)
        judge_names = f" AND name IN {sql_list(s.judge_names)}" if s.judge_names else ""
        breaker_types = (
            f"coalesce(error_type IN {sql_list(s.circuit_breaker_error_types)}, FALSE)"
            if s.circuit_breaker_error_types
            else "FALSE"
        )
        escalation_tools = (
            f"coalesce(tool_name IN {sql_list(s.escalation_tools)}, FALSE)"
            if s.escalation_tools
            else "FALSE"
        )

        def truthy(key: str) -> str:
            return f"coalesce(lower({_json_text('attributes', key)}) IN {_TRUTHY}, FALSE)"

        judged = f"(CASE WHEN kind = 'judge' THEN score IS NOT NULL{judge_names} ELSE FALSE END)"
        return {
            "billable": "kind IN " + sql_list(list(BILLABLE_KINDS)),
            "is_root": "parent_id IS NULL",
            "judged": judged,
            "judge_threshold": repr(float(s.judge_threshold)),
            "judge_pass": (
                f"(CASE WHEN kind = 'judge' THEN coalesce(score >= {float(s.judge_threshold)!r}"
                f"{judge_names}, FALSE) ELSE FALSE END)"
            ),
            "guardrail_block": f"(CASE WHEN kind = 'guardrail' THEN {blocked} ELSE FALSE END)",
            "injection": (
                f"(CASE WHEN kind = 'guardrail' THEN ({injection_guard} AND ({blocked} OR "
                f"coalesce(score >= {float(s.injection_min_score)!r}, FALSE))) "
                f"OR {truthy(s.injection_attribute)} "
                f"WHEN parent_id IS NULL THEN {truthy(s.injection_attribute)} ELSE FALSE END)"
            ),
            "policy_violation": (
                f"(CASE WHEN kind = 'guardrail' THEN {policy_guard} AND ({blocked} OR "
                f"coalesce(score >= {float(s.policy_min_score)!r}, FALSE)) "
                "WHEN kind = 'llm' THEN coalesce(stop_reason = 'content_filter', FALSE) "
                "ELSE FALSE END)"
            ),
            "escalation": (
                f"(CASE WHEN kind = 'tool' THEN {escalation_tools} WHEN parent_id IS NULL THEN "
                f"{truthy(s.escalation_attribute)} ELSE FALSE END)"
            ),
            "breaker": (
                f"(CASE WHEN parent_id IS NULL OR kind IN ('agent', 'chain') THEN "
                f"{truthy(s.circuit_breaker_attribute)} OR {breaker_types} "
                f"ELSE {breaker_types} END)"
            ),
            "parse_error": (
                f"(CASE WHEN error_type IS NOT NULL THEN "
                f"{_contains_any('error_type', s.parse_error_patterns)} ELSE FALSE END)"
            ),
            "invalid_arguments": (
                f"(CASE WHEN kind <> 'tool' THEN FALSE "
                f"WHEN tool_args IS NOT NULL AND NOT {self.json_valid('tool_args')} THEN TRUE "
                f"WHEN error_type IS NOT NULL THEN "
                f"{_contains_any('error_type', s.invalid_argument_patterns)} ELSE FALSE END)"
            ),
            "empty_output": (
                "(CASE WHEN status = 'ok' AND (parent_id IS NULL OR kind = 'llm') "
                "AND output_text IS NOT NULL THEN length(output_text) < 64 "
                "AND trim(output_text) = '' AND coalesce(stop_reason, '') <> 'tool_calls' "
                "ELSE FALSE END)"
            ),
            "root_iterations": self.as_number(_json_text("attributes", s.iterations_attribute)),
        }

    def render(self, sql: str) -> str:
        """Replace ``{macro}`` placeholders; unknown names are an error naming them."""
        try:
            return sql.format_map(self.macros)
        except KeyError as exc:
            raise SignalConfigError(
                f"unknown SQL macro {{{exc.args[0]}}}; known: {', '.join(sorted(self.macros))}"
            ) from None

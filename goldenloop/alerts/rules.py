"""Alert rules: a registry of rule types, each behind a tiny protocol.

A rule type turns the type-specific keys of a rule definition into a ``Rule``::

    class Rule(Protocol):
        def lookback(self) -> timedelta: ...          # how much history one evaluation reads
        def load(self, ctx, span) -> Timeline: ...    # read what evaluations in ``span`` need

    class Timeline(Protocol):
        def evaluate(self, at) -> list[Sample]: ...   # the rule's series at one time

Loading once and evaluating many times is what makes backtests cheap: the evaluator
loads ``[at − lookback, at)`` and evaluates at ``at``; a backtest loads the whole range
once and evaluates at every step. Built-in types register exactly as a user's do::

    from goldenloop.alerts.rules import RuleType, register_rule_type

    register_rule_type(RuleType("my_rule", MyRule.from_spec, "What it alerts on."))

Every rule has the common keys ``name``, ``type``, ``severity`` (page or ticket),
``for`` (how long the condition must hold before it fires), ``keep_firing_for`` (how
long a firing alert stays firing after its condition clears), ``labels``,
``annotations``, ``description`` and ``enabled``; the rest belong to its type. A bad
definition raises ``RuleError`` naming the rule and the key.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from goldenloop.alerts.model import SEVERITIES, Sample, Severity
from goldenloop.alerts.series import MinuteSeries, SeriesCache, SeriesQuery, load_series
from goldenloop.metrics.dimensions import (
    Dimension,
    DimensionError,
    Filter,
    parse_dimension,
    parse_dimensions,
    parse_filter,
)
from goldenloop.metrics.signals import SqlEnv
from goldenloop.metrics.slo import SLO
from goldenloop.metrics.windows import TimeWindow, WindowError, format_duration, parse_duration
from goldenloop.store.base import Store

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_LABEL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
COMMON_KEYS = frozenset(
    {
        "name",
        "type",
        "severity",
        "for",
        "keep_firing_for",
        "labels",
        "annotations",
        "description",
        "enabled",
    }
)
RESERVED_LABELS = frozenset({"alertname", "severity"})


class RuleError(ValueError):
    """A rule definition is invalid; the message names the rule and the key."""


class RuleEvaluationError(RuntimeError):
    """A valid rule cannot be evaluated right now (e.g. it names an unknown SLO)."""


@dataclass
class RuleContext:
    """What a rule may read while loading: the store, the signal SQL environment, the
    SLOs by name, whether the turn facts are fresh, and the evaluator's series cache."""

    store: Store
    env: SqlEnv
    slos: Mapping[str, SLO] = field(default_factory=dict)
    facts: bool = False
    cache: SeriesCache | None = None

    def series(self, query: SeriesQuery, window: TimeWindow) -> MinuteSeries:
        """Per-minute series of ``query`` over ``window`` (through the cache, if any)."""
        if self.cache is not None:
            return self.cache.get(self.store, self.env, query, window, facts=self.facts)
        return load_series(self.store, self.env, query, window, facts=self.facts)


class Timeline(Protocol):
    def evaluate(self, at: datetime) -> list[Sample]: ...


class Rule(Protocol):
    def lookback(self) -> timedelta: ...

    def load(self, ctx: RuleContext, span: TimeWindow) -> Timeline: ...


@dataclass(frozen=True)
class RuleType:
    name: str
    build: Callable[[RuleSpec], Rule]
    description: str
    #: Defaults for the common keys when a rule does not set them.
    severity: Severity = "ticket"
    hold: timedelta = timedelta(0)


RULE_TYPES: dict[str, RuleType] = {}


def register_rule_type(rule_type: RuleType) -> RuleType:
    """Add (or replace) a rule type; the built-ins register the same way."""
    RULE_TYPES[rule_type.name] = rule_type
    return rule_type


class RuleSpec:
    """The type-specific keys of one rule definition, read with validation. Every
    getter records the key as known; ``finish`` rejects the unknown ones."""

    def __init__(self, rule: str, data: Mapping[str, Any], *, prefix: str = "") -> None:
        self.rule = rule
        self.data = data
        self.prefix = prefix
        self._known: set[str] = set() if prefix else set(COMMON_KEYS)

    def nested(self, key: str, data: Mapping[str, Any]) -> RuleSpec:
        """A spec for a mapping inside this one (errors name ``key.sub``)."""
        return RuleSpec(self.rule, data, prefix=f"{self.prefix}{key}.")

    def error(self, key: str, message: str) -> RuleError:
        return RuleError(f"rule {self.rule!r}: {self.prefix}{key}: {message}")

    def raw(self, key: str) -> Any:
        self._known.add(key)
        return self.data.get(key)

    def has(self, key: str) -> bool:
        self._known.add(key)
        return self.data.get(key) is not None

    def text(self, key: str, default: str | None = None) -> str | None:
        value = self.raw(key)
        if value is None:
            return default
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, f"expected a non-empty string, got {value!r}")
        return value.strip()

    def number(
        self, key: str, default: float | None, *, minimum: float | None = None,
        above: float | None = 0.0, maximum: float | None = None,
    ) -> float | None:  # fmt: skip
        value = self.raw(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise self.error(key, f"expected a number, got {value!r}")
        try:
            number = float(str(value).strip().rstrip("x×"))
        except ValueError:
            raise self.error(key, f"expected a number, got {value!r}") from None
        if number != number or number in (float("inf"), float("-inf")):
            raise self.error(key, "must be a finite number")
        if above is not None and number <= above:
            raise self.error(key, f"must be greater than {above:g}, got {number:g}")
        if minimum is not None and number < minimum:
            raise self.error(key, f"must be at least {minimum:g}, got {number:g}")
        if maximum is not None and number > maximum:
            raise self.error(key, f"must be at most {maximum:g}, got {number:g}")
        return number

    def integer(self, key: str, default: int, *, minimum: int = 0) -> int:
        value = self.raw(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"expected a whole number, got {value!r}")
        if value < minimum:
            raise self.error(key, f"must be at least {minimum}, got {value}")
        return value

    def duration(
        self, key: str, default: str | None, *, minimum: timedelta = timedelta(minutes=1),
        whole_minutes: bool = True,
    ) -> timedelta | None:  # fmt: skip
        value = self.raw(key)
        if value is None:
            if default is None:
                return None
            value = default
        if minimum == timedelta(0) and str(value).strip().lower() in ("0", "0s", "0m", "0h"):
            return timedelta(0)
        try:
            length = parse_duration(str(value), name=key)
        except WindowError as exc:
            raise self.error(key, str(exc).split(": ", 1)[-1]) from None
        if length < minimum:
            raise self.error(key, f"must be at least {format_duration(minimum)}")
        if whole_minutes and length % timedelta(minutes=1):
            raise self.error(key, "must be a whole number of minutes (rules evaluate per minute)")
        return length

    def dims(self, key: str, default: Sequence[str] = ()) -> tuple[Dimension, ...]:
        value = self.raw(key)
        if value is None:
            value = list(default)
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(
                key, "expected a list of dimensions (locale, customer_tier, flag.NAME …)"
            )
        try:
            return tuple(parse_dimensions(value))
        except DimensionError as exc:
            raise self.error(key, str(exc)) from None

    def filters(self, key: str = "filter") -> tuple[Filter, ...]:
        """``{project: refund-assistant}`` or ``["locale=de-DE", "customer_tier!=free"]``."""
        value = self.raw(key)
        if value is None:
            return ()
        try:
            if isinstance(value, Mapping):
                return tuple(
                    Filter(parse_dimension(str(k)), None if v is None else str(v))
                    for k, v in value.items()
                )
            if isinstance(value, str):
                value = [value]
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                return tuple(parse_filter(v) for v in value)
        except DimensionError as exc:
            raise self.error(key, str(exc)) from None
        raise self.error(key, "expected a mapping of dimension → value or a list of DIM=VALUE")

    def choice(self, key: str, default: str, choices: Sequence[str]) -> str:
        value = self.raw(key)
        if value is None:
            return default
        if value not in choices:
            raise self.error(key, f"{value!r} is not one of {', '.join(choices)}")
        return str(value)

    def finish(self) -> None:
        unknown = sorted(set(map(str, self.data)) - self._known)
        if unknown:
            known = sorted(self._known - (set() if self.prefix else COMMON_KEYS))
            where = f"{self.prefix.rstrip('.')}: " if self.prefix else ""
            raise RuleError(
                f"rule {self.rule!r}: {where}unknown key(s) {', '.join(unknown)}; "
                f"use {', '.join(known) or 'no other keys'}"
            )


@dataclass(frozen=True)
class AlertRule:
    name: str
    type: str
    severity: Severity
    hold: timedelta
    impl: Rule
    definition: dict[str, Any]
    #: A firing alert whose condition clears stays firing this long (flapping guard).
    keep_firing_for: timedelta = timedelta(0)
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    description: str = ""
    enabled: bool = True
    origin: Literal["file", "api"] = "file"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "severity": self.severity,
            "for": format_duration(self.hold) if self.hold else "0s",
            "keep_firing_for": format_duration(self.keep_firing_for)
            if self.keep_firing_for
            else "0s",
            "labels": self.labels,
            "annotations": self.annotations,
            "description": self.description,
            "enabled": self.enabled,
            "origin": self.origin,
            "definition": self.definition,
        }


def _string_map(
    data: Mapping[str, Any], key: str, rule: str, *, label_names: bool
) -> dict[str, str]:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise RuleError(f"rule {rule!r}: {key}: expected a mapping of name → text")
    result: dict[str, str] = {}
    for name, text in value.items():
        if label_names and (not _LABEL.match(str(name)) or name in RESERVED_LABELS):
            raise RuleError(
                f"rule {rule!r}: {key}.{name}: label names are letters, digits and _ "
                f"(and not {', '.join(sorted(RESERVED_LABELS))})"
            )
        if isinstance(text, Mapping | list) or text is None:
            raise RuleError(f"rule {rule!r}: {key}.{name}: expected a text value")
        result[str(name)] = str(text)
    return result


def parse_rule(
    data: Any, *, origin: Literal["file", "api"] = "file", where: str = "rule"
) -> AlertRule:
    """One rule definition → an ``AlertRule`` (raises ``RuleError`` naming rule and key)."""
    if not isinstance(data, Mapping):
        raise RuleError(f"{where}: expected a mapping with at least name and type")
    name = data.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise RuleError(f"{where}: name: use letters, digits, '-', '_' or '.' (got {name!r})")
    type_name = data.get("type")
    rule_type = RULE_TYPES.get(str(type_name))
    if rule_type is None:
        raise RuleError(
            f"rule {name!r}: type: {type_name!r} is not a rule type; use one of "
            f"{', '.join(sorted(RULE_TYPES))}"
        )
    severity = data.get("severity", rule_type.severity)
    if severity not in SEVERITIES:
        raise RuleError(f"rule {name!r}: severity: {severity!r} is not one of page, ticket")
    spec = RuleSpec(name, data)
    hold = spec.duration("for", None, minimum=timedelta(0))
    if hold is None:
        hold = rule_type.hold
    keep = spec.duration("keep_firing_for", "0s", minimum=timedelta(0)) or timedelta(0)
    enabled = data.get("enabled", True)
    if not isinstance(enabled, bool):
        raise RuleError(f"rule {name!r}: enabled: expected true or false")
    description = data.get("description") or ""
    if not isinstance(description, str):
        raise RuleError(f"rule {name!r}: description: expected text")
    impl = rule_type.build(spec)
    spec.finish()
    return AlertRule(
        name=name, type=rule_type.name, severity=severity, hold=hold, impl=impl,
        definition=dict(data), keep_firing_for=keep, labels=_string_map(data, "labels", name, label_names=True),
        annotations=_string_map(data, "annotations", name, label_names=False),
        description=description, enabled=enabled, origin=origin,
    )  # fmt: skip


def parse_rules(items: Any, *, origin: Literal["file", "api"] = "file") -> list[AlertRule]:
    if items is None:
        return []
    if not isinstance(items, list):
        raise RuleError("rules: expected a list of rule definitions")
    rules = [parse_rule(item, origin=origin, where=f"rules[{i}]") for i, item in enumerate(items)]
    names = [r.name for r in rules]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise RuleError(f"rules: duplicate rule name(s) {', '.join(duplicates)}")
    return rules

"""Slice dimensions: ``locale``, ``customer_tier``, ``flag.eu_banner``, ``attr.intent`` …

A dimension names either a spans column, a feature flag (``flag.NAME``, read from the
``feature_flags`` JSON) or any raw span attribute (``attr.NAME``). How a row of each
metric source gets its value:

* **span-own** dimensions (``kind``, ``model``, ``provider``, ``status`` …) describe the
  span itself; a turn takes them from its root span, else from its last LLM call's
  largest value (``max``).
* **context** dimensions (``locale``, ``customer_tier``, ``prompt_hash``, flags,
  attributes …) describe the turn: a span uses its own value and falls back to its
  turn's root span; a turn uses its root span's value, falling back to the largest
  value among its spans; sessions, feedback and outcomes use their session's.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from goldenloop.metrics.signals import SignalConfigError, check_key, sql_literal

#: Plain span columns that can be a dimension, with the aliases people type.
COLUMNS: tuple[str, ...] = (
    "project", "model", "model_version", "prompt_hash", "customer_tier", "locale",
    "index_version", "user_id", "kind", "provider", "status", "name", "tool_name",
    "error_type", "stop_reason", "session_id",
)  # fmt: skip
ALIASES: dict[str, str] = {
    "tier": "customer_tier",
    "prompt": "prompt_hash",
    "prompt_version": "prompt_hash",
    "index": "index_version",
    "user": "user_id",
    "session": "session_id",
    "tool": "tool_name",
    "span_kind": "kind",
}
#: Describe the span itself (not inherited from the turn).
SPAN_OWN: frozenset[str] = frozenset(
    {"kind", "model", "model_version", "provider", "status", "name", "tool_name",
     "error_type", "stop_reason"}
)  # fmt: skip
#: Stamped on every span of a trace at ingest (conventions.TRACE_LEVEL_FIELDS + project),
#: so a filter on them can be pushed into the span scan.
PROPAGATED: frozenset[str] = frozenset(
    {"project", "session_id", "user_id", "customer_tier", "locale"}
)
#: What the regression finder slices by when not told otherwise (flags are added from
#: the data; user_id and session_id are too fine to be slices).
DEFAULT_SLICES: tuple[str, ...] = (
    "project", "model", "model_version", "prompt_hash", "customer_tier", "locale",
    "index_version", "provider",
)  # fmt: skip
NONE_VALUE = "(none)"


class DimensionError(ValueError):
    """A dimension or filter is malformed; the message names it."""


@dataclass(frozen=True)
class Dimension:
    name: str
    column: str
    key: str | None = None

    @property
    def is_json(self) -> bool:
        return self.key is not None

    @property
    def is_flag(self) -> bool:
        return self.column == "feature_flags"

    @property
    def span_own(self) -> bool:
        return self.key is None and self.column in SPAN_OWN

    @property
    def propagated(self) -> bool:
        return self.key is None and self.column in PROPAGATED

    def sql(self, alias: str = "") -> str:
        """The value on one spans row (``alias.`` prefix optional)."""
        column = f"{alias}.{self.column}" if alias else self.column
        if self.key is None:
            return column
        needle = sql_literal('%"' + self.key + '"%')
        return f"(CASE WHEN {column} LIKE {needle} THEN ({column}::json ->> {sql_literal(self.key)}) END)"


def parse_dimension(text: str) -> Dimension:
    raw = (text or "").strip()
    lowered = raw.lower()
    for prefix, column in (
        ("flag.", "feature_flags"), ("feature_flag.", "feature_flags"), ("flags.", "feature_flags"),
        ("attr.", "attributes"), ("attribute.", "attributes"), ("attributes.", "attributes"),
    ):  # fmt: skip
        if lowered.startswith(prefix) and len(raw) > len(prefix):
            key = raw[len(prefix) :]
            try:
                check_key(key, what="flag name" if column == "feature_flags" else "attribute name")
            except SignalConfigError as exc:
                raise DimensionError(str(exc)) from None
            short = "flag." if column == "feature_flags" else "attr."
            return Dimension(short + key, column, key)
    name = ALIASES.get(lowered, lowered)
    if name in COLUMNS:
        return Dimension(name, name)
    raise DimensionError(
        f"unknown dimension {raw!r}: use one of {', '.join(COLUMNS)}, flag.NAME or attr.NAME"
    )


def parse_dimensions(texts: Iterable[str]) -> list[Dimension]:
    seen: dict[str, Dimension] = {}
    for text in texts:
        for part in (p for p in str(text).split(",") if p.strip()):
            dim = parse_dimension(part)
            seen[dim.name] = dim
    return list(seen.values())


@dataclass(frozen=True)
class Filter:
    dimension: Dimension
    value: str | None  # None: the dimension is absent
    negate: bool = False

    def condition(self, expr: str) -> tuple[str, list[str]]:
        if self.value is None:
            return (f"{expr} IS NOT NULL" if self.negate else f"{expr} IS NULL"), []
        if self.negate:
            return f"({expr} IS NULL OR {expr} <> ?)", [self.value]
        return f"{expr} = ?", [self.value]

    def __str__(self) -> str:
        op = "!=" if self.negate else "="
        return f"{self.dimension.name}{op}{NONE_VALUE if self.value is None else self.value}"


def parse_filter(text: str) -> Filter:
    """``DIM=VALUE`` or ``DIM!=VALUE``; ``(none)`` as the value means "not set"."""
    negate = "!=" in text
    name, sep, value = text.partition("!=" if negate else "=")
    if not sep or not name.strip():
        raise DimensionError(f"filter {text!r} must look like DIM=VALUE (e.g. locale=de-DE)")
    value = value.strip()
    return Filter(parse_dimension(name), None if value == NONE_VALUE else value, negate)


def parse_filters(texts: Iterable[str]) -> list[Filter]:
    return [parse_filter(t) for t in texts if t.strip()]


def filters_from_pairs(pairs: Sequence[tuple[str, str]]) -> list[Filter]:
    """Filters from query-string pairs ``(DIM, VALUE)``."""
    result = []
    for name, value in pairs:
        negate = name.endswith("!")
        dim = parse_dimension(name[:-1] if negate else name)
        result.append(Filter(dim, None if value == NONE_VALUE else value, negate))
    return result

"""Series keys ↔ labels, filters and scopes, shared by the metric rule types."""

from __future__ import annotations

from collections.abc import Sequence

from goldenloop.alerts.series import SliceKey
from goldenloop.metrics.catalog import format_value
from goldenloop.metrics.dimensions import NONE_VALUE, Dimension, Filter


def slice_labels(by: Sequence[Dimension], key: SliceKey) -> dict[str, str]:
    """``{locale: de-DE, customer_tier: pro}`` for one series (missing values read
    ``(none)``)."""
    return {d.name: NONE_VALUE if v is None else v for d, v in zip(by, key, strict=True)}


def slice_filters(by: Sequence[Dimension], key: SliceKey) -> tuple[Filter, ...]:
    """Filters that select exactly one series."""
    return tuple(Filter(d, v) for d, v in zip(by, key, strict=True))


def scope_of(filters: Sequence[Filter], by: Sequence[Dimension], key: SliceKey) -> dict[str, str]:
    """The slice a series covers: the rule's equality filters plus the series values."""
    scope = {f.dimension.name: f.value for f in filters if not f.negate and f.value is not None}
    scope.update({k: v for k, v in slice_labels(by, key).items() if v != NONE_VALUE})
    return scope


def keys_or_all(keys: list[SliceKey], by: Sequence[Dimension]) -> list[SliceKey]:
    """The series to evaluate: every key seen, or the single all-traffic key."""
    return keys if by else [()]


def fmt(value: float | None, unit: str) -> str:
    return format_value(value, unit)


def fmt_rate(value: float | None) -> str:
    return format_value(value, "ratio")

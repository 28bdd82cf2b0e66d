"""SLO definitions: what counts as a good event, the objective, the period.

An SLI is a ratio of good events to valid events. Kinds:

``latency``   turns (or spans of ``span_kind``) faster than ``threshold_ms``
``judge``     judge scores at or above ``min_score`` (optionally one judge by ``judge``)
``outcome``   successful downstream outcome events (optionally one ``outcome`` name)
``feedback``  thumbs-up among explicit feedback
``success``   sessions that succeeded by the combined task-success rule
``turn``      turns that are good on every listed check (``checks``): blends outcome
              signals (judge pass) with operational ones (no error, no breaker trip,
              not empty, under ``threshold_ms``)
``ratio``     any rate metric of the catalog (``metric``), good = its good direction

Every SLI takes ``filter`` (dimension → value), e.g. ``{project: refund-assistant,
customer_tier: enterprise}``. SLOs come from the metrics config file and from the API
(stored in the ``slos`` table); a name is unique across both.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, get_args

from goldenloop.metrics.catalog import METRICS, MetricDef, get_metric
from goldenloop.metrics.dimensions import DimensionError, Filter, parse_dimension
from goldenloop.metrics.signals import sql_literal
from goldenloop.metrics.windows import WindowError, format_duration, parse_duration
from goldenloop.store.base import Store

SliKind = Literal["latency", "judge", "outcome", "feedback", "success", "turn", "ratio"]
SLI_KINDS: tuple[str, ...] = get_args(SliKind)
TURN_CHECKS: dict[str, tuple[str, tuple[str, ...]]] = {
    "no_error": ("root_error = 0", ("root_error",)),
    "judge_pass": (
        "(judge_scored = 0 OR judge_passed = judge_scored)",
        ("judge_scored", "judge_passed"),
    ),
    "no_breaker": ("breaker_trips = 0", ("breaker_trips",)),
    "not_empty": ("empty_answers = 0", ("empty_answers",)),
    "no_max_tokens": ("max_tokens_stops = 0", ("max_tokens_stops",)),
    "no_guardrail_block": ("guardrail_blocks = 0", ("guardrail_blocks",)),
}
DEFAULT_TURN_CHECKS = ("no_error", "judge_pass", "no_breaker", "not_empty")
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")


class SloError(ValueError):
    """An SLO definition is invalid; the message names the field."""


@dataclass(frozen=True)
class SLI:
    kind: SliKind
    filters: tuple[Filter, ...] = ()
    threshold_ms: float | None = None
    span_kind: str | None = None
    min_score: float | None = None
    judge: str | None = None
    outcome: str | None = None
    metric: str | None = None
    checks: tuple[str, ...] = ()

    def good_metric(self, judge_threshold: float) -> MetricDef:
        """The SLI as a catalog-style rate/ratio metric whose value is the good share."""
        kind = self.kind
        if kind == "latency":
            assert self.threshold_ms is not None
            if self.span_kind:
                return _rate(
                    "spans",
                    f"latency_ms <= {self.threshold_ms!r}",
                    f"kind = {sql_literal(self.span_kind)} AND latency_ms IS NOT NULL",
                )
            return _rate("turns", f"root_latency_ms <= {self.threshold_ms!r}",
                         "root_latency_ms IS NOT NULL", ("root_latency_ms",))  # fmt: skip
        if kind == "judge":
            score = self.min_score if self.min_score is not None else judge_threshold
            where = "kind = 'judge' AND score IS NOT NULL"
            if self.judge:
                where += f" AND (name = {sql_literal(self.judge)} OR name LIKE {sql_literal('%' + self.judge + '%')})"
            return _rate("spans", f"score >= {float(score)!r}", where)
        if kind == "outcome":
            where = f"name = {sql_literal(self.outcome)}" if self.outcome else "TRUE"
            return _rate("outcomes", "success", where)
        if kind == "feedback":
            return _rate("feedback", "rating = 'up'", "TRUE")
        if kind == "success":
            return _rate("sessions", "success = 1", "success IS NOT NULL",
                         ("judge_scored", "judge_score_sum"))  # fmt: skip
        if kind == "turn":
            conditions: list[str] = []
            needs: list[str] = []
            for check in self.checks or DEFAULT_TURN_CHECKS:
                sql, features = TURN_CHECKS[check]
                conditions.append(sql)
                needs.extend(features)
            if self.threshold_ms is not None:
                conditions.append(f"root_latency_ms <= {self.threshold_ms!r}")
                needs.append("root_latency_ms")
            return _rate("turns", " AND ".join(conditions), "TRUE", tuple(dict.fromkeys(needs)))
        assert self.metric is not None
        base = get_metric(self.metric)
        good = base.expr if base.higher_is_better else f"NOT ({base.expr})"
        if base.aggregation == "rate":
            return _rate(base.source, good, base.where, base.needs)
        assert base.denominator is not None
        numerator = base.expr if base.higher_is_better else f"({base.denominator}) - ({base.expr})"
        return MetricDef("sli", "SLI", "ratio", base.source, "ratio", expr=numerator,
                         denominator=base.denominator, where=base.where, needs=base.needs)  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.kind}
        for name in ("threshold_ms", "span_kind", "min_score", "judge", "outcome", "metric"):
            if getattr(self, name) is not None:
                data[name] = getattr(self, name)
        if self.checks:
            data["checks"] = list(self.checks)
        if self.filters:
            data["filter"] = {f.dimension.name: f.value for f in self.filters}
        return data


def _rate(source: Any, good: str, where: str, needs: tuple[str, ...] = ()) -> MetricDef:
    return MetricDef("sli", "SLI", "ratio", source, "rate", expr=good, where=where, needs=needs)


@dataclass(frozen=True)
class SLO:
    name: str
    objective: float
    sli: SLI
    period: timedelta = timedelta(days=30)
    description: str = ""
    origin: Literal["file", "api"] = "file"

    @property
    def error_budget(self) -> float:
        """The share of valid events allowed to be bad."""
        return 1.0 - self.objective

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "objective": self.objective,
            "period": format_duration(self.period),
            "sli": self.sli.to_dict(),
            "origin": self.origin,
        }


def parse_objective(value: Any) -> float:
    """``0.95``, ``95``, ``"95%"``, ``"99.9%"`` → a fraction in (0, 1)."""
    text = str(value).strip()
    try:
        number = float(text.rstrip("%"))
    except ValueError:
        raise SloError(f"objective: {value!r} is not a number like 0.95 or 95%") from None
    if text.endswith("%") or number > 1:
        number /= 100
    if not 0 < number < 1:
        raise SloError(f"objective: {value!r} must lie strictly between 0% and 100%")
    return number


def _number(data: Mapping[str, Any], key: str, where: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise SloError(f"{where}.{key}: expected a number, got {value!r}")
    try:
        return float(value)
    except ValueError:
        raise SloError(f"{where}.{key}: expected a number, got {value!r}") from None


def _text(data: Mapping[str, Any], key: str, where: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise SloError(f"{where}.{key}: expected a non-empty string")
    return value.strip()


def parse_sli(data: Any, where: str = "sli") -> SLI:
    if not isinstance(data, Mapping):
        raise SloError(f"{where}: expected a mapping with at least 'kind'")
    known = {"kind", "filter", "threshold_ms", "span_kind", "min_score", "judge", "outcome",
             "metric", "checks"}  # fmt: skip
    unknown = sorted(set(data) - known)
    if unknown:
        raise SloError(f"{where}: unknown field(s) {', '.join(unknown)}")
    kind = data.get("kind")
    if kind not in SLI_KINDS:
        raise SloError(f"{where}.kind: {kind!r} is not one of {', '.join(SLI_KINDS)}")
    raw_filters = data.get("filter") or {}
    if not isinstance(raw_filters, Mapping):
        raise SloError(f"{where}.filter: expected a mapping of dimension → value")
    filters = []
    for name, value in raw_filters.items():
        try:
            filters.append(
                Filter(parse_dimension(str(name)), None if value is None else str(value))
            )
        except DimensionError as exc:
            raise SloError(f"{where}.filter: {exc}") from None
    threshold = _number(data, "threshold_ms", where)
    min_score = _number(data, "min_score", where)
    metric = _text(data, "metric", where)
    raw_checks = data.get("checks") or []
    if not isinstance(raw_checks, list) or any(c not in TURN_CHECKS for c in raw_checks):
        raise SloError(f"{where}.checks: use a list of {', '.join(TURN_CHECKS)}")
    if kind == "latency" and (threshold is None or threshold <= 0):
        raise SloError(f"{where}.threshold_ms: a latency SLI needs a positive threshold_ms")
    if kind == "ratio":
        if metric is None:
            raise SloError(f"{where}.metric: a ratio SLI names a rate metric")
        base = METRICS.get(metric)
        if base is None or base.significance_test != "proportion" or base.higher_is_better is None:
            rates = sorted(m.name for m in METRICS.values()
                           if m.significance_test == "proportion" and m.higher_is_better is not None)  # fmt: skip
            raise SloError(
                f"{where}.metric: {metric!r} is not a rate metric; use one of {', '.join(rates)}"
            )
    return SLI(
        kind=kind, filters=tuple(filters), threshold_ms=threshold,
        span_kind=_text(data, "span_kind", where), min_score=min_score,
        judge=_text(data, "judge", where), outcome=_text(data, "outcome", where),
        metric=metric, checks=tuple(raw_checks),
    )  # fmt: skip


def parse_slo(data: Any, *, origin: Literal["file", "api"] = "file", where: str = "slo") -> SLO:
    if not isinstance(data, Mapping):
        raise SloError(f"{where}: expected a mapping with name, objective and sli")
    unknown = sorted(set(data) - {"name", "description", "objective", "period", "sli"})
    if unknown:
        raise SloError(f"{where}: unknown field(s) {', '.join(unknown)}")
    name = data.get("name")
    if not isinstance(name, str) or not name or not set(name.lower()) <= _NAME_CHARS:
        raise SloError(f"{where}.name: use letters, digits, '-', '_' or '.' (got {name!r})")
    where = f"slo {name!r}"
    if "objective" not in data:
        raise SloError(f"{where}.objective: required (e.g. 0.95 or 95%)")
    try:
        period = parse_duration(str(data.get("period", "30d")), name=f"{where}.period")
    except WindowError as exc:
        raise SloError(str(exc)) from None
    if period < timedelta(hours=1):
        raise SloError(f"{where}.period: must be at least 1h")
    description = data.get("description") or ""
    if not isinstance(description, str):
        raise SloError(f"{where}.description: expected a string")
    return SLO(
        name=name,
        objective=parse_objective(data["objective"]),
        sli=parse_sli(data.get("sli"), f"{where}.sli"),
        period=period,
        description=description,
        origin=origin,
    )


def parse_slos(items: Any, *, origin: Literal["file", "api"] = "file") -> list[SLO]:
    if items is None:
        return []
    if not isinstance(items, list):
        raise SloError("slos: expected a list of SLO definitions")
    slos = [parse_slo(item, origin=origin, where=f"slos[{i}]") for i, item in enumerate(items)]
    names = [s.name for s in slos]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SloError(f"slos: duplicate name(s) {', '.join(duplicates)}")
    return slos


# -- API-defined SLOs (the ``slos`` table) --------------------------------------------------
def stored_slos(store: Store) -> list[SLO]:
    rows = store.fetch("SELECT name, definition FROM slos ORDER BY name")
    return [parse_slo(json.loads(definition), origin="api") for _, definition in rows]


def save_slo(store: Store, slo: SLO, file_slos: list[SLO]) -> bool:
    """Store an API-defined SLO (replacing one of the same name); True when new."""
    if any(s.name == slo.name for s in file_slos):
        raise SloConflict(f"SLO {slo.name!r} is defined in the config file; edit it there")
    now = datetime.now(UTC).replace(tzinfo=None)
    existed = bool(store.fetch("SELECT 1 FROM slos WHERE name = ?", [slo.name]))
    definition = json.dumps({k: v for k, v in slo.to_dict().items() if k != "origin"})
    if existed:
        store.execute("UPDATE slos SET definition = ?, updated_at = ? WHERE name = ?",
                      [definition, now, slo.name])  # fmt: skip
    else:
        store.execute("INSERT INTO slos (name, definition, created_at, updated_at) VALUES (?, ?, ?, ?)",
                      [slo.name, definition, now, now])  # fmt: skip
    return not existed


def delete_slo(store: Store, name: str, file_slos: list[SLO]) -> bool:
    if any(s.name == name for s in file_slos):
        raise SloConflict(f"SLO {name!r} is defined in the config file; remove it there")
    existed = bool(store.fetch("SELECT 1 FROM slos WHERE name = ?", [name]))
    if existed:
        store.execute("DELETE FROM slos WHERE name = ?", [name])
    return existed


class SloConflict(SloError):
    """The SLO belongs to the config file and cannot be changed through the API."""


@dataclass
class SloSet:
    """File SLOs plus API SLOs (names are unique across both)."""

    file: list[SLO] = field(default_factory=list)

    def all(self, store: Store) -> list[SLO]:
        names = {s.name for s in self.file}
        return [*self.file, *(s for s in stored_slos(store) if s.name not in names)]

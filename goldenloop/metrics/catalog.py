"""The metric catalog: every metric is a ``MetricDef`` row in ``METRICS``.

A metric names its **source** (the rows it aggregates), an **aggregation** and SQL
snippets over the source's columns:

============  ==================================================================
source        one row per …
============  ==================================================================
``spans``     span whose start lies in the window (all span columns)
``turns``     turn (trace) whose root span starts in the window; columns are the
              turn's dimensions plus ``TURN_FEATURES`` (aggregates over its spans)
``sessions``  session whose first turn starts in the window; every turn feature
              summed per session, plus feedback/outcome counts and ``success``
``feedback``  feedback event created in the window (``rating``, ``category``)
``outcomes``  outcome event created in the window (``name``, ``success``, ``value``)
============  ==================================================================

==============  ==============================================  ============
aggregation     value                                           sample size
==============  ==============================================  ============
``rate``        share of ``where`` rows for which ``expr`` holds rows in ``where``
``ratio``       sum(``expr``) / sum(``denominator``)             sum(denominator)
``mean``        avg(``expr``)                                   rows
``quantile``    percentile_cont(``quantile``) of ``expr``       rows
``sum``         sum(``expr``)                                   rows
``count``       number of ``where`` rows                        rows
==============  ==============================================  ============

SQL may use ``{macros}`` from ``signals.SqlEnv`` (``{judge_pass}``, ``{breaker}`` …) so
attribute names stay configurable. Built-ins register exactly the way users' metrics
do: ``register_metric(MetricDef(...))``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

Source = Literal["spans", "turns", "sessions", "feedback", "outcomes"]
Aggregation = Literal["rate", "ratio", "mean", "quantile", "sum", "count"]
Test = Literal["proportion", "distribution", "none"]
SOURCES: tuple[Source, ...] = ("spans", "turns", "sessions", "feedback", "outcomes")


class UnknownMetric(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class TurnFeature:
    """One per-turn column: ``sql`` aggregates the spans of a trace (GROUP BY trace_id).

    ``repeat_join`` marks the one feature that needs its own sub-aggregation
    (redundant tool calls: same tool and arguments twice in one turn)."""

    name: str
    sql: str
    description: str = ""
    repeat_join: bool = False


@dataclass(frozen=True)
class MetricDef:
    name: str
    title: str
    unit: str
    source: Source
    aggregation: Aggregation
    expr: str = "1"
    where: str = "TRUE"
    denominator: str | None = None
    quantile: float | None = None
    #: True/False: which direction is good; None: neither (volume).
    higher_is_better: bool | None = None
    group: str = "other"
    description: str = ""
    #: Turn features the SQL refers to (``turns`` and ``sessions`` sources).
    needs: tuple[str, ...] = ()
    #: Significance test the regression finder uses (derived when omitted).
    test: Test | None = None
    #: The same metric computed per span, used instead when a query groups or filters
    #: by a dimension that describes spans (kind, model, tool_name …): e.g. tool
    #: failures by tool name are counted per tool call, not per turn.
    span_variant: MetricDef | None = None

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"metric {self.name}: unknown source {self.source!r}")
        if self.aggregation == "quantile" and not (
            self.quantile is not None and 0 < self.quantile < 1
        ):
            raise ValueError(f"metric {self.name}: a quantile needs 0 < quantile < 1")
        if self.aggregation == "ratio" and not self.denominator:
            raise ValueError(f"metric {self.name}: a ratio needs a denominator")
        unknown = [n for n in self.needs if n not in TURN_FEATURES]
        if unknown:
            raise ValueError(f"metric {self.name}: unknown turn features {unknown}")

    @property
    def significance_test(self) -> Test:
        if self.test is not None:
            return self.test
        if self.aggregation == "rate":
            return "proportion"
        if self.aggregation in ("quantile", "mean"):
            return "distribution"
        return "none"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "unit": self.unit,
            "source": self.source,
            "aggregation": self.aggregation,
            "quantile": self.quantile,
            "higher_is_better": self.higher_is_better,
            "group": self.group,
            "description": self.description,
        }


METRICS: dict[str, MetricDef] = {}
TURN_FEATURES: dict[str, TurnFeature] = {}


def register_feature(feature: TurnFeature) -> TurnFeature:
    TURN_FEATURES[feature.name] = feature
    return feature


def register_metric(metric: MetricDef) -> MetricDef:
    """Add (or replace) a metric; built-in metrics register the same way."""
    METRICS[metric.name] = metric
    return metric


def get_metric(name: str) -> MetricDef:
    try:
        return METRICS[name]
    except KeyError:
        raise UnknownMetric(
            f"unknown metric {name!r}; known metrics: {', '.join(sorted(METRICS))}"
        ) from None


def resolve_metrics(names: Iterable[str]) -> list[MetricDef]:
    seen: dict[str, MetricDef] = {}
    for name in names:
        for part in (p.strip() for p in name.split(",")):
            if part:
                seen[part] = get_metric(part)
    return list(seen.values())


def format_value(value: float | None, unit: str) -> str:
    """A metric value for people: 93.4%, 1,234 ms, $0.0123, 1.87."""
    if value is None:
        return "–"
    if unit == "ratio":
        return f"{value:.1%}" if value >= 0.001 or value == 0 else f"{value:.3%}"
    if unit == "ms":
        return f"{value:,.0f} ms"
    if unit == "usd":
        return f"${value:,.2f}" if value >= 100 else f"${value:.4f}"
    if unit in ("count", "tokens"):
        return f"{value:,.0f}"
    return f"{value:,.3g}"


def _sum_if(condition: str, value: str = "1") -> str:
    return f"sum(CASE WHEN {condition} THEN {value} ELSE 0 END)"


# -- turn features -------------------------------------------------------------------
for _feature in (
    TurnFeature("root_latency_ms", "max(CASE WHEN {is_root} THEN latency_ms END)",
                "End-to-end latency: the root span's duration."),
    TurnFeature("root_error", "max(CASE WHEN {is_root} AND status = 'error' THEN 1 ELSE 0 END)",
                "1 when the root span failed."),
    TurnFeature("span_count", "count(*)"),
    TurnFeature("error_spans", _sum_if("status = 'error'")),
    TurnFeature("cost_usd", _sum_if("{billable}", "coalesce(cost_usd, 0)"),
                "Dollars of LLM, embedding and judge spans."),
    TurnFeature("tokens", _sum_if("{billable}", "coalesce(input_tokens, 0) + coalesce(output_tokens, 0)")),
    TurnFeature("llm_calls", _sum_if("kind = 'llm'")),
    TurnFeature("llm_errors", _sum_if("kind = 'llm' AND status = 'error'")),
    TurnFeature("max_tokens_stops", _sum_if("kind = 'llm' AND stop_reason = 'max_tokens'")),
    TurnFeature("tool_calls", _sum_if("kind = 'tool'")),
    TurnFeature("tool_errors", _sum_if("kind = 'tool' AND status = 'error'")),
    TurnFeature("invalid_tool_calls", _sum_if("kind = 'tool' AND {invalid_arguments}")),
    TurnFeature("redundant_calls", "0", "Tool calls repeating an earlier call of the same "
                "tool with the same arguments in the turn.", repeat_join=True),
    TurnFeature("parse_errors", _sum_if("{parse_error}")),
    TurnFeature("guardrail_blocks", _sum_if("{guardrail_block}")),
    TurnFeature("injection_attempts", _sum_if("{injection}")),
    TurnFeature("policy_violations", _sum_if("{policy_violation}")),
    TurnFeature("escalations", _sum_if("{escalation}")),
    TurnFeature("breaker_trips", _sum_if("{breaker}")),
    TurnFeature("empty_answers", _sum_if("{empty_output}")),
    TurnFeature("judge_scored", _sum_if("{judged}")),
    TurnFeature("judge_passed", _sum_if("{judge_pass}")),
    TurnFeature("judge_score_sum", _sum_if("{judged}", "score")),
    TurnFeature("iterations",
                "coalesce(max(CASE WHEN {is_root} THEN {root_iterations} END), "
                + _sum_if("kind = 'llm'") + ")",
                "The root's iteration-count attribute, else the number of LLM calls."),
):  # fmt: skip
    register_feature(_feature)


# -- latency -------------------------------------------------------------------------
for _q in (0.5, 0.95, 0.99):
    _p = f"p{int(_q * 100)}"
    register_metric(MetricDef(
        f"turn_latency_{_p}", f"Turn latency {_p.upper()}", "ms", "turns", "quantile",
        expr="root_latency_ms", where="root_latency_ms IS NOT NULL", quantile=_q,
        higher_is_better=False, group="latency", needs=("root_latency_ms",),
        description="End-to-end latency of a turn (its root span).",
    ))  # fmt: skip
    register_metric(MetricDef(
        f"span_latency_{_p}", f"Span latency {_p.upper()}", "ms", "spans", "quantile",
        expr="latency_ms", where="latency_ms IS NOT NULL", quantile=_q, higher_is_better=False,
        group="latency", description="Latency of individual spans; group by kind (and model) "
        "for retrieval, model, tool and guardrail latency.",
    ))  # fmt: skip

# -- cost ----------------------------------------------------------------------------
for _metric in (
    MetricDef("cost_usd", "Cost", "usd", "turns", "sum", expr="cost_usd", group="cost",
              higher_is_better=False, needs=("cost_usd",),
              description="Dollars spent by the LLM, embedding and judge spans of turns.",
              span_variant=MetricDef("cost_usd", "Cost", "usd", "spans", "sum",
                                     expr="coalesce(cost_usd, 0)", where="{billable}")),
    MetricDef("tokens", "Tokens", "tokens", "turns", "sum", expr="tokens", group="cost",
              higher_is_better=False, needs=("tokens",),
              span_variant=MetricDef("tokens", "Tokens", "tokens", "spans", "sum",
                                     expr="coalesce(input_tokens, 0) + coalesce(output_tokens, 0)",
                                     where="{billable}")),
    MetricDef("cost_per_turn", "Cost per turn", "usd", "turns", "mean", expr="cost_usd",
              group="cost", higher_is_better=False, needs=("cost_usd",)),
    MetricDef("cost_per_session", "Cost per session", "usd", "sessions", "mean", expr="cost_usd",
              group="cost", higher_is_better=False, needs=("cost_usd",)),
    MetricDef("tokens_per_session", "Tokens per session", "tokens", "sessions", "mean",
              expr="tokens", group="cost", higher_is_better=False, needs=("tokens",)),
    MetricDef("cost_per_successful_task", "Cost per successful task", "usd", "sessions", "ratio",
              expr="cost_usd", denominator="success", where="success IS NOT NULL",
              group="cost", higher_is_better=False, needs=("cost_usd",), test="none",
              description="Spend of sessions with a known result divided by the successful ones."),
    MetricDef("tokens_per_successful_task", "Tokens per successful task", "tokens", "sessions",
              "ratio", expr="tokens", denominator="success", where="success IS NOT NULL",
              group="cost", higher_is_better=False, needs=("tokens",), test="none"),
    # -- errors ----------------------------------------------------------------------
    MetricDef("turn_error_rate", "Failed turns", "ratio", "turns", "rate", expr="root_error = 1",
              group="errors", higher_is_better=False, needs=("root_error",),
              description="Turns whose root span has status error."),
    MetricDef("tool_error_rate", "Tool failures", "ratio", "turns", "ratio", expr="tool_errors",
              denominator="tool_calls", group="errors", higher_is_better=False,
              needs=("tool_errors", "tool_calls"), test="proportion",
              description="Failed tool calls per tool call.",
              span_variant=MetricDef("tool_error_rate", "Tool failures", "ratio", "spans", "rate",
                                     expr="status = 'error'", where="kind = 'tool'")),
    MetricDef("llm_error_rate", "Model call failures", "ratio", "turns", "ratio",
              expr="llm_errors", denominator="llm_calls", group="errors", higher_is_better=False,
              needs=("llm_errors", "llm_calls"), test="proportion",
              description="Failed LLM calls (provider errors) per call.",
              span_variant=MetricDef("llm_error_rate", "Model call failures", "ratio", "spans",
                                     "rate", expr="status = 'error'", where="kind = 'llm'")),
    MetricDef("parse_error_rate", "Parse errors", "ratio", "turns", "rate",
              expr="parse_errors > 0", group="errors", higher_is_better=False,
              needs=("parse_errors",),
              description="Turns with a span whose error_type mentions parse/json/decode."),
    MetricDef("guardrail_block_rate", "Guardrail blocks", "ratio", "turns", "rate",
              expr="guardrail_blocks > 0", group="errors", higher_is_better=False,
              needs=("guardrail_blocks",), description="Turns a guardrail blocked."),
    MetricDef("empty_response_rate", "Empty responses", "ratio", "turns", "rate",
              expr="empty_answers > 0", group="errors", higher_is_better=False,
              needs=("empty_answers",),
              description="Turns whose answer (root span, or a final LLM call) is blank."),
    # -- safety ----------------------------------------------------------------------
    MetricDef("injection_attempt_rate", "Injection attempts", "ratio", "turns", "rate",
              expr="injection_attempts > 0", group="safety", higher_is_better=False,
              needs=("injection_attempts",)),
    MetricDef("policy_violation_rate", "Policy violations", "ratio", "turns", "rate",
              expr="policy_violations > 0", group="safety", higher_is_better=False,
              needs=("policy_violations",)),
    MetricDef("escalation_rate", "Escalations", "ratio", "turns", "rate",
              expr="escalations > 0", group="safety", higher_is_better=False,
              needs=("escalations",), description="Turns handed to a human."),
    # -- reliability -----------------------------------------------------------------
    MetricDef("circuit_breaker_rate", "Circuit-breaker trips", "ratio", "turns", "rate",
              expr="breaker_trips > 0", group="reliability", higher_is_better=False,
              needs=("breaker_trips",)),
    MetricDef("max_tokens_rate", "stop_reason = max_tokens", "ratio", "turns", "ratio",
              expr="max_tokens_stops", denominator="llm_calls", group="reliability",
              higher_is_better=False, needs=("max_tokens_stops", "llm_calls"), test="proportion",
              description="LLM calls cut off at the token limit.",
              span_variant=MetricDef("max_tokens_rate", "stop_reason = max_tokens", "ratio",
                                     "spans", "rate", expr="stop_reason = 'max_tokens'",
                                     where="kind = 'llm'")),
    # -- volume ----------------------------------------------------------------------
    MetricDef("turns", "Turns", "count", "turns", "count", group="volume"),
    MetricDef("sessions", "Sessions", "count", "sessions", "count", group="volume"),
    MetricDef("spans", "Spans", "count", "spans", "count", group="volume"),
):  # fmt: skip
    register_metric(_metric)

"""What an alert carries when it starts firing: an exemplar session and the slice its
bad events share.

* **Exemplar**: the most recent failing row of the rule's metric in the alert's window
  (for spend: the most expensive turn), resolved to a session id and trace id, then the
  trace's prompt version (prompt hash) and model id (its last LLM call) read from the
  spans.
* **Affected slice**: the bad events counted by prompt hash, locale, tier, model and
  every feature flag seen, with ``metrics.slices.collect_slice_stats``; a value that
  holds at least half of them and is over-represented (the thresholds of
  ``metrics.explain``) is added to the alert's slice, e.g. ``locale=de-DE,
  flag.eu_banner=on``.

Enrichment never stops an alert: a failure is recorded on the alert and logged.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import timedelta
from typing import Any

from goldenloop.alerts.model import Alert, Exemplar, MetricEvidence, Sample, SliceShare
from goldenloop.alerts.rules import RuleContext
from goldenloop.metrics.compute import features_for
from goldenloop.metrics.dimensions import NONE_VALUE, parse_dimension
from goldenloop.metrics.explain import DOMINANT_SHARE, MIN_LIFT
from goldenloop.metrics.relations import RelationSpec, build_relation
from goldenloop.metrics.slices import SliceStat, collect_slice_stats, discover_flags
from goldenloop.metrics.windows import TimeWindow, naive

log = logging.getLogger("goldenloop.alerts")
BREAKDOWN_DIMENSIONS = ("prompt_hash", "locale", "customer_tier", "model")
MAX_BREAKDOWN = 8
_ID_COLUMNS = {
    "turns": "r.session_id, r.trace_id",
    "spans": "r.session_id, r.trace_id",
    "sessions": "r.session_id, CAST(NULL AS TEXT)",
    "feedback": "r.session_id, r.message_id",
    "outcomes": "r.session_id, r.message_id",
}


def _condition(evidence: MetricEvidence, ctx: RuleContext) -> tuple[str, str]:
    """(SQL condition for the rows to look at, ORDER BY) for the evidence's mode."""
    metric, env = evidence.metric, ctx.env
    where, expr = env.render(metric.where), env.render(metric.expr)
    ratio = metric.aggregation == "ratio"
    den = env.render(metric.denominator) if metric.denominator else "1"
    if evidence.mode == "largest":
        return where, f"({expr}) DESC, r.ts DESC"
    if evidence.mode == "failing":
        bad = f"({expr}) < ({den})" if ratio else f"NOT ({expr})"
    else:
        bad = f"({expr}) > 0" if ratio else f"({expr})"
    return f"({where}) AND {bad}", "r.ts DESC"


def find_exemplar(ctx: RuleContext, evidence: MetricEvidence) -> Exemplar | None:
    metric = evidence.metric
    spec = RelationSpec(ctx.env, evidence.window, [], list(evidence.filters),
                        features_for([metric]), facts=ctx.facts)  # fmt: skip
    relation = build_relation(metric.source, spec)
    condition, order = _condition(evidence, ctx)
    rows = ctx.store.fetch(
        f"SELECT {_ID_COLUMNS[metric.source]} FROM ({relation.sql}) r WHERE {condition} "
        f"ORDER BY {order} LIMIT 1",
        relation.params,
    )
    if not rows:
        return None
    session_id, trace_hint = rows[0]
    trace_id = _trace_of(ctx, session_id, trace_hint, evidence.window, metric.source)
    return Exemplar(session_id=session_id, trace_id=trace_id)


def _trace_of(ctx: RuleContext, session_id: str | None, hint: str | None, window: TimeWindow,
              source: str) -> str | None:  # fmt: skip
    if source in ("turns", "spans"):
        return hint
    lo, hi = naive(window.start - timedelta(days=1)), naive(window.end + timedelta(hours=1))
    if hint:
        rows = ctx.store.fetch(
            "SELECT trace_id FROM spans WHERE (trace_id = ? OR message_id = ?) AND start_time >= ? "
            "AND start_time < ? ORDER BY start_time DESC LIMIT 1",
            [hint, hint, lo, hi],
        )
        if rows:
            return str(rows[0][0])
    if session_id:
        rows = ctx.store.fetch(
            "SELECT trace_id FROM spans WHERE session_id = ? AND parent_id IS NULL "
            "AND start_time >= ? AND start_time < ? ORDER BY start_time DESC LIMIT 1",
            [session_id, lo, hi],
        )
        if rows:
            return str(rows[0][0])
    return None


def complete_exemplar(ctx: RuleContext, exemplar: Exemplar) -> Exemplar:
    """Fill the prompt version, model and project from the exemplar's trace."""
    if not exemplar.trace_id:
        return exemplar
    rows = ctx.store.fetch(
        "SELECT parent_id, kind, project, session_id, prompt_hash, model, model_version, start_time "
        "FROM spans WHERE trace_id = ? ORDER BY start_time",
        [exemplar.trace_id],
    )
    if not rows:
        return exemplar
    roots = [r for r in rows if r[0] is None] or rows[:1]
    llm = [r for r in rows if r[1] == "llm" and r[5]]

    def first(index: int) -> Any:
        for row in (*roots, *rows):
            if row[index]:
                return row[index]
        return None

    return replace(
        exemplar,
        session_id=exemplar.session_id or first(3),
        project=exemplar.project or first(2),
        prompt_version=exemplar.prompt_version or first(4),
        model=exemplar.model or (llm[-1][5] if llm else first(5)),
        model_version=exemplar.model_version or (llm[-1][6] if llm and llm[-1][6] else first(6)),
    )


def slice_breakdown(
    ctx: RuleContext, evidence: MetricEvidence, exclude: set[str]
) -> list[SliceShare]:
    """The top value of each breakdown dimension among the evidence's bad events."""
    metric = evidence.metric
    window = evidence.window
    names = [*BREAKDOWN_DIMENSIONS, *(f"flag.{f}" for f in discover_flags(ctx.store, window))]
    dims = [parse_dimension(n) for n in names if n not in exclude]
    if not dims:
        return []
    if metric.aggregation in ("sum", "count", "mean"):
        metric = replace(metric, aggregation="ratio", denominator="1", span_variant=None)
    measured = replace(metric, name="_alert_evidence", test="proportion", span_variant=None)
    nothing = TimeWindow(window.start - timedelta(microseconds=1), window.start)
    stats = collect_slice_stats(ctx.store, ctx.env, [measured], dims, evidence.filters, window,
                                nothing, facts=ctx.facts)  # fmt: skip

    def bad(stat: SliceStat) -> float:
        return stat.den - stat.num if evidence.mode == "failing" else stat.num

    overall = stats.get((measured.name, None, 1), SliceStat())
    total, population = bad(overall), overall.den
    if total <= 0 or population <= 0:
        return []
    best: dict[str, SliceShare] = {}
    for (_, slice_, period), stat in stats.items():
        if period != 1 or slice_ is None or slice_[1] == NONE_VALUE:
            continue
        share = bad(stat) / total
        lift = share / (stat.den / population) if stat.den else None
        current = best.get(slice_[0])
        if share > 0 and (current is None or share > current.share):
            best[slice_[0]] = SliceShare(slice_[0], slice_[1], share, lift)
    ranked = sorted(best.values(), key=lambda s: (-s.share, s.dimension))
    return ranked[:MAX_BREAKDOWN]


def dominant(share: SliceShare) -> bool:
    return share.share >= DOMINANT_SHARE and (share.lift or 0.0) >= MIN_LIFT


def enrich_alert(ctx: RuleContext, alert: Alert, sample: Sample) -> None:
    """Attach an exemplar and the affected slice to an alert that starts firing."""
    details = alert.details
    try:
        exemplar = sample.exemplar or details.exemplar
        if sample.evidence is not None:
            exemplar = find_exemplar(ctx, sample.evidence) or exemplar
            exclude = set(details.slice) | {f.dimension.name for f in sample.evidence.filters}
            details.breakdown = slice_breakdown(ctx, sample.evidence, exclude)
            details.slice = {**details.slice,
                             **{s.dimension: s.value for s in details.breakdown if dominant(s)}}  # fmt: skip
        if exemplar is not None:
            exemplar = complete_exemplar(ctx, exemplar)
            if exemplar.project and "project" not in details.slice:
                details.slice = {"project": exemplar.project, **details.slice}
        details.exemplar = exemplar
    except Exception as exc:  # enrichment is best effort: the alert fires regardless
        details.enrich_error = f"{type(exc).__name__}: {exc}"
        log.warning(
            "could not enrich alert %s (%s): %s", alert.rule, alert.id, details.enrich_error
        )

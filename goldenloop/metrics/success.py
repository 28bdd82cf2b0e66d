"""Task success: three sources shown separately, and one combined rule.

Sources
-------
``feedback_success_rate``
    Explicit feedback events in the window: thumbs-up / (thumbs-up + thumbs-down).
``outcome_success_rate``
    Downstream outcome events in the window (``refund_completed`` …): successes / events.
``judge_pass_rate``
    Sampled online judges (``kind = 'judge'`` spans with a score): scores at or above
    ``signals.judge_threshold`` (default 0.5) / scored judge spans.

Combined rule (``task_success_rate``)
-------------------------------------
A *task* is a session. Each session that started in the window gets one verdict from
the strongest evidence it has, in this order:

1. **outcomes** (what actually happened downstream): success when none of the
   session's outcome events failed;
2. else **explicit feedback** (what the user said): success when the session has no
   thumbs-down;
3. else **judges** (a sampled model opinion): success when the mean judge score of its
   turns reaches the judge threshold;
4. else the session has no verdict and is left out (``success_signal_coverage`` says
   how many sessions had one).

Every feedback and outcome event of a session counts towards its verdict, whenever it
arrived, so a late thumbs-down still counts.
"""

from __future__ import annotations

from goldenloop.metrics.catalog import MetricDef, register_metric

#: The combined verdict per session: 1 success, 0 failure, NULL no evidence. Columns
#: come from the sessions relation (see relations.sessions_sql).
SUCCESS_RULE_SQL = (
    "CASE WHEN oc_succeeded + oc_failed > 0 THEN (CASE WHEN oc_failed = 0 THEN 1 ELSE 0 END) "
    "WHEN fb_up + fb_down > 0 THEN (CASE WHEN fb_down = 0 THEN 1 ELSE 0 END) "
    "WHEN judge_scored > 0 THEN "
    "(CASE WHEN judge_score_sum >= {judge_threshold} * judge_scored THEN 1 ELSE 0 END) END"
)
#: Where each verdict came from, for drill-down and the docs.
SUCCESS_SOURCE_SQL = (
    "CASE WHEN oc_succeeded + oc_failed > 0 THEN 'outcome' WHEN fb_up + fb_down > 0 "
    "THEN 'feedback' WHEN judge_scored > 0 THEN 'judge' END"
)
RULE_ORDER: tuple[str, ...] = ("outcome", "feedback", "judge")

for _metric in (
    MetricDef("task_success_rate", "Task success", "ratio", "sessions", "rate",
              expr="success = 1", where="success IS NOT NULL", higher_is_better=True,
              group="success", needs=("judge_scored", "judge_score_sum"),
              description="Sessions that succeeded, by the strongest evidence each has "
              "(outcome, then feedback, then judge)."),
    MetricDef("success_signal_coverage", "Sessions with a success signal", "ratio", "sessions",
              "rate", expr="success IS NOT NULL", group="success",
              needs=("judge_scored", "judge_score_sum")),
    MetricDef("feedback_success_rate", "Success by feedback", "ratio", "feedback", "rate",
              expr="rating = 'up'", higher_is_better=True, group="success",
              description="Thumbs-up among explicit feedback events."),
    MetricDef("outcome_success_rate", "Success by outcomes", "ratio", "outcomes", "rate",
              expr="success", higher_is_better=True, group="success",
              description="Successful downstream outcome events."),
    MetricDef("judge_pass_rate", "Success by judges", "ratio", "turns", "ratio",
              expr="judge_passed", denominator="judge_scored", higher_is_better=True,
              group="success", needs=("judge_passed", "judge_scored"), test="proportion",
              description="Judge scores at or above the threshold among scored judge spans."),
    MetricDef("judge_score_mean", "Mean judge score", "score", "turns", "ratio",
              expr="judge_score_sum", denominator="judge_scored", higher_is_better=True,
              group="success", needs=("judge_score_sum", "judge_scored"), test="none",
              span_variant=MetricDef("judge_score_mean", "Mean judge score", "score", "spans",
                                     "mean", expr="score", where="{judged}")),
):  # fmt: skip
    register_metric(_metric)

"""Trajectory efficiency: how an agent got to its answer, not just whether it did.

* ``tool_calls_per_successful_task``: tool calls made in successful sessions divided by
  the number of successful sessions (success as in ``success.py``).
* ``redundant_call_rate``: tool calls that repeat an earlier call **of the same tool with
  the same arguments in the same turn**, per tool call. A turn that calls
  ``search(q="refund")`` three times has two redundant calls (retries included: a retry
  with identical arguments is the pattern this metric exists to expose).
* ``argument_validity_rate``: tool calls whose arguments are valid, per tool call. The
  arguments are invalid when ``tool_args`` is present but not JSON, or when the call
  failed with an error type naming bad arguments (``signals.invalid_argument_patterns``).
* ``iterations_per_turn``: agent loop iterations per turn: the root span's
  ``signals.iterations_attribute`` (``goldenloop.agent.iterations``) when present, else
  the number of LLM calls in the turn.
"""

from __future__ import annotations

from goldenloop.metrics.catalog import MetricDef, register_metric

#: Redundant calls per trace: for each (tool, arguments) the calls after the first.
REDUNDANT_CALLS_SQL = (
    "SELECT trace_id AS rc_trace_id, sum(n - 1) AS rc_redundant FROM ("
    "SELECT trace_id, tool_name, tool_args, count(*) AS n FROM spans "
    "WHERE kind = 'tool' AND ({where}) "
    "GROUP BY trace_id, tool_name, tool_args) rc_calls GROUP BY trace_id"
)

for _metric in (
    MetricDef("tool_calls_per_successful_task", "Tool calls per successful task", "calls",
              "sessions", "ratio", expr="tool_calls", denominator="1", where="success = 1",
              higher_is_better=False, group="trajectory", needs=("tool_calls",), test="none"),
    MetricDef("tool_calls_per_turn", "Tool calls per turn", "calls", "turns", "mean",
              expr="tool_calls", higher_is_better=False, group="trajectory",
              needs=("tool_calls",)),
    MetricDef("redundant_call_rate", "Redundant tool calls", "ratio", "turns", "ratio",
              expr="redundant_calls", denominator="tool_calls", higher_is_better=False,
              group="trajectory", needs=("redundant_calls", "tool_calls"), test="proportion",
              description="Calls repeating the same tool with the same arguments in a turn."),
    MetricDef("argument_validity_rate", "Valid tool arguments", "ratio", "turns", "ratio",
              expr="tool_calls - invalid_tool_calls", denominator="tool_calls",
              higher_is_better=True, group="trajectory", test="proportion",
              needs=("tool_calls", "invalid_tool_calls"),
              span_variant=MetricDef("argument_validity_rate", "Valid tool arguments", "ratio",
                                     "spans", "rate", expr="NOT {invalid_arguments}",
                                     where="kind = 'tool'")),
    MetricDef("iterations_per_turn", "Iterations per turn", "iterations", "turns", "mean",
              expr="iterations", higher_is_better=False, group="trajectory",
              needs=("iterations",)),
):  # fmt: skip
    register_metric(_metric)

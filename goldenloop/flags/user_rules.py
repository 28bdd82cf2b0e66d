"""Built-in rules on what users did: thumbs-down, rephrasing the previous message, and
leaving right after a failed answer (immediate abandon)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, ClassVar

from goldenloop.flags._sql import (
    fmt_number,
    glob_to_like,
    hash_key,
    intersection_size,
    is_root,
    json_object,
    latest,
    regex_match,
    set_size,
    token_set,
)
from goldenloop.flags.rules import CandidateQuery, RuleContext, RulePolicy, register_rule
from goldenloop.model import FEEDBACK_CATEGORIES

#: Regexes are written in the subset both DuckDB (RE2) and PostgreSQL understand:
#: no ``\b``; use ``(^|[^[:alpha:]])`` for a word start.
CLOSING_PATTERN = (
    "(^|[^[:alpha:]])(thank|thx|cheers|that's all|that is all|dank|merci|gracias|grazie|"
    "obrigad|bye)|ありがとう"
)
FALLBACK_PATTERN = (
    "(couldn't find|could not find|can't reach|cannot reach|something went wrong|try again|"
    "couldn't complete|could not complete|unable to|not able to|don't have enough information)"
)
ABANDON_SIGNALS = (
    "error",
    "tool_error",
    "truncated",
    "fallback_answer",
    "judge_low",
    "guardrail_unsure",
    "thumbs_down",
    "failed_outcome",
)


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@dataclass(frozen=True)
class ThumbsDown:
    """Explicit negative feedback. Severity follows the category; the ``p0`` matchers
    (category and optional project glob) mark P0 items with a 72-hour time-to-eval."""

    name: ClassVar[str] = "thumbs_down"
    description: ClassVar[str] = "A user gave an answer a thumbs-down."
    default_severity: ClassVar[int] = 3
    category_severity: dict[str, int] = field(
        default_factory=lambda: {"unsafe": 4, "wrong": 3, "slow": 2, "unhelpful": 2, "other": 2}
    )
    p0: tuple[dict[str, str], ...] = (
        {"category": "unsafe"},
        {"category": "wrong", "project": "*billing*"},
    )

    def __post_init__(self) -> None:
        for category, severity in self.category_severity.items():
            if category not in FEEDBACK_CATEGORIES:
                raise ValueError(
                    f"category_severity: unknown category {category!r}; use one of "
                    f"{', '.join(FEEDBACK_CATEGORIES)}"
                )
            if severity not in (1, 2, 3, 4):
                raise ValueError(f"category_severity: {category} must be 1–4, got {severity}")
        for i, matcher in enumerate(self.p0):
            unknown = set(matcher) - {"category", "project"}
            if unknown or "category" not in matcher:
                raise ValueError(
                    f"p0: entry {i + 1} needs 'category' and may have 'project' "
                    f"(a glob), got keys {sorted(matcher)}"
                )

    def _severity_sql(self) -> tuple[str, list[Any]]:
        cases: list[str] = []
        params: list[Any] = []
        for matcher in self.p0:
            test = "f.category = ?"
            params.append(matcher["category"])
            if "project" in matcher:
                test += " AND f.project LIKE ? ESCAPE '\\'"
                params.append(glob_to_like(matcher["project"]))
            cases.append(f"WHEN {test} THEN 4")
        for category, severity in sorted(self.category_severity.items()):
            cases.append(f"WHEN f.category = {_quote(category)} THEN {int(severity)}")
        return f"CASE {' '.join(cases)} ELSE {self.default_severity} END", params

    def candidates(self, ctx: RuleContext) -> CandidateQuery:
        scope = ctx.scope
        where = "f.rating = 'down'"
        scope_params: list[Any] = []
        if scope.mode == "range":
            where += " AND f.created_at >= ? AND f.created_at < ?"
            scope_params += [scope.lo, scope.hi]
        elif scope.mode == "ingested":
            where += (
                " AND NOT EXISTS (SELECT 1 FROM flags g WHERE g.rule = 'thumbs_down' "
                "AND g.session_id = f.session_id)"
            )
        floor_sql, floor_params = "", []
        if scope.mode != "all":
            rows = ctx.store.fetch(
                f"SELECT min(f.created_at) FROM feedback f WHERE {where}", scope_params
            )
            if not rows or rows[0][0] is None:
                return CandidateQuery("SELECT " + ", ".join(["NULL"] * 9) + " WHERE 1 = 0")
            floor_sql = "start_time >= ? AND "
            floor_params = [rows[0][0] - ctx.lookback]
        severity, severity_params = self._severity_sql()
        details = json_object(
            ctx.dialect,
            {"category": "top.category", "feedback_id": "top.id", "downs": "top.n",
             "comment": "top.comment", "message_id": "top.message_id"},
        )  # fmt: skip
        sql = f"""
            WITH fb AS (
                SELECT f.id, f.session_id, f.project, f.message_id, f.category, f.comment,
                       f.created_at, {severity} AS severity
                FROM feedback f WHERE {where}
            ),
            ranked AS (
                SELECT fb.*, row_number() OVER (PARTITION BY session_id
                                                ORDER BY severity DESC, created_at, id) AS rn,
                       count(*) OVER (PARTITION BY session_id) AS n
                FROM fb
            ),
            turn AS (
                SELECT session_id, trace_id, message_id, customer_tier FROM spans
                WHERE {floor_sql}session_id IN (SELECT session_id FROM fb) AND {is_root()}
            ),
            info AS (SELECT session_id, max(customer_tier) AS tier FROM turn GROUP BY session_id),
            by_message AS (
                SELECT message_id, min(trace_id) AS trace_id FROM turn
                WHERE message_id IS NOT NULL GROUP BY message_id
            ),
            by_trace AS (SELECT trace_id FROM turn GROUP BY trace_id)
            SELECT top.session_id, top.project, info.tier,
                   coalesce(by_message.trace_id, by_trace.trace_id),
                   CAST(top.n AS DOUBLE PRECISION), top.severity,
                   'thumbs-down (' || coalesce(top.category, 'no category') || ')' ||
                   CASE WHEN top.n > 1 THEN ' ×' || CAST(top.n AS VARCHAR) ELSE '' END ||
                   coalesce(': "' || left(top.comment, 120) || '"', ''),
                   top.created_at, {details}
            FROM ranked AS top
            LEFT JOIN info ON info.session_id = top.session_id
            LEFT JOIN by_message ON by_message.message_id = top.message_id
            LEFT JOIN by_trace ON by_trace.trace_id = top.message_id
            WHERE top.rn = 1
        """
        return CandidateQuery(sql, (*severity_params, *scope_params, *floor_params))


@dataclass(frozen=True)
class Rephrase:
    """The next user message says nearly the same as the previous one: token Jaccard
    similarity of consecutive user messages at or above ``threshold``."""

    name: ClassVar[str] = "rephrase"
    description: ClassVar[str] = "The user repeated their previous message in other words."
    default_severity: ClassVar[int] = 2
    threshold: float = 0.6
    #: Only messages sent within this many seconds of the previous answer count.
    max_gap_s: int = 600
    #: Messages with fewer words are ignored ("ok", "yes").
    min_words: int = 3
    #: Count a byte-identical resend (often a client double-submit) as a rephrase.
    include_exact_repeats: bool = False

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold: must be in (0, 1], got {self.threshold}")
        if self.max_gap_s <= 0:
            raise ValueError(f"max_gap_s: must be positive, got {self.max_gap_s}")

    def candidates(self, ctx: RuleContext) -> CandidateQuery:
        d = ctx.dialect
        where, params = ctx.scope_filter()
        roots = f"{where} AND {is_root()} AND input_text IS NOT NULL AND input_text <> ''"
        exact = "" if self.include_exact_repeats else " AND prev_text <> input_text"
        # One ordered pass over the user turns (sessions grouped by a hash: much faster
        # than a window per session when there are millions), each message tokenized once.
        sql = f"""
            WITH seq AS (
                SELECT session_id, trace_id, start_time, project, customer_tier, input_text,
                       words, lag(session_id) OVER w AS prev_session,
                       lag(words) OVER w AS prev_words, lag(input_text) OVER w AS prev_text,
                       lag(end_time) OVER w AS prev_end
                FROM (SELECT session_id, trace_id, start_time, end_time, project, customer_tier,
                             input_text, {token_set(d, "input_text")} AS words
                      FROM spans WHERE {roots}) AS r
                WINDOW w AS (ORDER BY {hash_key(d, "session_id")}, session_id, start_time, trace_id)
            ),
            sized AS (
                SELECT seq.*, {set_size(d, "words")} AS n_cur, {set_size(d, "prev_words")} AS n_prev
                FROM seq
                WHERE prev_session = session_id
                  AND start_time <= prev_end + INTERVAL '{int(self.max_gap_s)} seconds'{exact}
            ),
            shared AS (
                SELECT sized.*, {intersection_size(d, "prev_words", "words")} AS common
                FROM sized
                -- Jaccard can't exceed min/max of the set sizes: skip hopeless pairs cheaply.
                WHERE n_cur >= ? AND n_prev >= ?
                  AND least(n_cur, n_prev) >= ? * greatest(n_cur, n_prev)
            ),
            q AS (
                SELECT shared.*,
                       CAST(common AS DOUBLE PRECISION) / (n_cur + n_prev - common) AS similarity
                FROM shared
            ),
            best AS (
                SELECT q.*, row_number() OVER (PARTITION BY session_id
                                               ORDER BY similarity DESC, start_time) AS rn,
                       count(*) OVER (PARTITION BY session_id) AS n,
                       max(customer_tier) OVER (PARTITION BY session_id) AS tier
                FROM q WHERE similarity >= ?
            )
            SELECT session_id, project, tier, trace_id, similarity, NULL,
                   'user rephrased the previous message (similarity ' ||
                   {fmt_number(d, "similarity", 2)} || '): "' || left(input_text, 100) || '"',
                   start_time,
                   {json_object(d, {"similarity": "similarity", "previous": "left(prev_text, 300)", "message": "left(input_text, 300)", "rephrases": "n"})}
            FROM best WHERE rn = 1
        """
        return CandidateQuery(
            sql, (*params, self.min_words, self.min_words, self.threshold, self.threshold)
        )


@dataclass(frozen=True)
class ImmediateAbandon:
    """The session went quiet for ``idle_minutes`` right after an answer that shows a
    failure signal, with no successful outcome, no thumbs-up on that answer and no
    closing message ("thanks, that's all"). An answer followed by silence is how most sessions end, so
    a failure signal on the last answer is required unless ``require_signal`` is off.

    Signals: ``error`` (the turn failed), ``tool_error`` (its last tool call failed),
    ``truncated`` (max_tokens), ``fallback_answer`` (the answer admits failure:
    ``fallback_pattern``), ``judge_low``, ``guardrail_unsure``, ``thumbs_down``,
    ``failed_outcome`` (a downstream outcome reported failure)."""

    name: ClassVar[str] = "abandon"
    description: ClassVar[str] = "The user left right after a failed answer."
    default_severity: ClassVar[int] = 2
    idle_minutes: int = 30
    require_signal: bool = True
    #: Failure signals on the last answer. ``thumbs_down`` is off by default: explicit
    #: feedback has its own rule, and abandon is for sessions where users said nothing.
    signals: tuple[str, ...] = (
        "error",
        "tool_error",
        "truncated",
        "fallback_answer",
        "judge_low",
        "failed_outcome",
    )
    closing_pattern: str = CLOSING_PATTERN
    fallback_pattern: str = FALLBACK_PATTERN
    judge_threshold: float = 0.5

    def __post_init__(self) -> None:
        if self.idle_minutes <= 0:
            raise ValueError(f"idle_minutes: must be positive, got {self.idle_minutes}")
        unknown = [s for s in self.signals if s not in ABANDON_SIGNALS]
        if unknown:
            raise ValueError(
                f"signals: unknown {unknown}; choose from {', '.join(ABANDON_SIGNALS)}"
            )

    def candidates(self, ctx: RuleContext) -> CandidateQuery:
        d = ctx.dialect
        ids, params, floor, cutoff = ctx.settled_sessions(timedelta(minutes=self.idle_minutes))
        bound = "start_time >= ? AND " if floor is not None else ""
        bound_params = [floor] if floor is not None else []
        in_scope = "session_id IN (SELECT session_id FROM ids) AND " if ids else ""
        flags = {
            "error": "coalesce(last.status, '') = 'error'",
            "tool_error": "coalesce(last.last_tool_error_at = last.last_tool_at, FALSE)",
            "truncated": "last.truncated = 1",
            "fallback_answer": f"coalesce({regex_match(d, 'last.output_text')}, FALSE)",
            "judge_low": "last.judge_low = 1",
            "guardrail_unsure": "last.guardrail_unsure = 1",
            "thumbs_down": "coalesce(fbk.down, 0) = 1",
            "failed_outcome": "coalesce(oc.failed, 0) = 1",
        }
        chosen = [s for s in ABANDON_SIGNALS if s in self.signals]
        labels = " || ".join(f"CASE WHEN {flags[s]} THEN '{s}, ' ELSE '' END" for s in chosen)
        fallback_params = [self.fallback_pattern] if "fallback_answer" in chosen else []
        count = " + ".join(f"CASE WHEN {flags[s]} THEN 1 ELSE 0 END" for s in chosen) or "0"
        signal_filter = f"({count}) > 0" if self.require_signal and chosen else "TRUE"

        # Two aggregations (the last user turn of each session, then the signals of its
        # spans), no window functions (slow over millions of small partitions), and no
        # "WHERE rn = 1" CTE joined back (PostgreSQL estimates it at one row).
        def last_of(expr: str) -> str:
            return latest(d, expr, "start_time")

        sql = f"""
            WITH ids AS ({ids or "SELECT NULL AS session_id"}),
            last AS (
                SELECT session_id, min(project) AS project, max(customer_tier) AS tier,
                       {last_of("trace_id")} AS trace_id, {last_of("status")} AS status,
                       {last_of("message_id")} AS message_id,
                       {last_of("input_text")} AS input_text,
                       {last_of("output_text")} AS output_text
                FROM spans
                WHERE {bound}{in_scope}session_id IS NOT NULL AND {is_root()}
                GROUP BY session_id
            ),
            sig AS (
                SELECT sp.session_id, max(sp.end_time) AS ended,
                    max(CASE WHEN sp.kind = 'tool' THEN sp.start_time END) AS last_tool_at,
                    max(CASE WHEN sp.kind = 'tool' AND sp.status = 'error' THEN sp.start_time END)
                        AS last_tool_error_at,
                    max(CASE WHEN sp.kind = 'llm' AND sp.stop_reason = 'max_tokens' THEN 1 ELSE 0 END)
                        AS truncated,
                    max(CASE WHEN sp.kind = 'judge' AND sp.score < ? THEN 1 ELSE 0 END) AS judge_low,
                    max(CASE WHEN sp.kind = 'guardrail' AND abs(2 * sp.score - 1) < 0.3
                        THEN 1 ELSE 0 END) AS guardrail_unsure
                FROM spans sp
                JOIN last ON last.trace_id = sp.trace_id AND last.session_id = sp.session_id
                WHERE {bound.replace("start_time", "sp.start_time")}TRUE
                GROUP BY sp.session_id
            ),
            settled AS (
                SELECT last.*, sig.ended, sig.last_tool_at, sig.last_tool_error_at,
                       sig.truncated, sig.judge_low, sig.guardrail_unsure
                FROM last JOIN sig ON sig.session_id = last.session_id
                -- the whole session is quiet: nothing after the last turn, for idle minutes
                WHERE sig.ended < ? AND NOT EXISTS (
                    SELECT 1 FROM spans later WHERE later.session_id = last.session_id
                      AND {bound.replace("start_time", "later.start_time")}later.end_time >= ?)
            ),
            oc AS (
                SELECT session_id, max(CASE WHEN success THEN 1 ELSE 0 END) AS ok,
                       max(CASE WHEN success THEN 0 ELSE 1 END) AS failed
                FROM outcomes WHERE session_id IN (SELECT session_id FROM settled)
                GROUP BY session_id
            ),
            fbk AS (
                SELECT f.session_id,
                       max(CASE WHEN f.rating = 'up' THEN 1 ELSE 0 END) AS up,
                       max(CASE WHEN f.rating = 'down' THEN 1 ELSE 0 END) AS down
                FROM feedback f JOIN settled AS last ON last.session_id = f.session_id
                WHERE f.message_id IS NULL OR f.message_id = last.message_id
                   OR f.message_id = last.trace_id
                GROUP BY f.session_id
            ),
            c AS (
                SELECT last.session_id, last.project, last.tier, last.trace_id, last.ended,
                       last.input_text, ({count}) AS signal_count,
                       {labels or "''"} AS signal_list
                FROM settled AS last
                LEFT JOIN oc ON oc.session_id = last.session_id
                LEFT JOIN fbk ON fbk.session_id = last.session_id
                WHERE coalesce(oc.ok, 0) = 0 AND coalesce(fbk.up, 0) = 0
                  AND NOT coalesce({regex_match(d, "last.input_text")}, FALSE)
                  AND {signal_filter}
            )
            SELECT session_id, project, tier, trace_id, CAST(signal_count AS DOUBLE PRECISION),
                   NULL,
                   'left right after a failed answer (' ||
                   CASE WHEN signal_list = '' THEN 'no outcome'
                        ELSE rtrim(signal_list, ', ') END ||
                   '); no success, quiet for {self.idle_minutes} min',
                   ended,
                   {json_object(d, {"signals": "rtrim(signal_list, ', ')", "last_message": "left(input_text, 300)"})}
            FROM c
        """
        # The fallback regex appears in the signal count, the label list and the filter.
        filter_params = fallback_params if signal_filter != "TRUE" else []
        return CandidateQuery(
            sql,
            (
                *params,
                *bound_params,
                self.judge_threshold,
                *bound_params,
                cutoff,
                *bound_params,
                cutoff,
                *fallback_params,
                *fallback_params,
                self.closing_pattern,
                *filter_params,
            ),
        )


register_rule(ThumbsDown, policy=RulePolicy(daily_cap=1000))
register_rule(Rephrase)
register_rule(ImmediateAbandon)

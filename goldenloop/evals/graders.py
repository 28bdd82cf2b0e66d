"""Graders: a registry of named checks with one tiny protocol.

A criterion in a case file is ``{type: NAME, ...params}``. ``GRADERS[NAME]`` holds the
grader function and a pydantic model of its parameters, so ``golden validate`` names
a misspelled parameter before a run. Built-ins register exactly like a user's::

    from goldenloop.evals.graders import GradeResult, register_grader

    def polite(spec, output, ctx):
        ok = "please" in output.text.lower()
        return GradeResult(passed=ok, detail="said please" if ok else "no 'please'")

    register_grader("polite", polite)

A criterion whose type is ``module:function`` runs that function as a custom grader
(same as ``{type: python, function: module:function}``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import jsonschema
from pydantic import BaseModel, ValidationError

from goldenloop.evals.grader_specs import (
    CitesSourceSpec,
    ContainsSpec,
    ExactSpec,
    ExpectedCall,
    JsonSchemaSpec,
    JudgeSpec,
    NumericSpec,
    PythonSpec,
    RegexSpec,
    ToolCallsSpec,
)
from goldenloop.evals.judge import JudgeConfig, JudgeError, run_judge
from goldenloop.evals.target import TargetError, TargetOutput, import_object


@dataclass(frozen=True)
class GradeResult:
    passed: bool
    detail: str = ""
    score: float | None = None
    #: The grader could not decide (bad output shape, judge unreachable, …).
    error: bool = False
    grader: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "grader": self.grader,
            "passed": self.passed,
            "error": self.error,
            "score": self.score,
            "detail": self.detail,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": self.cost_usd,
        }


@dataclass
class GradeContext:
    """What a grader may look at besides the output."""

    case_id: str
    case_input: dict[str, Any]
    judge: JudgeConfig | None = None
    http: httpx.Client | None = None
    extras: dict[str, Any] = field(default_factory=dict)


class Grader(Protocol):
    def __call__(
        self, spec: Mapping[str, Any], output: TargetOutput, ctx: GradeContext
    ) -> GradeResult: ...


@dataclass(frozen=True)
class GraderDef:
    name: str
    grade: Grader
    spec_model: type[BaseModel] | None = None


GRADERS: dict[str, GraderDef] = {}


def register_grader(name: str, grade: Grader, spec_model: type[BaseModel] | None = None) -> None:
    """Add (or replace) a grader. ``spec_model`` validates a criterion's parameters."""
    GRADERS[name] = GraderDef(name, grade, spec_model)


# -- checking specs -------------------------------------------------------------------


def _spec_problems(model: type[BaseModel], spec: Mapping[str, Any]) -> list[str]:
    try:
        model.model_validate(dict(spec))
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(str(p) for p in error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"{where}: {message}" if where else message)
        return problems
    return []


def check_spec(spec: Mapping[str, Any]) -> list[str]:
    """Problems with one criterion (empty when it is valid)."""
    kind = spec.get("type")
    if not isinstance(kind, str) or not kind:
        return ["type: missing (the grader name)"]
    if kind not in GRADERS:
        if ":" in kind:
            return _spec_problems(PythonSpec, {**spec, "type": "python", "function": kind})
        return [f"type: unknown grader {kind!r}; known: {', '.join(sorted(GRADERS))}"]
    model = GRADERS[kind].spec_model
    problems = _spec_problems(model, spec) if model else []
    if kind in ("contains", "not-contains") and not problems:
        if spec.get("value") is None and not spec.get("values"):
            problems.append("value: give 'value' or 'values'")
    return problems


def grade(spec: Mapping[str, Any], output: TargetOutput, ctx: GradeContext) -> GradeResult:
    """Run one criterion; a grader that raises becomes an error result, never a crash."""
    kind = str(spec.get("type", ""))
    label = str(spec.get("name") or kind)
    if kind not in GRADERS and ":" in kind:
        spec, kind = {**spec, "type": "python", "function": kind}, "python"
    problems = check_spec(spec)
    if problems:
        return GradeResult(False, "invalid criterion: " + "; ".join(problems), error=True,
                           grader=label)  # fmt: skip
    try:
        result = GRADERS[kind].grade(spec, output, ctx)
    except Exception as exc:  # a user's grader or a judge may fail in any way
        return GradeResult(False, f"{type(exc).__name__}: {exc}", error=True, grader=label)
    return result if result.grader else _with_label(result, label)


def _with_label(result: GradeResult, label: str) -> GradeResult:
    return GradeResult(
        result.passed, result.detail, result.score, result.error, label,
        result.input_tokens, result.output_tokens, result.cost_usd,
    )  # fmt: skip


# -- built-in graders -----------------------------------------------------------------


def _text_of(output: TargetOutput, path: str) -> str:
    value = output.field(path)
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def grade_exact(spec: Mapping[str, Any], output: TargetOutput, ctx: GradeContext) -> GradeResult:
    s = ExactSpec.model_validate(dict(spec))
    actual = output.field(s.field)
    expected = s.value
    if isinstance(actual, str) and isinstance(expected, str):
        a, e = (actual.strip(), expected.strip()) if s.strip else (actual, expected)
        if not s.case_sensitive:
            a, e = a.lower(), e.lower()
        ok = a == e
    else:
        ok = actual == expected
    detail = "equal" if ok else f"expected {expected!r}, got {_short(repr(actual))}"
    return GradeResult(ok, detail, 1.0 if ok else 0.0)


def _contains(spec: Mapping[str, Any], output: TargetOutput, negate: bool) -> GradeResult:
    s = ContainsSpec.model_validate(dict(spec))
    haystack = _text_of(output, s.field)
    if not s.case_sensitive:
        haystack = haystack.lower()
    needles = s.needles()
    found = [n for n in needles if (n if s.case_sensitive else n.lower()) in haystack]
    missing = [n for n in needles if n not in found]
    if negate:
        ok = not found
        return GradeResult(ok, "none present" if ok else f"found forbidden {found}")
    ok = bool(found) if s.mode == "any" else not missing
    return GradeResult(ok, f"all of {needles} present" if ok else f"missing {missing}")


def grade_contains(spec: Mapping[str, Any], output: TargetOutput, ctx: GradeContext) -> GradeResult:
    return _contains(spec, output, negate=False)


def grade_not_contains(
    spec: Mapping[str, Any], output: TargetOutput, ctx: GradeContext
) -> GradeResult:
    return _contains(spec, output, negate=True)


def grade_regex(spec: Mapping[str, Any], output: TargetOutput, ctx: GradeContext) -> GradeResult:
    s = RegexSpec.model_validate(dict(spec))
    flags = 0
    for name in s.flags:
        flags |= getattr(re, name.upper())
    match = re.search(s.pattern, _text_of(output, s.field), flags)
    ok = bool(match) == s.match
    if s.match:
        detail = f"matched {_short(match.group(0))!r}" if match else f"no match for /{s.pattern}/"
    else:
        detail = f"must not match, found {_short(match.group(0))!r}" if match else "no match"
    return GradeResult(ok, detail)


def grade_json_schema(
    spec: Mapping[str, Any], output: TargetOutput, ctx: GradeContext
) -> GradeResult:
    s = JsonSchemaSpec.model_validate(dict(spec))
    value = output.field(s.field)
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            return GradeResult(False, f"output is not JSON: {exc}")
    errors = sorted(
        jsonschema.Draft202012Validator(s.schema_).iter_errors(value), key=lambda e: e.path
    )
    if not errors:
        return GradeResult(True, "valid")
    first = errors[0]
    where = "/".join(str(p) for p in first.absolute_path) or "(root)"
    return GradeResult(False, f"{len(errors)} schema error(s); at {where}: {first.message}")


def grade_numeric(spec: Mapping[str, Any], output: TargetOutput, ctx: GradeContext) -> GradeResult:
    s = NumericSpec.model_validate(dict(spec))
    value = output.field(s.field)
    if isinstance(value, str):
        match = re.search(s.pattern, value)
        if not match:
            return GradeResult(False, "no number in the output")
        raw = match.group(1) if match.groups() else match.group(0)
        value = float(raw.replace(",", "."))
    if isinstance(value, bool) or not isinstance(value, int | float):
        return GradeResult(False, f"not a number: {_short(repr(value))}")
    allowed = max(s.tolerance, abs(s.expected) * s.relative if s.relative else 0.0)
    diff = abs(float(value) - s.expected)
    ok = diff <= allowed
    return GradeResult(ok, f"{value} vs expected {s.expected} (±{allowed:g})")


def grade_cites_source(
    spec: Mapping[str, Any], output: TargetOutput, ctx: GradeContext
) -> GradeResult:
    s = CitesSourceSpec.model_validate(dict(spec))
    cited = list(dict.fromkeys(output.citations + re.findall(s.pattern, output.text)))
    if not s.sources:
        ok = len(cited) >= s.min
        return GradeResult(ok, f"cites {cited}" if ok else f"cites {len(cited)} source(s)")
    hits = [src for src in s.sources if src in cited]
    ok = (len(hits) == len(s.sources)) if s.all else len(hits) >= min(s.min, len(s.sources))
    return GradeResult(ok, f"cites {cited}; expected {'all' if s.all else 'one'} of {s.sources}")


def _args_match(expected: ExpectedCall, arguments: dict[str, Any]) -> str | None:
    """None when the call's arguments satisfy ``expected``; else why not."""
    for key, want in expected.args.items():
        if key not in arguments:
            return f"missing argument {key!r}"
        got = arguments[key]
        if isinstance(want, Mapping) and set(want) == {"regex"}:
            if not isinstance(got, str) or not re.fullmatch(str(want["regex"]), got):
                return f"{key}={got!r} does not match /{want['regex']}/"
        elif got != want:
            return f"{key}={got!r}, expected {want!r}"
    if expected.args_schema is not None:
        error = jsonschema.exceptions.best_match(
            jsonschema.Draft202012Validator(expected.args_schema).iter_errors(arguments)
        )
        if error is not None:
            return f"arguments invalid: {error.message}"
    return None


def grade_tool_calls(
    spec: Mapping[str, Any], output: TargetOutput, ctx: GradeContext
) -> GradeResult:
    s = ToolCallsSpec.model_validate(dict(spec))
    calls = output.tool_calls
    names = [c.name for c in calls]
    problems = [f"argument JSON of {c.name} is malformed" for c in calls if c.malformed]
    forbidden = [n for n in names if n in s.forbid]
    if forbidden:
        problems.append(f"called forbidden tool(s) {forbidden}")
    if s.max_calls is not None and len(calls) > s.max_calls:
        problems.append(f"{len(calls)} tool calls, at most {s.max_calls} allowed")
    start = 0
    for want in s.expect:
        pool = calls[start:] if s.ordered else calls
        reasons = []
        matched = None
        for index, call in enumerate(pool):
            if call.name != want.name:
                continue
            reason = _args_match(want, call.arguments)
            if reason is None:
                matched = index
                break
            reasons.append(reason)
        if matched is None:
            why = f" ({'; '.join(reasons)})" if reasons else ""
            problems.append(f"no valid call to {want.name}{why}")
        elif s.ordered:
            start += matched + 1
    ok = not problems
    return GradeResult(ok, f"calls {names}" if ok else "; ".join(problems))


def grade_python(spec: Mapping[str, Any], output: TargetOutput, ctx: GradeContext) -> GradeResult:
    s = PythonSpec.model_validate(dict(spec))
    try:
        fn = import_object(s.function)
    except TargetError as exc:
        return GradeResult(False, str(exc), error=True)
    result = fn(output, ctx, **s.params)
    if isinstance(result, GradeResult):
        return result
    if isinstance(result, bool):
        return GradeResult(result, "custom grader " + ("passed" if result else "failed"))
    if isinstance(result, int | float):
        return GradeResult(result >= s.threshold, f"score {result:g}", float(result))
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], bool):
        return GradeResult(result[0], str(result[1]))
    return GradeResult(False, f"custom grader returned {type(result).__name__}", error=True)


def grade_llm_judge(
    spec: Mapping[str, Any], output: TargetOutput, ctx: GradeContext
) -> GradeResult:
    s = JudgeSpec.model_validate(dict(spec))
    if ctx.judge is None and not (s.base_url and s.model):
        return GradeResult(
            False,
            "no judge endpoint configured: pass --judge-url and --judge-model "
            "(or GOLDENLOOP_JUDGE_URL / GOLDENLOOP_JUDGE_MODEL), or set base_url and model "
            "on the criterion",
            error=True,
        )
    base = ctx.judge or JudgeConfig(base_url=str(s.base_url), model=str(s.model))
    config = base.with_overrides(spec)
    try:
        verdict = run_judge(
            config,
            rubric=s.rubric,
            messages=ctx.case_input.get("messages", []),
            answer=output.text,
            threshold=s.threshold,
            client=ctx.http,
        )
    except JudgeError as exc:
        return GradeResult(False, str(exc), error=True)
    return GradeResult(
        verdict.passed,
        f"judge {verdict.model}: {verdict.score:.2f} {verdict.reason}".strip(),
        verdict.score,
        input_tokens=verdict.input_tokens,
        output_tokens=verdict.output_tokens,
        cost_usd=verdict.cost_usd,
    )


_BUILTINS: tuple[tuple[str, Callable[..., GradeResult], type[BaseModel]], ...] = (
    ("exact", grade_exact, ExactSpec),
    ("contains", grade_contains, ContainsSpec),
    ("not-contains", grade_not_contains, ContainsSpec),
    ("regex", grade_regex, RegexSpec),
    ("json-schema", grade_json_schema, JsonSchemaSpec),
    ("numeric", grade_numeric, NumericSpec),
    ("cites-source", grade_cites_source, CitesSourceSpec),
    ("tool-calls", grade_tool_calls, ToolCallsSpec),
    ("python", grade_python, PythonSpec),
    ("llm-judge", grade_llm_judge, JudgeSpec),
)
for _name, _fn, _model in _BUILTINS:
    register_grader(_name, _fn, _model)

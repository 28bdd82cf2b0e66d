"""Graders, including the LLM judge against a real local OpenAI-compatible server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from goldenloop.evals.graders import (
    GRADERS,
    GradeContext,
    GradeResult,
    check_spec,
    grade,
    register_grader,
)
from goldenloop.evals.judge import JudgeConfig, parse_verdict
from goldenloop.evals.target import TargetOutput, normalize_output

ANSWER = normalize_output({
    "output": "You can withdraw within 14 days [eu-right-of-withdrawal]. Refund of 74.01 EUR.",
    "citations": ["refund-policy-standard"],
    "tool_calls": [
        {"name": "lookup_order", "arguments": {"order_id": "ORD-123401"}},
        {"name": "issue_refund", "arguments": '{"order_id": "ORD-123401", "amount": 74.01}'},
    ],
    "usage": {"prompt_tokens": 100, "completion_tokens": 20},
    "intent": "refund_policy",
    "refund": {"amount": 74.01, "currency": "EUR"},
})  # fmt: skip
CTX = GradeContext(case_id="C-1", case_input={"messages": [{"role": "user", "content": "hi"}]})


def run(
    spec: dict[str, Any], output: TargetOutput = ANSWER, ctx: GradeContext = CTX
) -> GradeResult:
    return grade(spec, output, ctx)


@pytest.mark.parametrize(
    ("spec", "passed"),
    [
        ({"type": "exact", "field": "intent", "value": "refund_policy"}, True),
        ({"type": "exact", "field": "refund.amount", "value": 74.01}, True),
        ({"type": "exact", "value": "nope"}, False),
        ({"type": "contains", "value": "14 DAYS"}, True),
        ({"type": "contains", "values": ["14 days", "30 days"]}, False),
        ({"type": "contains", "values": ["14 days", "30 days"], "mode": "any"}, True),
        ({"type": "contains", "value": "14 DAYS", "case_sensitive": True}, False),
        ({"type": "not-contains", "values": ["restocking", "7 days"]}, True),
        ({"type": "not-contains", "value": "withdraw"}, False),
        ({"type": "regex", "pattern": r"within \d+ days"}, True),
        ({"type": "regex", "pattern": "restocking", "match": False}, True),
        ({"type": "regex", "pattern": "WITHDRAW", "flags": ["IGNORECASE"]}, True),
        ({"type": "numeric", "pattern": r"of (\d+\.\d+) EUR", "expected": 74.0, "tolerance": 0.02}, True),
        ({"type": "numeric", "field": "refund.amount", "expected": 80, "relative": 0.05}, False),
        ({"type": "numeric", "field": "refund.amount", "expected": 75, "relative": 0.02}, True),
        ({"type": "json-schema", "field": "refund",
          "schema": {"type": "object", "required": ["amount"], "properties": {"amount": {"type": "number"}}}}, True),
        ({"type": "json-schema", "field": "refund", "schema": {"type": "object", "required": ["iban"]}}, False),
        ({"type": "cites-source", "sources": ["eu-right-of-withdrawal"]}, True),
        ({"type": "cites-source", "sources": ["eu-right-of-withdrawal", "damaged-items"], "all": True}, False),
        ({"type": "cites-source", "min": 2}, True),
        ({"type": "tool-calls", "ordered": True, "expect": [
            {"name": "lookup_order", "args": {"order_id": {"regex": r"ORD-\d{6}"}}},
            {"name": "issue_refund", "args_schema": {"type": "object", "required": ["amount"],
                                                     "properties": {"amount": {"type": "number", "maximum": 100}}}},
        ]}, True),
        ({"type": "tool-calls", "expect": [{"name": "issue_refund", "args": {"amount": 80}}]}, False),
        ({"type": "tool-calls", "forbid": ["issue_refund"]}, False),
        ({"type": "tool-calls", "max_calls": 1}, False),
        ({"type": "tool-calls", "ordered": True, "expect": [{"name": "issue_refund"}, {"name": "lookup_order"}]}, False),
    ],
)  # fmt: skip
def test_builtin_graders(spec: dict[str, Any], passed: bool) -> None:
    result = run(spec)
    assert not result.error, result.detail
    assert result.passed is passed, result.detail


def test_failing_grader_explains_why() -> None:
    result = run(
        {"type": "tool-calls", "expect": [{"name": "issue_refund", "args": {"amount": 80}}]}
    )
    assert "amount=74.01, expected 80" in result.detail
    assert run({"type": "contains", "values": ["30 days"], "name": "window"}).grader == "window"


def test_json_schema_parses_text_output() -> None:
    output = TargetOutput(text='{"refund": true}')
    assert run({"type": "json-schema", "schema": {"type": "object"}}, output).passed
    bad = run({"type": "json-schema", "schema": {"type": "object"}}, TargetOutput(text="nope"))
    assert not bad.passed and "not JSON" in bad.detail


def test_invalid_specs_are_named() -> None:
    assert check_spec({"type": "contians", "value": "x"})[0].startswith(
        "type: unknown grader 'contians'"
    )
    assert check_spec({"type": "contains"}) == ["value: give 'value' or 'values'"]
    assert any(
        "invalid regular expression" in p for p in check_spec({"type": "regex", "pattern": "("})
    )
    assert any("valu" in p for p in check_spec({"type": "exact", "valu": 1}))
    assert any(
        "not a valid JSON schema" in p
        for p in check_spec({"type": "json-schema", "schema": {"type": 5}})
    )
    result = run({"type": "regex", "pattern": "("})
    assert result.error and "invalid criterion" in result.detail


def custom_grader(output: TargetOutput, ctx: GradeContext, *, word: str) -> tuple[bool, str]:
    return word in output.text, f"looked for {word} in case {ctx.case_id}"


def scoring_grader(output: TargetOutput, ctx: GradeContext) -> float:
    return 0.3


def crashing_grader(output: TargetOutput, ctx: GradeContext) -> bool:
    raise RuntimeError("boom")


def test_custom_python_graders() -> None:
    ok = run({"type": "python", "function": f"{__name__}:custom_grader", "params": {"word": "EUR"}})
    assert ok.passed and ok.detail == "looked for EUR in case C-1"
    short = run({"type": f"{__name__}:custom_grader", "params": {"word": "USD"}})
    assert not short.passed and not short.error
    low = run({"type": "python", "function": f"{__name__}:scoring_grader", "threshold": 0.2})
    assert low.passed and low.score == 0.3
    crash = run({"type": "python", "function": f"{__name__}:crashing_grader"})
    assert crash.error and "RuntimeError: boom" in crash.detail
    missing = run({"type": "python", "function": "no_such_module_xyz:f"})
    assert missing.error and "cannot import" in missing.detail


def test_user_graders_register_like_builtins() -> None:
    def polite(spec: Any, output: TargetOutput, ctx: GradeContext) -> GradeResult:
        return GradeResult("please" in output.text, "checked")

    register_grader("polite-test", polite)
    try:
        assert check_spec({"type": "polite-test"}) == []
        assert not run({"type": "polite-test"}).passed
    finally:
        GRADERS.pop("polite-test")


# -- the judge against a real HTTP server ------------------------------------------------


class _Judge(BaseHTTPRequestHandler):
    requests: list[dict[str, Any]] = []
    reply: str = '{"score": 0.9, "pass": true, "reason": "states the 14-day right"}'
    status = 200

    def do_POST(self) -> None:  # noqa: N802 (http.server naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, "auth": self.headers.get("Authorization"),
                                    "body": body})  # fmt: skip
        payload = json.dumps({
            "id": "chatcmpl-1", "object": "chat.completion", "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": type(self).reply}}],
            "usage": {"prompt_tokens": 200, "completion_tokens": 30, "total_tokens": 230},
        }).encode()  # fmt: skip
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def judge_server() -> Iterator[str]:
    _Judge.requests = []
    _Judge.reply = '{"score": 0.9, "pass": true, "reason": "states the 14-day right"}'
    _Judge.status = 200
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Judge)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def test_llm_judge_through_an_openai_compatible_server(judge_server: str) -> None:
    ctx = GradeContext("C-1", CTX.case_input, judge=JudgeConfig(judge_server, "gpt-4o-mini", "k-1"))
    result = run({"type": "llm-judge", "rubric": "Must state the 14-day right."}, ctx=ctx)
    assert result.passed and result.score == 0.9 and not result.error
    assert result.input_tokens == 200 and result.output_tokens == 30
    assert result.cost_usd == pytest.approx((200 * 0.15 + 30 * 0.60) / 1e6)
    [request] = _Judge.requests
    assert request["path"] == "/v1/chat/completions" and request["auth"] == "Bearer k-1"
    assert request["body"]["model"] == "gpt-4o-mini"
    user = request["body"]["messages"][1]["content"]
    assert "Must state the 14-day right." in user and "user: hi" in user and "74.01 EUR" in user


def test_llm_judge_threshold_and_criterion_overrides(
    judge_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _Judge.reply = 'Sure! {"score": 0.4, "reason": "vague"}'
    monkeypatch.setenv("MY_JUDGE_KEY", "k-2")
    spec = {"type": "llm-judge", "rubric": "r", "base_url": judge_server, "model": "judge-x",
            "api_key_env": "MY_JUDGE_KEY", "threshold": 0.5}  # fmt: skip
    result = run(spec)
    assert not result.passed and not result.error and result.score == 0.4
    assert _Judge.requests[-1]["auth"] == "Bearer k-2"
    assert _Judge.requests[-1]["body"]["model"] == "judge-x"


def test_judge_errors_are_reported_not_raised(judge_server: str) -> None:
    ctx = GradeContext("C-1", CTX.case_input, judge=JudgeConfig(judge_server, "m"))
    _Judge.reply = "I cannot decide."
    assert run({"type": "llm-judge", "rubric": "r"}, ctx=ctx).error
    _Judge.status = 500
    failed = run({"type": "llm-judge", "rubric": "r"}, ctx=ctx)
    assert failed.error and "500" in failed.detail
    unreachable = GradeContext(
        "C-1", {}, judge=JudgeConfig("http://127.0.0.1:9/v1", "m", timeout=2)
    )
    assert "unreachable" in run({"type": "llm-judge", "rubric": "r"}, ctx=unreachable).detail


def test_judge_is_never_required_for_other_graders() -> None:
    result = run({"type": "llm-judge", "rubric": "r"})
    assert result.error and "no judge endpoint configured" in result.detail
    assert run({"type": "contains", "value": "14 days"}).passed


def test_verdict_parsing() -> None:
    assert parse_verdict('{"pass": false}', 0.5) == (0.0, False, "")
    assert parse_verdict("Verdict: PASS", 0.5)[1] is True
    assert parse_verdict('```json\n{"score": 1.7}\n```', 0.5)[0] == 1.0


def test_output_normalization_shapes() -> None:
    assert normalize_output("text").text == "text"
    openai = normalize_output({"choices": [{"message": {"content": "hi", "tool_calls": [
        {"function": {"name": "f", "arguments": "{bad json"}}]}}], "usage": {"prompt_tokens": 3},
        "model": "gpt-4o"})  # fmt: skip
    assert openai.text == "hi" and openai.input_tokens == 3 and openai.model == "gpt-4o"
    assert openai.tool_calls[0].malformed
    assert run({"type": "tool-calls"}, openai).detail.startswith("argument JSON of f")

"""LLM-as-judge through any OpenAI-compatible ``/v1/chat/completions`` endpoint.

The judge is optional: nothing else in the runner needs it. Configure it with
``JudgeConfig`` (the CLI reads ``--judge-url``/``GOLDENLOOP_JUDGE_URL``,
``--judge-model``/``GOLDENLOOP_JUDGE_MODEL`` and ``GOLDENLOOP_JUDGE_API_KEY``); a case's
``llm-judge`` criterion may override ``base_url``, ``model`` and ``api_key_env``.

The judge is asked for ``{"score": 0..1, "pass": true|false, "reason": "..."}``; an
answer that is not JSON but says PASS or FAIL is accepted too.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from goldenloop.pricing import PriceTable

_SYSTEM = (
    "You are a strict evaluator of an AI assistant's answer. Grade the answer only "
    "against the rubric. Reply with a single JSON object and nothing else: "
    '{"score": <number from 0 to 1>, "pass": <true or false>, "reason": "<one sentence>"}.'
)
_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)
_VERDICT_WORD = re.compile(r"\b(PASS|FAIL)\b")


class JudgeError(RuntimeError):
    """The judge endpoint is not configured, unreachable, or answered nonsense."""


@dataclass(frozen=True)
class JudgeConfig:
    base_url: str
    model: str
    api_key: str | None = None
    timeout: float = 60.0

    @property
    def completions_url(self) -> str:
        base = self.base_url.rstrip("/")
        return base if base.endswith("/chat/completions") else base + "/chat/completions"

    def with_overrides(self, spec: Mapping[str, Any]) -> JudgeConfig:
        key = self.api_key
        if spec.get("api_key_env"):
            key = os.environ.get(str(spec["api_key_env"]))
        return JudgeConfig(
            base_url=str(spec.get("base_url") or self.base_url),
            model=str(spec.get("model") or self.model),
            api_key=key,
            timeout=self.timeout,
        )


@dataclass(frozen=True)
class JudgeVerdict:
    score: float
    passed: bool
    reason: str
    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: float


def _conversation(messages: Sequence[Mapping[str, Any]]) -> str:
    return "\n".join(f"{m.get('role', 'user')}: {m.get('content', '')}" for m in messages)


def parse_verdict(content: str, threshold: float) -> tuple[float, bool, str]:
    """Score, pass and reason from the judge's reply."""
    match = _JSON_OBJECT.search(content)
    if match:
        try:
            data = json.loads(match.group(0))
        except json.JSONDecodeError:
            data = None
        if isinstance(data, dict) and ("score" in data or "pass" in data):
            raw_score = data.get("score")
            score = float(raw_score) if isinstance(raw_score, int | float) else None
            verdict = data.get("pass")
            if score is None:
                score = 1.0 if verdict is True else 0.0
            score = min(max(score, 0.0), 1.0)
            passed = verdict if isinstance(verdict, bool) else score >= threshold
            return score, passed, str(data.get("reason", ""))
    word = _VERDICT_WORD.search(content.upper())
    if word:
        passed = word.group(1) == "PASS"
        return (1.0 if passed else 0.0), passed, content.strip()[:300]
    raise JudgeError(f"the judge's answer is neither JSON nor PASS/FAIL: {content[:200]!r}")


def run_judge(
    config: JudgeConfig,
    *,
    rubric: str,
    messages: Sequence[Mapping[str, Any]],
    answer: str,
    threshold: float = 0.5,
    prices: PriceTable | None = None,
    client: httpx.Client | None = None,
) -> JudgeVerdict:
    """Ask the judge to grade ``answer`` against ``rubric``."""
    user = (
        f"Rubric:\n{rubric}\n\nConversation:\n{_conversation(messages)}\n\n"
        f"Answer to grade:\n{answer}"
    )
    body = {
        "model": config.model,
        "temperature": 0,
        "messages": [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": user}],
    }
    headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
    owned = client is None
    http = client or httpx.Client(timeout=config.timeout)
    try:
        response = http.post(config.completions_url, json=body, headers=headers)
    except httpx.HTTPError as exc:
        raise JudgeError(f"judge endpoint {config.completions_url} unreachable: {exc}") from None
    finally:
        if owned:
            http.close()
    if response.status_code >= 400:
        raise JudgeError(f"judge endpoint answered {response.status_code}: {response.text[:300]}")
    try:
        data = response.json()
        content = data["choices"][0]["message"]["content"] or ""
    except (ValueError, KeyError, IndexError, TypeError):
        raise JudgeError(f"judge answer is not a chat completion: {response.text[:300]}") from None
    score, passed, reason = parse_verdict(str(content), threshold)
    usage = data.get("usage") or {}
    input_tokens = int(usage.get("prompt_tokens", usage.get("input_tokens", 0)) or 0)
    output_tokens = int(usage.get("completion_tokens", usage.get("output_tokens", 0)) or 0)
    model = str(data.get("model") or config.model)
    cost = (prices or PriceTable()).cost(model, input_tokens, output_tokens) or 0.0
    return JudgeVerdict(score, passed, reason, model, input_tokens, output_tokens, cost)

"""Targets: the thing an eval runs, and what it answers.

A target is either a Python callable named ``module:function`` or an HTTP endpoint.
Both receive the case input (``messages``, ``attachments``, ``context``, ``case_id``)
and answer with a string or a dict; ``normalize_output`` turns any of the usual shapes
into a ``TargetOutput``:

* ``"plain text"``;
* ``{"output"|"text"|"answer"|"content": ..., "citations": [...], "tool_calls":
  [{"name": ..., "arguments": {...}}], "usage": {"input_tokens": .., "output_tokens": ..},
  "cost_usd": ..}``;
* an OpenAI chat-completions response (``choices[0].message``, ``usage``).
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx


class TargetError(RuntimeError):
    """The target cannot be loaded or called; the message says why."""


@dataclass(frozen=True, slots=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]
    #: The arguments were not valid JSON (kept as ``{"_raw": text}``).
    malformed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "arguments": self.arguments, "malformed": self.malformed}


@dataclass(slots=True)
class TargetOutput:
    text: str
    citations: list[str] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None
    model: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def field(self, path: str) -> Any:
        """``text`` or a dotted path into the dict the target returned (``refund.amount``)."""
        if path in ("text", "output", ""):
            return self.text
        current: Any = self.data
        for part in path.split("."):
            if isinstance(current, Mapping) and part in current:
                current = current[part]
            elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
                current = current[int(part)]
            else:
                raise KeyError(f"the output has no field {path!r}")
        return current


class Target(Protocol):
    """Anything that answers a case input."""

    name: str

    def __call__(self, case_input: dict[str, Any]) -> TargetOutput: ...


_TEXT_KEYS = ("output", "text", "answer", "content", "response", "completion")


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _tool_call(raw: Any) -> ToolCall | None:
    if not isinstance(raw, Mapping):
        return None
    if isinstance(raw.get("function"), Mapping):  # OpenAI shape
        raw = raw["function"]
    name = raw.get("name") or raw.get("tool")
    if not isinstance(name, str):
        return None
    args = raw.get("arguments", raw.get("args", raw.get("input", {})))
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError:
            return ToolCall(name, {"_raw": args}, malformed=True)
    if not isinstance(args, Mapping):
        return ToolCall(name, {"_raw": args}, malformed=True)
    return ToolCall(name, dict(args))


def normalize_output(value: Any) -> TargetOutput:
    """Turn what a target returned into a ``TargetOutput`` (see the module docstring)."""
    if isinstance(value, TargetOutput):
        return value
    if value is None:
        return TargetOutput(text="")
    if isinstance(value, str):
        return TargetOutput(text=value)
    if not isinstance(value, Mapping):
        raise TargetError(f"a target must return a string or a dict, not {type(value).__name__}")
    data = dict(value)
    message: Mapping[str, Any] = data
    choices = data.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], Mapping):
        inner = choices[0].get("message")
        if isinstance(inner, Mapping):
            message = inner
    text = next((message[k] for k in _TEXT_KEYS if isinstance(message.get(k), str)), "")
    usage = data.get("usage") if isinstance(data.get("usage"), Mapping) else {}
    assert isinstance(usage, Mapping)
    input_tokens = _int_or_none(
        data.get("input_tokens", usage.get("input_tokens", usage.get("prompt_tokens")))
    )
    output_tokens = _int_or_none(
        data.get("output_tokens", usage.get("output_tokens", usage.get("completion_tokens")))
    )
    cost = data.get("cost_usd", data.get("cost"))
    citations = data.get("citations", data.get("sources", []))
    calls = [c for c in map(_tool_call, message.get("tool_calls") or []) if c is not None]
    return TargetOutput(
        text=text,
        citations=[str(c) for c in citations] if isinstance(citations, list) else [],
        tool_calls=calls,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost_usd=float(cost) if isinstance(cost, int | float) else None,
        model=data.get("model") if isinstance(data.get("model"), str) else None,
        data=data,
    )


def import_object(spec: str) -> Any:
    """The object named ``package.module:attribute`` (``attribute`` may be dotted)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise TargetError(f"{spec!r} is not of the form module:function")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise TargetError(f"cannot import {module_name!r} (from {spec!r}): {exc}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise TargetError(f"{module_name!r} has no attribute {attr!r}") from None
    return obj


class CallableTarget:
    """A Python function ``fn(case_input: dict) -> str | dict`` (sync or async)."""

    def __init__(self, fn: Callable[[dict[str, Any]], Any], name: str) -> None:
        self._fn = fn
        self.name = name

    def __call__(self, case_input: dict[str, Any]) -> TargetOutput:
        result = self._fn(case_input)
        if inspect.isawaitable(result):
            result = asyncio.run(_await(result))
        return normalize_output(result)


async def _await(awaitable: Any) -> Any:
    return await awaitable


class HttpTarget:
    """POST ``{"input": case_input}`` as JSON to a URL; the JSON answer is the output."""

    def __init__(self, url: str, *, timeout: float = 60.0, headers: dict[str, str] | None = None):
        self.name = url
        self._url = url
        self._client = httpx.Client(timeout=timeout, headers=headers or {})

    def __call__(self, case_input: dict[str, Any]) -> TargetOutput:
        try:
            response = self._client.post(self._url, json={"input": case_input})
        except httpx.HTTPError as exc:
            raise TargetError(f"POST {self._url} failed: {exc}") from None
        if response.status_code >= 400:
            raise TargetError(
                f"POST {self._url} answered {response.status_code}: {response.text[:300]}"
            )
        try:
            body = response.json()
        except ValueError:
            return TargetOutput(text=response.text)
        return normalize_output(body)

    def close(self) -> None:
        self._client.close()


def load_target(spec: str | None = None, *, url: str | None = None) -> CallableTarget | HttpTarget:
    """A target from ``module:function`` or a URL (exactly one of them)."""
    if bool(spec) == bool(url):
        raise TargetError("give exactly one of a module:function target or a target URL")
    if url:
        if not url.startswith(("http://", "https://")):
            raise TargetError(f"target URL {url!r} must start with http:// or https://")
        return HttpTarget(url)
    assert spec is not None
    fn = import_object(spec)
    if not callable(fn):
        raise TargetError(f"{spec!r} is not callable")
    return CallableTarget(fn, spec)

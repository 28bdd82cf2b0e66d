"""``feedback()`` and ``outcome()``: send user feedback and downstream outcomes.

Each call POSTs one JSON event to the server (``/api/v1/feedback`` or
``/api/v1/outcomes``), waits until it is stored and returns its id. Sending the same
``id`` twice stores it once, so a retry after a timeout is safe. Any refusal or
network failure raises ``GoldenloopError`` carrying the server's message.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

import httpx

from goldenloop.sdk import settings
from goldenloop.sdk.errors import GoldenloopError

Rating = Literal["up", "down"]
Category = Literal["wrong", "unsafe", "slow", "unhelpful", "other"]

FEEDBACK_PATH = "/api/v1/feedback"
OUTCOMES_PATH = "/api/v1/outcomes"
DEFAULT_TIMEOUT_S = 5.0


def _request(
    path: str, body: dict[str, Any], endpoint: str | None, api_key: str | None
) -> tuple[str, dict[str, Any], dict[str, str]]:
    resolved = settings.resolve(endpoint, api_key)
    if "project" not in body and resolved.project:
        body["project"] = resolved.project
    headers = {"Accept": "application/json"}
    if resolved.api_key:
        headers["Authorization"] = f"Bearer {resolved.api_key}"
    payload = {k: v for k, v in body.items() if v is not None}
    if isinstance(payload.get("created_at"), datetime):
        payload["created_at"] = payload["created_at"].isoformat()
    return resolved.endpoint + path, payload, headers


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _answer(url: str, response: httpx.Response) -> str:
    """The stored id, or GoldenloopError with the server's own message."""
    try:
        data: Any = response.json()
    except ValueError:
        data = None
    if response.is_success and isinstance(data, dict) and isinstance(data.get("id"), str):
        return str(data["id"])
    error = data.get("error") if isinstance(data, dict) else None
    problems = data.get("problems") if isinstance(data, dict) else None
    detail = error if isinstance(error, str) else (response.text[:300] or response.reason_phrase)
    raise GoldenloopError(
        f"goldenloop answered {response.status_code} to POST {url}: {detail}",
        status_code=response.status_code,
        error=error if isinstance(error, str) else None,
        problems=tuple(str(p) for p in problems) if isinstance(problems, list) else (),
        retry_after=_seconds(response.headers.get("retry-after")),
    )


def _unreachable(url: str, exc: httpx.HTTPError) -> GoldenloopError:
    return GoldenloopError(f"cannot reach goldenloop at {url}: {exc!r}")


def _post(
    path: str, body: dict[str, Any], endpoint: str | None, api_key: str | None, timeout: float
) -> str:
    url, payload, headers = _request(path, body, endpoint, api_key)
    try:
        response = httpx.post(url, json=payload, headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        raise _unreachable(url, exc) from exc
    return _answer(url, response)


async def _apost(
    path: str, body: dict[str, Any], endpoint: str | None, api_key: str | None, timeout: float
) -> str:
    url, payload, headers = _request(path, body, endpoint, api_key)
    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            response = await client.post(url, json=payload, headers=headers)
    except httpx.HTTPError as exc:
        raise _unreachable(url, exc) from exc
    return _answer(url, response)


def _feedback_body(
    session_id: str,
    rating: Rating,
    message_id: str | None,
    category: Category | str | None,
    comment: str | None,
    prompt_hash: str | None,
    model_hash: str | None,
    user_id: str | None,
    id: str | None,
    project: str | None,
    created_at: datetime | None,
) -> dict[str, Any]:
    return {
        "session_id": session_id, "rating": rating, "message_id": message_id,
        "category": category, "comment": comment, "prompt_hash": prompt_hash,
        "model_hash": model_hash, "user_id": user_id, "id": id, "created_at": created_at,
        **({"project": project} if project else {}),
    }  # fmt: skip


def _outcome_body(
    session_id: str,
    name: str,
    success: bool,
    value: float | None,
    attributes: Mapping[str, Any] | None,
    message_id: str | None,
    id: str | None,
    project: str | None,
    created_at: datetime | None,
) -> dict[str, Any]:
    return {
        "session_id": session_id, "name": name, "success": success, "value": value,
        "attributes": dict(attributes) if attributes else None, "message_id": message_id,
        "id": id, "created_at": created_at, **({"project": project} if project else {}),
    }  # fmt: skip


def feedback(
    session_id: str,
    rating: Rating,
    *,
    message_id: str | None = None,
    category: Category | str | None = None,
    comment: str | None = None,
    prompt_hash: str | None = None,
    model_hash: str | None = None,
    user_id: str | None = None,
    id: str | None = None,
    project: str | None = None,
    created_at: datetime | None = None,
    endpoint: str | None = None,
    api_key: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> str:
    """Record a thumbs up/down (``category``: wrong, unsafe, slow, unhelpful, other)
    for a session, optionally for one message; returns the stored feedback id."""
    body = _feedback_body(
        session_id, rating, message_id, category, comment, prompt_hash, model_hash,
        user_id, id, project, created_at,
    )  # fmt: skip
    return _post(FEEDBACK_PATH, body, endpoint, api_key, timeout)


def outcome(
    session_id: str,
    name: str,
    success: bool,
    *,
    value: float | None = None,
    attributes: Mapping[str, Any] | None = None,
    message_id: str | None = None,
    id: str | None = None,
    project: str | None = None,
    created_at: datetime | None = None,
    endpoint: str | None = None,
    api_key: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> str:
    """Record a downstream outcome (e.g. ``refund_completed``) for a session; returns
    the stored outcome id."""
    body = _outcome_body(
        session_id, name, success, value, attributes, message_id, id, project, created_at
    )
    return _post(OUTCOMES_PATH, body, endpoint, api_key, timeout)


async def afeedback(
    session_id: str,
    rating: Rating,
    *,
    message_id: str | None = None,
    category: Category | str | None = None,
    comment: str | None = None,
    prompt_hash: str | None = None,
    model_hash: str | None = None,
    user_id: str | None = None,
    id: str | None = None,
    project: str | None = None,
    created_at: datetime | None = None,
    endpoint: str | None = None,
    api_key: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> str:
    """``feedback()`` for asyncio code."""
    body = _feedback_body(
        session_id, rating, message_id, category, comment, prompt_hash, model_hash,
        user_id, id, project, created_at,
    )  # fmt: skip
    return await _apost(FEEDBACK_PATH, body, endpoint, api_key, timeout)


async def aoutcome(
    session_id: str,
    name: str,
    success: bool,
    *,
    value: float | None = None,
    attributes: Mapping[str, Any] | None = None,
    message_id: str | None = None,
    id: str | None = None,
    project: str | None = None,
    created_at: datetime | None = None,
    endpoint: str | None = None,
    api_key: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> str:
    """``outcome()`` for asyncio code."""
    body = _outcome_body(
        session_id, name, success, value, attributes, message_id, id, project, created_at
    )
    return await _apost(OUTCOMES_PATH, body, endpoint, api_key, timeout)

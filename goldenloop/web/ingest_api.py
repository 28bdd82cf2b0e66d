"""Ingest endpoints: OTLP/HTTP traces, feedback and outcome events.

Each handler validates fully before anything is queued, so a rejected request leaves
nothing behind, and answers only after the writer has committed what it accepted.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from goldenloop.ingest.normalize import InvalidSpans
from goldenloop.ingest.otlp import BodyTooLarge, OtlpDecodeError, encode_export_response
from goldenloop.ingest.pool import DecodeWorkerCrashed
from goldenloop.ingest.request import TraceRequest
from goldenloop.ingest.writer import QueueFull, WriterStopped
from goldenloop.model import Feedback, Outcome
from goldenloop.web.state import AppState

_OPENAPI_OTLP = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-protobuf": {"schema": {"type": "string", "format": "binary"}},
            "application/json": {"schema": {"type": "object"}},
        },
    }
}


def error_response(
    status: int,
    message: str,
    problems: list[str] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if problems:
        body["problems"] = problems
    return JSONResponse(body, status_code=status, headers=headers)


class IngestRejected(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


def state_of(request: Request) -> AppState:
    state: AppState = request.app.state.goldenloop
    return state


def project_for(request: Request, state: AppState) -> str | None:
    """The project an API key names; None when keys are not required."""
    if not state.api_keys:
        return None
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise IngestRejected(
            error_response(
                401,
                "missing API key: send 'Authorization: Bearer <key>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        )
    project = state.api_keys.get(token.strip())
    if project is None:
        raise IngestRejected(
            error_response(401, "unknown API key", headers={"WWW-Authenticate": "Bearer"})
        )
    return project


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise IngestRejected(
                    error_response(413, f"request body is {declared} bytes; the limit is {limit}")
                )
        except ValueError:
            raise IngestRejected(error_response(400, "Content-Length is not a number")) from None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise IngestRejected(
                error_response(413, f"request body exceeds the limit of {limit} bytes")
            )
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _await_commit(future: Any) -> None:
    await asyncio.wrap_future(future)


def _busy(exc: QueueFull | WriterStopped) -> JSONResponse:
    if isinstance(exc, QueueFull):
        return error_response(429, str(exc), headers={"Retry-After": str(exc.retry_after)})
    return error_response(503, "server is shutting down; retry later", headers={"Retry-After": "5"})


async def ingest_traces(request: Request) -> Response:
    """OTLP/HTTP trace export (protobuf or JSON, optionally gzip)."""
    state = state_of(request)
    content_type = (
        request.headers.get("content-type", "application/x-protobuf").split(";")[0].strip().lower()
    )
    as_json = content_type == "application/json"
    if content_type not in ("application/x-protobuf", "application/protobuf", "application/json"):
        return error_response(
            415,
            f"unsupported Content-Type {content_type!r}; use application/x-protobuf or application/json",
        )
    try:
        project = project_for(request, state)
        body = await read_body(request, state.settings.max_request_bytes)
        table = await state.decoder.decode(
            TraceRequest(
                body=body,
                as_json=as_json,
                content_encoding=request.headers.get("content-encoding"),
                project_override=project,
                now_us=int(time.time() * 1_000_000),
            )
        )
    except IngestRejected as rejected:
        return rejected.response
    except BodyTooLarge as exc:
        return error_response(413, str(exc))
    except OtlpDecodeError as exc:
        return error_response(400, str(exc))
    except InvalidSpans as exc:
        return error_response(
            400, f"{len(exc.problems)} problem(s) in the spans; nothing was stored", exc.problems
        )
    except DecodeWorkerCrashed as exc:
        return error_response(503, f"{exc}; retry", headers={"Retry-After": "1"})
    if table.num_rows:
        try:
            future = state.writer.submit_spans(table)
        except (QueueFull, WriterStopped) as exc:
            return _busy(exc)
        await _await_commit(future)
    content, media_type = encode_export_response(as_json=as_json)
    return Response(content=content, media_type=media_type)


class FeedbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    session_id: Annotated[str, Field(min_length=1, max_length=256)]
    rating: Literal["up", "down"]
    message_id: Annotated[str | None, Field(max_length=256)] = None
    category: Literal["wrong", "unsafe", "slow", "unhelpful", "other"] | None = None
    comment: Annotated[str | None, Field(max_length=10_000)] = None
    prompt_hash: Annotated[str | None, Field(max_length=128)] = None
    model_hash: Annotated[str | None, Field(max_length=256)] = None
    user_id: Annotated[str | None, Field(max_length=256)] = None
    project: Annotated[str | None, Field(max_length=256)] = None
    id: Annotated[
        str | None,
        Field(
            min_length=1, max_length=128, description="Client id; resending the same id is a no-op"
        ),
    ] = None
    created_at: datetime | None = None


class OutcomeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    session_id: Annotated[str, Field(min_length=1, max_length=256)]
    name: Annotated[str, Field(min_length=1, max_length=256, description="e.g. refund_completed")]
    success: bool
    message_id: Annotated[str | None, Field(max_length=256)] = None
    value: Annotated[float | None, Field(allow_inf_nan=False)] = None
    attributes: dict[str, Any] = Field(default_factory=dict)
    project: Annotated[str | None, Field(max_length=256)] = None
    id: Annotated[str | None, Field(min_length=1, max_length=128)] = None
    created_at: datetime | None = None


class Accepted(BaseModel):
    id: str
    status: Literal["stored"] = "stored"


def _when(value: datetime | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


async def ingest_feedback(request: Request, item: FeedbackIn) -> Response:
    """Record explicit user feedback (thumbs up/down with an optional category)."""
    state = state_of(request)
    try:
        project = project_for(request, state)
    except IngestRejected as rejected:
        return rejected.response
    feedback = Feedback(
        id=item.id or uuid.uuid4().hex,
        project=project or item.project or state.settings.default_project,
        session_id=item.session_id, message_id=item.message_id, rating=item.rating,
        category=item.category, comment=item.comment, prompt_hash=item.prompt_hash,
        model_hash=item.model_hash, user_id=item.user_id, created_at=_when(item.created_at),
    )  # fmt: skip
    try:
        await _await_commit(state.writer.submit_feedback([feedback]))
    except (QueueFull, WriterStopped) as exc:
        return _busy(exc)
    return JSONResponse(Accepted(id=feedback.id).model_dump(), status_code=202)


async def ingest_outcome(request: Request, item: OutcomeIn) -> Response:
    """Record a downstream outcome (e.g. refund completed) for a session."""
    state = state_of(request)
    try:
        project = project_for(request, state)
    except IngestRejected as rejected:
        return rejected.response
    outcome = Outcome(
        id=item.id or uuid.uuid4().hex,
        project=project or item.project or state.settings.default_project,
        session_id=item.session_id, message_id=item.message_id, name=item.name,
        success=item.success, value=item.value, attributes=item.attributes,
        created_at=_when(item.created_at),
    )  # fmt: skip
    try:
        await _await_commit(state.writer.submit_outcomes([outcome]))
    except (QueueFull, WriterStopped) as exc:
        return _busy(exc)
    return JSONResponse(Accepted(id=outcome.id).model_dump(), status_code=202)


OTLP_OPENAPI = _OPENAPI_OTLP

"""goldenloop.sdk: context stamping on local providers, and feedback/outcome helpers
against the real app served by uvicorn on a free port (in a background thread).

Every test builds its own TracerProvider; nothing touches the global one.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from goldenloop import conventions as cv
from goldenloop import sdk
from goldenloop.config import Settings
from goldenloop.sdk import settings as sdk_settings
from goldenloop.store.duckdb import DuckDBStore
from goldenloop.web.app import create_app

API_KEY = "sk-gl-test-key"
PROJECT = "shop"


@pytest.fixture(autouse=True)
def _clean_sdk_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """No remembered configure() settings or GOLDENLOOP_* env leak between tests."""
    monkeypatch.setattr(sdk_settings, "_current", None)
    for name in (sdk_settings.ENDPOINT_ENV, sdk_settings.API_KEY_ENV, sdk_settings.PROJECT_ENV):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def traced() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    """A local provider with goldenloop installed (no export) and an in-memory exporter."""
    provider = TracerProvider(resource=Resource.create({"service.name": "unit"}))
    sdk.install(provider, export=False)
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    yield provider, memory
    provider.shutdown()


def by_name(memory: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {span.name: span for span in memory.get_finished_spans()}


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


# -- context stamping ---------------------------------------------------------------------


def test_context_stamps_every_span_with_convention_names(
    traced: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, memory = traced
    tracer = provider.get_tracer("app")
    with sdk.context(
        session_id="s-1",
        user_id="u-7",
        customer_tier="enterprise",
        locale="de-DE",
        feature_flags={"eu_banner": "on", "new_ranker": "b"},
        prompt_version="a9f2",
        prompt_hash="9c1e77d0",
        model_version="gpt-4o-2024-08-06",
        index_version="idx-42",
        message_id="m-3",
    ):
        with tracer.start_as_current_span("turn"), tracer.start_as_current_span("llm"):
            pass
    with tracer.start_as_current_span("outside"):
        pass
    spans = by_name(memory)
    expected = {
        cv.SESSION_ID: "s-1",
        cv.CONVERSATION_ID: "s-1",
        cv.USER_ID: "u-7",
        cv.CUSTOMER_TIER: "enterprise",
        cv.LOCALE: "de-DE",
        cv.PROMPT_VERSION: "a9f2",
        cv.PROMPT_HASH: "9c1e77d0",
        cv.MODEL_VERSION: "gpt-4o-2024-08-06",
        cv.INDEX_VERSION: "idx-42",
        cv.MESSAGE_ID: "m-3",
    }
    for name in ("turn", "llm"):
        got = attrs(spans[name])
        assert {k: got.get(k) for k in expected} == expected
        assert json.loads(got[cv.FEATURE_FLAGS]) == {"eu_banner": "on", "new_ranker": "b"}
    assert attrs(spans["outside"]) == {}


def test_nested_contexts_merge_inner_wins_and_restore_on_exit(
    traced: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, memory = traced
    tracer = provider.get_tracer("app")
    with sdk.context(session_id="s-1", locale="en-US", feature_flags={"a": "on", "b": "off"}):
        assert sdk.current_attributes()[cv.LOCALE] == "en-US"
        with sdk.context(locale="fr-FR", user_id="u-1", feature_flags={"b": "on"}):
            with tracer.start_as_current_span("inner"):
                pass
        with tracer.start_as_current_span("after"):
            pass
    assert sdk.current_attributes() == {}
    spans = by_name(memory)
    inner, after = attrs(spans["inner"]), attrs(spans["after"])
    assert inner[cv.SESSION_ID] == "s-1"
    assert inner[cv.LOCALE] == "fr-FR"
    assert inner[cv.USER_ID] == "u-1"
    assert json.loads(inner[cv.FEATURE_FLAGS]) == {"a": "on", "b": "on"}
    assert after[cv.LOCALE] == "en-US"
    assert cv.USER_ID not in after
    assert json.loads(after[cv.FEATURE_FLAGS]) == {"a": "on", "b": "off"}


def test_foreign_tracer_spans_are_stamped_but_keep_their_own_attributes(
    traced: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, memory = traced
    foreign = provider.get_tracer("openinference.instrumentation.openai", "0.1.0")
    with sdk.context(session_id="s-9", customer_tier="free"):
        with foreign.start_as_current_span(
            "ChatCompletion",
            attributes={"openinference.span.kind": "LLM", cv.CUSTOMER_TIER: "pro"},
        ):
            pass
        # a span started with an explicit, unrelated context still gets the block's values
        span = foreign.start_span("detached", context=Context())
        span.end()
    spans = by_name(memory)
    chat = attrs(spans["ChatCompletion"])
    assert chat[cv.SESSION_ID] == "s-9"
    assert chat[cv.CUSTOMER_TIER] == "pro"  # set by the instrumentation: not overwritten
    assert chat["openinference.span.kind"] == "LLM"
    assert attrs(spans["detached"])[cv.SESSION_ID] == "s-9"


def test_context_follows_asyncio_tasks_and_not_other_threads(
    traced: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, memory = traced
    tracer = provider.get_tracer("app")

    async def work(name: str) -> None:
        await asyncio.sleep(0)
        with tracer.start_as_current_span(name):
            pass

    async def main() -> None:
        with sdk.context(session_id="task-session"):
            task = asyncio.create_task(work("in-task"))
        await task

    asyncio.run(main())
    with sdk.context(session_id="thread-session"):
        worker = threading.Thread(target=lambda: tracer.start_span("in-thread").end())
        worker.start()
        worker.join()
    spans = by_name(memory)
    assert attrs(spans["in-task"])[cv.SESSION_ID] == "task-session"
    assert cv.SESSION_ID not in attrs(spans["in-thread"])


def test_context_rejects_non_string_values() -> None:
    with pytest.raises(TypeError, match="session_id must be a string"):
        with sdk.context(session_id=42):  # type: ignore[arg-type]
            pass
    with pytest.raises(TypeError, match="feature flag 'x'"):
        with sdk.context(feature_flags={"x": True}):  # type: ignore[dict-item]
            pass


def test_unsampled_spans_are_left_alone() -> None:
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    memory = InMemorySpanExporter()
    provider = TracerProvider(sampler=ALWAYS_OFF)
    sdk.install(provider, export=False)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with sdk.context(attributes={"app.region": "eu-west-1"}):
        provider.get_tracer("app").start_span("dropped").end()
    assert memory.get_finished_spans() == ()
    provider.shutdown()


def test_install_stamps_project_and_refuses_a_second_install() -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "legacy-app"}))
    memory = InMemorySpanExporter()
    sdk.install(provider, project="checkout", export=False)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with sdk.context(attributes={"app.region": "eu-west-1"}):
        provider.get_tracer("app").start_span("one").end()
    got = attrs(memory.get_finished_spans()[0])
    assert got[cv.PROJECT] == "checkout"
    assert got["app.region"] == "eu-west-1"
    assert sdk_settings.resolve().project == "checkout"
    with pytest.raises(sdk.GoldenloopError, match="already installed"):
        sdk.install(provider)
    with pytest.raises(TypeError, match="TracerProvider"):
        sdk.install(object())  # type: ignore[arg-type]
    provider.shutdown()


def test_endpoint_resolution_order(monkeypatch: pytest.MonkeyPatch) -> None:
    assert sdk_settings.resolve().endpoint == sdk.DEFAULT_ENDPOINT
    monkeypatch.setenv("GOLDENLOOP_ENDPOINT", "https://gl.example.com/")
    monkeypatch.setenv("GOLDENLOOP_API_KEY", "env-key")
    assert sdk_settings.resolve() == sdk.ClientSettings("https://gl.example.com", "env-key")
    assert sdk_settings.resolve("http://h:9", "k").endpoint == "http://h:9"
    with pytest.raises(ValueError, match="http"):
        sdk_settings.resolve("127.0.0.1:4318")


def test_sending_traces_docs_list_every_mapped_attribute() -> None:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "sending-traces.md").read_text()
    keys = {k for keys in cv.FIELD_SOURCES.values() for k in keys}
    keys |= set(cv.KIND_SOURCES) | {cv.FEATURE_FLAGS, cv.FEATURE_FLAG_KEY}
    keys |= set(cv.FEATURE_FLAG_VARIANTS)
    missing = sorted(k for k in keys if f"`{k}`" not in doc)
    assert not missing, f"docs/sending-traces.md does not mention: {missing}"


# -- feedback and outcome against the real app ---------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real app (with an API key) on a free port, served by uvicorn in a thread."""
    store = DuckDBStore(Path(tmp_path_factory.mktemp("sdk")) / "x.duckdb")
    store.migrate()
    app = create_app(Settings(api_keys=f"{PROJECT}:{API_KEY}"), store)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
    store.close()


def send_turn(url: str, session_id: str) -> None:
    """One real span for ``session_id`` through install()'s exporter (synchronous)."""
    provider = TracerProvider(resource=Resource.create({"service.name": "unit"}))
    sdk.install(provider, endpoint=url, api_key=API_KEY, batch=False)
    with sdk.context(session_id=session_id, user_id="u-1"):
        provider.get_tracer("app").start_span("turn").end()
    provider.shutdown()


def get_session(url: str, session_id: str) -> dict[str, Any]:
    response = httpx.get(f"{url}/api/v1/sessions/{session_id}", timeout=5)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def test_feedback_and_outcome_show_up_in_the_session(server_url: str) -> None:
    send_turn(server_url, "fb-session")
    fid = sdk.feedback(
        "fb-session",
        "down",
        category="wrong",
        comment="cited the wrong policy",
        message_id="m-1",
        prompt_hash="a9f2",
        user_id="u-1",
        endpoint=server_url,
        api_key=API_KEY,
    )
    oid = sdk.outcome(
        "fb-session",
        "refund_completed",
        True,
        value=42.5,
        attributes={"order": "o-9"},
        endpoint=server_url,
        api_key=API_KEY,
    )
    session = get_session(server_url, "fb-session")
    assert session["project"] == PROJECT
    [fb] = session["feedback"]
    assert fb["id"] == fid
    assert (fb["rating"], fb["category"], fb["message_id"]) == ("down", "wrong", "m-1")
    assert fb["comment"] == "cited the wrong policy" and fb["project"] == PROJECT
    [out] = session["outcomes"]
    assert out["id"] == oid
    assert (out["name"], out["success"], out["value"]) == ("refund_completed", True, 42.5)
    assert out["attributes"] == {"order": "o-9"}


def test_helpers_use_configured_endpoint_and_client_ids_are_idempotent(
    server_url: str,
) -> None:
    send_turn(server_url, "idem-session")  # install() remembered endpoint and key
    when = datetime(2025, 3, 1, 9, 30, tzinfo=UTC)
    assert sdk.feedback("idem-session", "up", id="fb-fixed", created_at=when) == "fb-fixed"
    assert sdk.feedback("idem-session", "up", id="fb-fixed", created_at=when) == "fb-fixed"
    assert asyncio.run(sdk.aoutcome("idem-session", "ticket_closed", False)) != ""
    assert asyncio.run(sdk.afeedback("idem-session", "down", category="slow")) != ""
    session = get_session(server_url, "idem-session")
    assert sorted(f["rating"] for f in session["feedback"]) == ["down", "up"]
    fixed = next(f for f in session["feedback"] if f["id"] == "fb-fixed")
    assert datetime.fromisoformat(fixed["created_at"]) == when
    assert [o["success"] for o in session["outcomes"]] == [False]


def test_server_refusals_raise_clear_errors(server_url: str) -> None:
    with pytest.raises(sdk.GoldenloopError) as info:
        sdk.feedback("s", "down", category="bogus", endpoint=server_url, api_key=API_KEY)
    err = info.value
    assert err.status_code == 422
    assert "category" in str(err) and "422" in str(err)
    assert err.problems and err.problems[0].startswith("category")
    with pytest.raises(sdk.GoldenloopError) as info:
        sdk.feedback("s", "sideways", endpoint=server_url, api_key=API_KEY)  # type: ignore[arg-type]
    assert info.value.status_code == 422 and "rating" in str(info.value)
    with pytest.raises(sdk.GoldenloopError, match="401.*unknown API key") as info:
        sdk.outcome("s", "x", True, endpoint=server_url, api_key="wrong")
    assert info.value.error == "unknown API key"
    with pytest.raises(sdk.GoldenloopError, match="missing API key"):
        sdk.outcome("s", "x", True, endpoint=server_url)


def test_unreachable_server_raises_goldenloop_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(sdk.GoldenloopError, match="cannot reach goldenloop") as info:
        sdk.feedback("s", "up", endpoint=url, timeout=2)
    assert info.value.status_code is None
    with pytest.raises(sdk.GoldenloopError, match="cannot reach goldenloop"):
        asyncio.run(sdk.aoutcome("s", "x", True, endpoint=url, timeout=2))


def test_configure_sends_stamped_spans_and_remembers_settings(server_url: str) -> None:
    provider = sdk.configure(
        server_url + "/v1/traces/",
        service_name="support-bot",
        project="support",
        api_key=API_KEY,
        set_global=False,
    )
    try:
        resource = provider.resource.attributes
        assert resource["service.name"] == "support-bot"
        assert resource[cv.PROJECT] == "support"
        assert sdk_settings.resolve() == sdk.ClientSettings(server_url, API_KEY, "support")
        with sdk.context(session_id="cfg-session", locale="de-DE"):
            provider.get_tracer("app").start_span("turn").end()
        assert provider.force_flush(5000)
    finally:
        provider.shutdown()
    session = get_session(server_url, "cfg-session")
    assert session["locale"] == "de-DE"
    assert session["project"] == PROJECT  # the API key decides the project
    with pytest.raises(ValueError, match="service_name"):
        sdk.configure(service_name="", set_global=False)


GLOBAL_SCRIPT = """
import sys
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from goldenloop import sdk

url, key = sys.argv[1], sys.argv[2]
if sys.argv[3] == "existing":  # the app set its own global provider first
    existing = TracerProvider()
    trace.set_tracer_provider(existing)
provider = sdk.configure(url, service_name="global-app", api_key=key, batch=False)
assert trace.get_tracer_provider() is provider
if sys.argv[3] == "existing":
    assert provider is existing
memory = InMemorySpanExporter()
provider.add_span_processor(SimpleSpanProcessor(memory))
with sdk.context(session_id="global-" + sys.argv[3]):
    trace.get_tracer("app").start_span("turn").end()
assert memory.get_finished_spans()[0].attributes["session.id"] == "global-" + sys.argv[3]
try:
    sdk.configure(url, service_name="global-app", api_key=key)
except sdk.GoldenloopError as exc:
    assert "already installed" in str(exc)
else:
    raise AssertionError("a second configure() on the global provider must fail")
provider.shutdown()
"""


@pytest.mark.parametrize("mode", ["fresh", "existing"])
def test_configure_sets_or_reuses_the_global_provider(
    server_url: str, mode: str, tmp_path: Path
) -> None:
    """Global provider state is per process, so this runs in a child interpreter."""
    result = subprocess.run(
        [sys.executable, "-c", GLOBAL_SCRIPT, server_url, API_KEY, mode],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert get_session(server_url, f"global-{mode}")["span_count"] == 1

"""``configure()`` and ``install()``: send an app's spans to goldenloop over OTLP/HTTP.

``configure`` builds a TracerProvider (resource ``service.name`` and
``goldenloop.project``), adds goldenloop's processors and, by default, makes it the
global provider. ``install`` adds the same processors to a provider the app already
has (its own exporters, OpenInference instrumentors and resource stay as they are).
"""

from __future__ import annotations

import logging
import weakref

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter,
)
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.util.types import AttributeValue

from goldenloop import conventions as cv
from goldenloop.sdk import settings
from goldenloop.sdk.errors import GoldenloopError
from goldenloop.sdk.stamping import ContextSpanProcessor

_log = logging.getLogger("goldenloop.sdk")

#: Providers goldenloop is installed on (so a second install is caught, not doubled).
_installed: weakref.WeakSet[TracerProvider] = weakref.WeakSet()

EXPORT_TIMEOUT_S = 10.0


def exporter(endpoint: str | None = None, *, api_key: str | None = None) -> SpanExporter:
    """An OTLP/HTTP protobuf exporter aimed at goldenloop's ``/v1/traces``."""
    resolved = settings.resolve(endpoint, api_key)
    headers = {"Authorization": f"Bearer {resolved.api_key}"} if resolved.api_key else None
    span_exporter: SpanExporter = OTLPSpanExporter(
        endpoint=resolved.endpoint + "/v1/traces", headers=headers, timeout=EXPORT_TIMEOUT_S
    )
    return span_exporter


def _project_of(provider: TracerProvider) -> str | None:
    attributes = provider.resource.attributes
    for key in cv.PROJECT_RESOURCE_KEYS:
        value = attributes.get(key)
        if isinstance(value, str) and value and value != "unknown_service":
            return value
    return None


def install(
    provider: TracerProvider,
    *,
    endpoint: str | None = None,
    api_key: str | None = None,
    project: str | None = None,
    batch: bool = True,
    export: bool = True,
) -> TracerProvider:
    """Add goldenloop to an existing SDK TracerProvider and return it.

    Registers the ``ContextSpanProcessor`` (so ``context()`` stamps this provider's
    spans) and, unless ``export=False``, a Batch (or, with ``batch=False``, Simple)
    span processor exporting to ``endpoint``. ``project`` is stamped on every span
    when the provider's resource names another one. Endpoint, key and project are
    remembered for ``feedback()``/``outcome()``.
    """
    if not isinstance(provider, TracerProvider):
        raise TypeError(
            "goldenloop.sdk.install needs an opentelemetry.sdk.trace.TracerProvider, got "
            f"{type(provider).__name__}"
        )
    if provider in _installed:
        raise GoldenloopError("goldenloop is already installed on this TracerProvider")
    resolved = settings.resolve(endpoint, api_key, project)
    static: dict[str, AttributeValue] = {}
    if project and provider.resource.attributes.get(cv.PROJECT) != project:
        static[cv.PROJECT] = project
    provider.add_span_processor(ContextSpanProcessor(static))
    if export:
        span_exporter = exporter(resolved.endpoint, api_key=resolved.api_key)
        processor: SpanProcessor = (
            BatchSpanProcessor(span_exporter) if batch else SimpleSpanProcessor(span_exporter)
        )
        provider.add_span_processor(processor)
    _installed.add(provider)
    settings.remember(
        settings.ClientSettings(
            endpoint=resolved.endpoint,
            api_key=resolved.api_key,
            project=project or _project_of(provider) or resolved.project,
        )
    )
    return provider


def configure(
    endpoint: str | None = None,
    *,
    service_name: str,
    api_key: str | None = None,
    project: str | None = None,
    set_global: bool = True,
    batch: bool = True,
) -> TracerProvider:
    """Set up tracing to goldenloop in one call and return the TracerProvider.

    ``endpoint`` is the server's base URL (default ``GOLDENLOOP_ENDPOINT`` or
    http://127.0.0.1:4318); ``api_key`` (default ``GOLDENLOOP_API_KEY``) is sent as
    ``Authorization: Bearer``. The resource carries ``service.name`` and, when given,
    ``goldenloop.project`` (the project is the service name otherwise). With
    ``set_global`` (default) the provider becomes the global one; if the app already
    set a global SDK provider, goldenloop is installed on that one instead and it is
    returned. Call ``provider.shutdown()`` (or ``force_flush()``) before exit.
    """
    if not service_name:
        raise ValueError("goldenloop.sdk.configure: service_name must not be empty")
    if set_global:
        current = trace.get_tracer_provider()
        if isinstance(current, TracerProvider):
            _log.info("a global TracerProvider exists; installing goldenloop on it")
            return install(
                current, endpoint=endpoint, api_key=api_key, project=project, batch=batch
            )
    attributes: dict[str, AttributeValue] = {SERVICE_NAME: service_name}
    if project:
        attributes[cv.PROJECT] = project
    provider = TracerProvider(resource=Resource.create(attributes))
    install(provider, endpoint=endpoint, api_key=api_key, project=project, batch=batch)
    if set_global:
        trace.set_tracer_provider(provider)
        if trace.get_tracer_provider() is not provider:
            _log.warning(
                "goldenloop: the global TracerProvider was already set to a %s and cannot be "
                "replaced; use the returned provider's get_tracer(), or install() on yours",
                type(trace.get_tracer_provider()).__name__,
            )
    return provider

"""goldenloop.sdk: tiny helpers over the OpenTelemetry SDK.

::

    from goldenloop import sdk

    provider = sdk.configure(service_name="support-bot")   # OTLP → 127.0.0.1:4318
    with sdk.context(session_id="s-1", user_id="u-7", locale="de-DE"):
        ...  # every span started here (any instrumentation) carries these fields
    sdk.feedback("s-1", "down", category="wrong")
    sdk.outcome("s-1", "refund_completed", True, value=42.0)
    provider.shutdown()

See docs/sdk.md.
"""

from __future__ import annotations

from goldenloop.sdk.errors import GoldenloopError
from goldenloop.sdk.events import afeedback, aoutcome, feedback, outcome
from goldenloop.sdk.settings import DEFAULT_ENDPOINT, ClientSettings
from goldenloop.sdk.stamping import ContextSpanProcessor, context, current_attributes
from goldenloop.sdk.tracing import configure, exporter, install

__all__ = [
    "DEFAULT_ENDPOINT",
    "ClientSettings",
    "ContextSpanProcessor",
    "GoldenloopError",
    "afeedback",
    "aoutcome",
    "configure",
    "context",
    "current_attributes",
    "exporter",
    "feedback",
    "install",
    "outcome",
]

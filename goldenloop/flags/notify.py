"""Close-the-loop notifications: tell someone (and, if policy allows, the user who
reported it) that a reported problem is fixed.

``NOTIFIERS`` maps a type name to a notifier: an object with ``check(options)``
(raise ``ValueError`` for bad options, at config-load time) and
``__call__(event, options)`` (deliver, raise on failure). The built-in ``webhook``
POSTs the event as JSON; ``log`` writes it to the server log. A user's notifier
registers the same way::

    from goldenloop.flags.notify import NOTIFIERS

    class Slack:
        def check(self, options): ...
        def __call__(self, event, options): ...

    NOTIFIERS["slack"] = Slack()
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

log = logging.getLogger("goldenloop.flags.notify")


@dataclass(frozen=True)
class Reporter:
    """Someone whose feedback the event answers (production ids: the app decides
    whether its policy allows contacting them)."""

    feedback_id: str
    session_id: str
    user_id: str | None
    message_id: str | None
    category: str | None


@dataclass(frozen=True)
class LoopEvent:
    event: str  # "resolved"
    item_id: str
    project: str
    title: str
    priority: str
    golden_case_id: str | None
    resolution: str | None
    at: datetime
    reporters: tuple[Reporter, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["at"] = self.at.isoformat() + ("" if self.at.tzinfo else "Z")
        data["reporters"] = [dataclasses.asdict(r) for r in self.reporters]
        return data


class Notifier(Protocol):
    def check(self, options: Mapping[str, Any]) -> None: ...

    def __call__(self, event: LoopEvent, options: Mapping[str, Any]) -> None: ...


class WebhookNotifier:
    """POST the event as JSON to ``url``; optional ``headers`` and ``timeout_s``."""

    def check(self, options: Mapping[str, Any]) -> None:
        url = options.get("url")
        if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
            raise ValueError(f"url: a webhook needs an http(s) URL, got {url!r}")
        headers = options.get("headers", {})
        if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise ValueError("headers: must be a mapping of header name to text")
        timeout = options.get("timeout_s", 5)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ValueError(f"timeout_s: must be a positive number, got {timeout!r}")
        unknown = set(options) - {"url", "headers", "timeout_s"}
        if unknown:
            raise ValueError(
                f"unknown webhook option(s) {sorted(unknown)}; use url, headers, timeout_s"
            )

    def __call__(self, event: LoopEvent, options: Mapping[str, Any]) -> None:
        import httpx  # on first delivery: the server loads this module at start-up

        response = httpx.post(
            str(options["url"]),
            json=event.to_dict(),
            headers={"User-Agent": "goldenloop", **dict(options.get("headers", {}))},
            timeout=float(options.get("timeout_s", 5)),
        )
        if response.status_code >= 300:
            raise RuntimeError(f"webhook answered HTTP {response.status_code}")


class LogNotifier:
    """Write the event to the ``goldenloop.flags.notify`` logger."""

    def check(self, options: Mapping[str, Any]) -> None:
        if options:
            raise ValueError(f"the log notifier takes no options, got {sorted(options)}")

    def __call__(self, event: LoopEvent, options: Mapping[str, Any]) -> None:
        log.info("triage item %s %s: %s", event.item_id, event.event, event.resolution)


NOTIFIERS: dict[str, Notifier] = {"webhook": WebhookNotifier(), "log": LogNotifier()}

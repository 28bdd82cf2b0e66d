"""Notifiers: where alert notifications go. A registry with a tiny protocol.

``NOTIFIERS`` maps a type name (what ``type:`` says in the config) to a notifier::

    class Notifier(Protocol):
        def check(self, options) -> None: ...          # raise ValueError naming the key
        def send(self, notification, options, http) -> None: ...  # raise on failure

``http`` is a ``RetryingHttp``: ``http.post_json(url, body)`` retries with exponential
backoff on 429, 5xx and connection errors (honouring ``Retry-After``), never on other
4xx, and raises ``DeliveryError`` when it gives up. The built-ins (``webhook``,
``slack``, ``pagerduty``) register the same way a user's notifier does::

    from goldenloop.alerts.notifiers import register_notifier

    class Teams:
        def check(self, options): ...
        def send(self, notification, options, http):
            http.post_json(options["url"], {"text": notification.summary})

    register_notifier("teams", Teams())
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit

from goldenloop.alerts.notifiers.http import DeliveryError, RetryingHttp, RetryPolicy
from goldenloop.alerts.payload import Notification

_SECRET_WORDS = ("key", "token", "secret", "password", "url")


class Notifier(Protocol):
    def check(self, options: Mapping[str, Any]) -> None: ...

    def send(
        self, notification: Notification, options: Mapping[str, Any], http: RetryingHttp
    ) -> None: ...


NOTIFIERS: dict[str, Notifier] = {}


def register_notifier(name: str, notifier: Notifier) -> Notifier:
    """Add (or replace) a notifier type; built-ins register the same way."""
    NOTIFIERS[name] = notifier
    return notifier


def mask_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Options safe to show: URLs keep scheme and host, keys and tokens are hidden."""
    shown: dict[str, Any] = {}
    for name, value in options.items():
        lowered = name.lower()
        if isinstance(value, str) and any(word in lowered for word in _SECRET_WORDS):
            if "url" in lowered:
                parts = urlsplit(value)
                shown[name] = f"{parts.scheme}://{parts.netloc}/…" if parts.netloc else "…"
            else:
                shown[name] = "…" + value[-4:] if len(value) > 8 else "…"
        else:
            shown[name] = value
    return shown


def check_url(options: Mapping[str, Any], key: str, *, required: bool = True) -> None:
    value = options.get(key)
    if value is None and not required:
        return
    if (
        not isinstance(value, str)
        or urlsplit(value).scheme not in ("http", "https")
        or not urlsplit(value).netloc
    ):
        raise ValueError(f"{key}: expected an http(s) URL")


def check_known(options: Mapping[str, Any], known: set[str]) -> None:
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)}; use {', '.join(sorted(known))}")


__all__ = [
    "NOTIFIERS",
    "DeliveryError",
    "Notifier",
    "RetryPolicy",
    "RetryingHttp",
    "check_known",
    "check_url",
    "mask_options",
    "register_notifier",
]

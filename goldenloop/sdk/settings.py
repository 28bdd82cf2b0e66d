"""Where the SDK sends events: explicit argument → configure() → environment → default.

``configure()``/``install()`` remember the endpoint, API key and project they were
given, so ``feedback()`` and ``outcome()`` need no arguments beyond the event itself.
Without them the SDK reads ``GOLDENLOOP_ENDPOINT``, ``GOLDENLOOP_API_KEY`` and
``GOLDENLOOP_PROJECT``.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_ENDPOINT = "http://127.0.0.1:4318"
ENDPOINT_ENV = "GOLDENLOOP_ENDPOINT"
API_KEY_ENV = "GOLDENLOOP_API_KEY"
PROJECT_ENV = "GOLDENLOOP_PROJECT"


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """Base URL of the goldenloop server, the Bearer key and the project."""

    endpoint: str
    api_key: str | None = None
    project: str | None = None


_lock = threading.Lock()
_current: ClientSettings | None = None


def normalize_endpoint(endpoint: str) -> str:
    """``http://host:4318`` from any of ``http://host:4318/``, ``…/v1/traces``."""
    url = endpoint.strip().rstrip("/")
    url = url.removesuffix("/v1/traces").rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(
            f"goldenloop endpoint must be an http(s) URL like {DEFAULT_ENDPOINT}, got {endpoint!r}"
        )
    return url


def remember(settings: ClientSettings) -> None:
    """Make ``settings`` the defaults for later feedback()/outcome() calls."""
    global _current
    with _lock:
        _current = settings


def resolve(
    endpoint: str | None = None, api_key: str | None = None, project: str | None = None
) -> ClientSettings:
    """The settings one call should use: its own arguments, then the remembered ones,
    then the environment, then the default endpoint."""
    with _lock:
        current = _current
    env_endpoint = os.environ.get(ENDPOINT_ENV) or None
    env_key = os.environ.get(API_KEY_ENV) or None
    env_project = os.environ.get(PROJECT_ENV) or None
    return ClientSettings(
        endpoint=normalize_endpoint(
            endpoint or (current.endpoint if current else None) or env_endpoint or DEFAULT_ENDPOINT
        ),
        api_key=api_key or (current.api_key if current else None) or env_key,
        project=project or (current.project if current else None) or env_project,
    )

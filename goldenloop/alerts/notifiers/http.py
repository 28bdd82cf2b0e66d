"""POSTing JSON with retries: exponential backoff on 429, 5xx and connection errors
(``Retry-After`` honoured, capped), no retry on other 4xx (a 400 will not get better).
The sleep function is injectable so tests never wait. httpx is imported on the first
post, so a server that never notifies does not load it."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx


class DeliveryError(RuntimeError):
    """A notification could not be delivered; says why, after how many attempts."""

    def __init__(self, message: str, *, status: int | None = None, attempts: int = 1) -> None:
        super().__init__(message)
        self.status = status
        self.attempts = attempts


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    initial_backoff: float = 0.5
    max_backoff: float = 30.0
    timeout: float = 10.0

    def backoff(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        delay: float = self.initial_backoff * (2.0 ** (attempt - 1))
        if retry_after:
            try:
                delay = max(delay, float(retry_after))
            except ValueError:
                pass
        return min(delay, self.max_backoff)


def retryable(status: int) -> bool:
    return status == 429 or status >= 500


@dataclass
class RetryingHttp:
    """What a notifier posts through; counts attempts for the delivery record."""

    policy: RetryPolicy = field(default_factory=RetryPolicy)
    sleep: Callable[[float], object] = time.sleep
    transport: httpx.BaseTransport | None = None
    #: Checked before every attempt: a shutting-down server gives up instead of retrying.
    cancelled: Callable[[], bool] = lambda: False
    attempts: int = 0
    last_status: int | None = None

    def post_json(
        self, url: str, body: Any, headers: Mapping[str, str] | None = None
    ) -> httpx.Response:
        import httpx

        policy = self.policy
        sent_headers = {"User-Agent": "goldenloop-alerts", **(headers or {})}
        with httpx.Client(timeout=policy.timeout, transport=self.transport) as client:
            for attempt in range(1, policy.max_attempts + 1):
                if self.cancelled():
                    raise DeliveryError(
                        "cancelled: shutting down before delivery", attempts=self.attempts
                    )
                self.attempts += 1
                try:
                    response = client.post(url, json=body, headers=sent_headers)
                except httpx.HTTPError as exc:
                    self.last_status = None
                    if attempt == policy.max_attempts:
                        raise DeliveryError(
                            f"{type(exc).__name__}: {exc}", attempts=self.attempts
                        ) from None
                    self.sleep(policy.backoff(attempt))
                    continue
                self.last_status = response.status_code
                if response.status_code < 300:
                    return response
                detail = f"HTTP {response.status_code}: {response.text[:300]}"
                if not retryable(response.status_code) or attempt == policy.max_attempts:
                    raise DeliveryError(detail, status=response.status_code, attempts=self.attempts)
                self.sleep(policy.backoff(attempt, response.headers.get("retry-after")))
        raise DeliveryError("no attempt made", attempts=self.attempts)  # max_attempts < 1

"""The one exception the SDK raises when goldenloop cannot be reached or says no."""

from __future__ import annotations


class GoldenloopError(Exception):
    """goldenloop refused a request (4xx/5xx) or could not be reached.

    ``status_code`` is the HTTP status (None when no answer came back), ``error`` the
    server's own message, ``problems`` its per-field list (on 422) and ``retry_after``
    the seconds the server asked to wait (on 429/503).
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        error: str | None = None,
        problems: tuple[str, ...] = (),
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error = error
        self.problems = problems
        self.retry_after = retry_after

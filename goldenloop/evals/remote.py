"""Talk to a running goldenloop server: send a finished run, fetch a baseline run."""

from __future__ import annotations

import httpx

from goldenloop.evals.history import BaselineError, run_from_json
from goldenloop.evals.results import EvalRun


class RemoteError(RuntimeError):
    pass


def send_run(server: str, run: EvalRun, *, timeout: float = 30.0) -> str:
    """POST the run to ``SERVER/api/v1/eval-runs``; returns the stored run's URL."""
    url = server.rstrip("/") + "/api/v1/eval-runs"
    try:
        response = httpx.post(url, json=run.to_dict(), timeout=timeout)
    except httpx.HTTPError as exc:
        raise RemoteError(f"cannot send the run to {url}: {exc}") from None
    if response.status_code >= 400:
        raise RemoteError(f"{url} answered {response.status_code}: {response.text[:300]}")
    return server.rstrip("/") + f"/evals/{run.id}"


def fetch_run(server: str, run_id: str, *, timeout: float = 30.0) -> EvalRun:
    """A stored run (``latest`` works too) from ``SERVER/api/v1/eval-runs/{id}``."""
    url = server.rstrip("/") + f"/api/v1/eval-runs/{run_id}"
    try:
        response = httpx.get(url, timeout=timeout)
    except httpx.HTTPError as exc:
        raise BaselineError(f"cannot fetch baseline from {url}: {exc}") from None
    if response.status_code == 404:
        raise BaselineError(f"the server has no eval run {run_id!r}")
    if response.status_code >= 400:
        raise BaselineError(f"{url} answered {response.status_code}: {response.text[:300]}")
    return run_from_json(response.json())

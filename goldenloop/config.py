"""One typed Settings object, read once at start-up and passed in.

Every setting is a row in ``SETTINGS`` (name, type, default, help). Values come from,
in order: explicit overrides (CLI flags), the environment (``GOLDENLOOP_<NAME>``), a
``.env`` file in the working directory, then the default. Nothing here is global or
mutable: ``load_settings`` returns a frozen dataclass.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "GOLDENLOOP_"


class SettingsError(ValueError):
    """A setting has a value that cannot be used; the message names it."""


@dataclass(frozen=True)
class Setting:
    name: str
    type: type
    default: Any
    help: str
    secret: bool = False

    @property
    def env_var(self) -> str:
        return ENV_PREFIX + self.name.upper()


SETTINGS: tuple[Setting, ...] = (
    Setting("db", str, "goldenloop.duckdb", "Path of the embedded DuckDB file."),
    Setting(
        "database_url",
        str,
        "",
        "PostgreSQL URL (postgresql://…); when set it is used instead of the DuckDB file.",
        secret=True,
    ),
    Setting("host", str, "127.0.0.1", "Interface the server listens on."),
    Setting("port", int, 4318, "Port for OTLP/HTTP, the JSON API, /metrics and the web UI."),
    Setting(
        "public_url",
        str,
        "",
        "Base URL used in links that leave the server (alerts, reports); "
        "defaults to http://HOST:PORT.",
    ),
    Setting(
        "api_keys",
        str,
        "",
        "Ingest API keys as 'project:key,project2:key2'. When set, ingest requires "
        "'Authorization: Bearer KEY' and the key decides the project.",
        secret=True,
    ),
    Setting("default_project", str, "default", "Project for spans that name none."),
    Setting("max_request_bytes", int, 16 * 1024 * 1024, "Largest accepted request body."),
    Setting(
        "max_attribute_bytes",
        int,
        256 * 1024,
        "Largest accepted single attribute value; bigger values reject the request.",
    ),
    Setting(
        "max_queue_spans",
        int,
        50_000,
        "Spans waiting for commit before ingest answers 429 (bounds memory: ~3.5 KB each).",
    ),
    Setting("batch_max_spans", int, 10_000, "Most spans the writer commits in one transaction."),
    Setting(
        "ingest_workers",
        str,
        "auto",
        "Processes that decode and normalize large OTLP requests, so ingest uses every "
        "core: a number, 0 to decode in the server process, or auto (one per core "
        "beyond the first, at least 1).",
    ),
    Setting(
        "flag_interval_s",
        int,
        60,
        "Seconds between runs of the auto-flag rules over new spans; 0 turns the loop off "
        "(run `goldenloop flag` yourself).",
    ),
    Setting(
        "duckdb_memory_limit",
        str,
        "256MB",
        "DuckDB buffer memory limit (e.g. 512MB, 4GB); DuckDB spills to disk beyond it.",
    ),
    Setting(
        "batch_max_wait_ms",
        int,
        2,
        "How long the writer waits to fill a batch once it holds at least one request.",
    ),
    Setting(
        "max_clock_skew_hours",
        int,
        24,
        "Spans that start further than this in the future are rejected as absurd.",
    ),
    Setting(
        "oldest_span_days",
        int,
        3650,
        "Spans that start more than this many days ago are rejected as absurd.",
    ),
    Setting(
        "prices_file", str, "", "YAML/JSON file of per-model price overrides (USD per 1M tokens)."
    ),
    Setting("log_level", str, "info", "Server log level (debug, info, warning, error)."),
    Setting("slo_file", str, "", "YAML/JSON metrics config: SLOs, signal names, /metrics labels."),
)

_BY_NAME = {s.name: s for s in SETTINGS}


@dataclass(frozen=True)
class Settings:
    db: str = "goldenloop.duckdb"
    database_url: str = field(default="", repr=False)
    host: str = "127.0.0.1"
    port: int = 4318
    public_url: str = ""
    api_keys: str = field(default="", repr=False)
    default_project: str = "default"
    max_request_bytes: int = 16 * 1024 * 1024
    max_attribute_bytes: int = 256 * 1024
    max_queue_spans: int = 50_000
    batch_max_spans: int = 10_000
    ingest_workers: str = "auto"
    flag_interval_s: int = 60
    duckdb_memory_limit: str = "256MB"
    batch_max_wait_ms: int = 2
    max_clock_skew_hours: int = 24
    oldest_span_days: int = 3650
    prices_file: str = ""
    log_level: str = "info"
    slo_file: str = ""

    @property
    def base_url(self) -> str:
        return self.public_url.rstrip("/") or f"http://{self.host}:{self.port}"

    @property
    def decode_workers(self) -> int:
        """``ingest_workers`` resolved: the server process itself keeps one core busy
        with HTTP and the store, so ``auto`` gives the decode workers the others."""
        value = str(self.ingest_workers).strip().lower()
        if value == "auto":
            return max(1, (os.cpu_count() or 1) - 1)
        try:
            workers = int(value)
        except ValueError:
            workers = -1
        if workers < 0:
            raise SettingsError(
                f"GOLDENLOOP_INGEST_WORKERS: expected a number of processes (0 or more) "
                f"or 'auto', got {self.ingest_workers!r}"
            )
        return workers

    @property
    def uses_postgres(self) -> bool:
        return bool(self.database_url)

    def project_keys(self) -> dict[str, str]:
        """Map of API key → project, parsed from ``api_keys``."""
        keys: dict[str, str] = {}
        for item in filter(None, (part.strip() for part in self.api_keys.split(","))):
            project, sep, key = item.partition(":")
            if not sep or not project or not key:
                # Never echo the entry itself: without a ':' it may well be the bare key.
                shown = f"{project!r}…" if sep else "an entry without ':'"
                raise SettingsError(
                    f"api_keys: each entry must look like 'project:key', got {shown}"
                )
            if keys.get(key, project) != project:
                raise SettingsError(
                    f"api_keys: one key is given for both {keys[key]!r} and {project!r}; "
                    "a key must decide a single project"
                )
            keys[key] = project
        return keys

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def _read_dotenv(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        values[key.strip().removeprefix("export ").strip()] = value.strip().strip("'\"")
    return values


def _coerce(setting: Setting, raw: Any) -> Any:
    if setting.type is int and not isinstance(raw, int):
        try:
            return int(str(raw).replace("_", ""))
        except ValueError:
            raise SettingsError(
                f"{setting.env_var}: expected an integer, got {str(raw)!r}"
            ) from None
    if setting.type is str:
        return str(raw)
    return raw


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    dotenv: Path | None = Path(".env"),
) -> Settings:
    """Build Settings from overrides → environment → .env → defaults."""
    env = dict(os.environ if environ is None else environ)
    file_values = _read_dotenv(dotenv) if dotenv is not None else {}
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        raw: Any = setting.default
        if setting.env_var in file_values:
            raw = file_values[setting.env_var]
        if setting.env_var in env:
            raw = env[setting.env_var]
        if overrides and overrides.get(setting.name) is not None:
            raw = overrides[setting.name]
        values[setting.name] = _coerce(setting, raw)
    unknown = set(overrides or {}) - set(_BY_NAME)
    if unknown:
        raise SettingsError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    settings = Settings(**values)
    settings.project_keys()  # validate early so a bad key list fails at start-up
    settings.decode_workers  # noqa: B018 - same for a bad worker count
    for name in (
        "port",
        "max_request_bytes",
        "max_attribute_bytes",
        "max_queue_spans",
        "batch_max_spans",
        "oldest_span_days",
    ):
        if getattr(settings, name) <= 0:
            raise SettingsError(f"{_BY_NAME[name].env_var}: must be positive")
    for name in ("batch_max_wait_ms", "max_clock_skew_hours"):
        if getattr(settings, name) < 0:
            raise SettingsError(f"{_BY_NAME[name].env_var}: must not be negative")
    return settings

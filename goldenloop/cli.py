"""The ``goldenloop`` command: a thin shell over the library."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from goldenloop.config import Settings, SettingsError, load_settings
from goldenloop.store import Store, StoreError, open_store

console = Console(stderr=True)


def _settings(**overrides: Any) -> Settings:
    try:
        return load_settings(overrides)
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None


def _open(settings: Settings) -> Store:
    try:
        return open_store(settings)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None


def store_options(fn: Any) -> Any:
    fn = click.option(
        "--database-url",
        envvar="GOLDENLOOP_DATABASE_URL",
        help="PostgreSQL URL; use instead of the DuckDB file.",
    )(fn)
    fn = click.option(
        "--db",
        envvar="GOLDENLOOP_DB",
        type=click.Path(dir_okay=False),
        help="DuckDB file (default goldenloop.duckdb).",
    )(fn)
    return fn


@contextmanager
def span_progress(label: str, total: int | None) -> Iterator[Any]:
    with Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("spans"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task(label, total=total)
        yield lambda n: progress.advance(task, n)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="goldenloop")
def main() -> None:
    """goldenloop: trace production, flag anomalies, triage, and turn failures into
    golden eval cases. Every command reads settings from GOLDENLOOP_* environment
    variables or a .env file; flags override them."""


def _serve(settings: Settings, store: Store) -> None:
    import uvicorn

    from goldenloop.web.app import create_app

    app = create_app(settings, store)
    console.print(
        f"goldenloop serving {store.dialect} store [bold]{store.location}[/] on "
        f"[bold]{settings.base_url}[/]  (OTLP/HTTP: POST {settings.base_url}/v1/traces)"
    )
    try:
        uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level)
    finally:
        store.close()


@main.command()
@store_options
@click.option("--host", help="Interface to listen on (default 127.0.0.1).")
@click.option("--port", type=int, help="Port (default 4318, the OTLP/HTTP default).")
def serve(db: str | None, database_url: str | None, host: str | None, port: int | None) -> None:
    """Run the server: OTLP ingest, JSON API, /metrics and the web UI on one port."""
    settings = _settings(db=db, database_url=database_url, host=host, port=port)
    _serve(settings, _open(settings))


def _sim_config(seed: int, days: float, sessions_per_day: int, end: datetime | None) -> Any:
    from goldenloop.sim import SimConfig, default_scenarios

    end = end or datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(days=days)
    return SimConfig(
        seed=seed,
        start=start,
        days=days,
        sessions_per_day=sessions_per_day,
        scenarios=default_scenarios(start),
    )


@main.command()
@store_options
@click.option("--seed", type=int, default=7, show_default=True, help="Seed: same seed, same traffic.")
@click.option("--days", type=float, default=7, show_default=True, help="Days of traffic, ending now.")
@click.option("--sessions-per-day", type=int, default=3000, show_default=True)
@click.option("--url", help="Send over OTLP/HTTP to a running server instead of writing the store.")
@click.option("--api-key", envvar="GOLDENLOOP_API_KEY", help="Bearer key for --url.")
@click.option("--manifest", type=click.Path(dir_okay=False), help="Write the ground-truth manifest (JSON).")
def simulate(
    db: str | None,
    database_url: str | None,
    seed: int,
    days: float,
    sessions_per_day: int,
    url: str | None,
    api_key: str | None,
    manifest: str | None,
) -> None:
    """Generate realistic production traffic (several apps, injected incidents).

    Writes straight into the store (fast bulk path) or, with --url, sends OTLP to a
    running server exactly as an instrumented app would."""
    from goldenloop import sim

    config = _sim_config(seed, days, sessions_per_day, None)
    total = sim.estimate_spans(config)
    with span_progress("simulating", total) as advance:
        if url:
            result = sim.send_over_otlp(url, config, api_key=api_key, progress=advance)
        else:
            settings = _settings(db=db, database_url=database_url)
            store = _open(settings)
            try:
                result = sim.write_to_store(store, config, progress=advance)
            finally:
                store.close()
    if manifest:
        result.write_json(manifest)
    console.print(result.summary())


@main.command()
@click.option(
    "--db",
    type=click.Path(dir_okay=False),
    default="goldenloop-demo.duckdb",
    show_default=True,
    help="Demo DuckDB file (recreated each run).",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=4318, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--sessions-per-day", type=int, default=2000, show_default=True)
@click.option("--no-serve", is_flag=True, help="Fill the demo store and exit without serving.")
def demo(db: str, host: str, port: int, seed: int, sessions_per_day: int, no_serve: bool) -> None:
    """Create an embedded store with a week of simulated traffic and serve it."""
    from pathlib import Path

    from goldenloop import sim

    for suffix in ("", ".wal"):
        Path(db + suffix).unlink(missing_ok=True)
    settings = _settings(db=db, database_url="", host=host, port=port)
    store = _open(settings)
    config = _sim_config(seed, 7, sessions_per_day, None)
    with span_progress("simulating a week", sim.estimate_spans(config)) as advance:
        result = sim.write_to_store(store, config, progress=advance)
    console.print(result.summary())
    if no_serve:
        store.close()
        return
    _serve(settings, store)

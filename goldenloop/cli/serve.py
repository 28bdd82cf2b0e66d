"""`serve`, `demo` and `simulate`: run the server and fill stores with traffic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import click

from goldenloop.cli._common import (
    console,
    load_cli_settings,
    open_cli_store,
    progress_bar,
    store_options,
)
from goldenloop.config import Settings
from goldenloop.store import Store

if TYPE_CHECKING:  # the simulator (and httpx with it) stays out of a plain `serve`
    from goldenloop.sim import SimConfig
    from goldenloop.sim.config import Engine
    from goldenloop.sim.manifest import SimManifest


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


@click.command()
@store_options
@click.option("--host", help="Interface to listen on (default 127.0.0.1).")
@click.option("--port", type=int, help="Port (default 4318, the OTLP/HTTP default).")
@click.option(
    "--slo-file",
    type=click.Path(dir_okay=False, exists=True),
    help="Metrics config (SLOs, signal names, /metrics labels); default GOLDENLOOP_SLO_FILE.",
)
def serve(
    db: str | None,
    database_url: str | None,
    host: str | None,
    port: int | None,
    slo_file: str | None,
) -> None:
    """Run the server: OTLP ingest, JSON API, /metrics and the web UI on one port."""
    settings = load_cli_settings(
        db=db, database_url=database_url, host=host, port=port, slo_file=slo_file
    )
    _check_metrics_config(settings)
    _serve(settings, open_cli_store(settings))


def _check_metrics_config(settings: Settings) -> None:
    """Fail at start-up, naming the file and key, rather than on the first page view."""
    from goldenloop.metrics.config import MetricsConfigError, load_metrics_config

    try:
        load_metrics_config(settings.slo_file or None)
    except MetricsConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _prepare_metrics(store: Store) -> None:
    """Build the per-turn metric tables now, so the first page after a bulk load is fast."""
    from goldenloop.metrics.facts import refresh_facts

    with console.status("building metric tables"):
        refresh_facts(store)


def _summary(manifest: SimManifest) -> str:
    scenarios = ", ".join(
        f"{name} ({len(truth.sessions)} sessions)" for name, truth in manifest.scenarios.items()
    )
    return (
        f"simulated {manifest.sessions:,} sessions, {manifest.turns:,} turns, "
        f"{manifest.spans:,} spans, {manifest.feedback:,} feedback and "
        f"{manifest.outcomes:,} outcome events; injected: {scenarios or 'nothing'}"
    )


_workers_option = click.option(
    "--workers",
    type=click.IntRange(min=0),
    help="Processes that generate traffic for the bulk path; 0 = in this process. "
    "Default: one per core (at most 4) for runs over 50,000 spans.",
)


_engine_option = click.option(
    "--engine",
    type=click.Choice(["sessions", "columnar"]),
    default="sessions",
    show_default=True,
    help="Traffic generator: 'sessions' (one session at a time) or 'columnar' (whole "
    "batches at once with numpy, ~3x cheaper per span; same traffic model, different draws).",
)


def _sim_config(
    seed: int,
    days: float,
    sessions_per_day: int,
    end: datetime | None,
    engine: Engine = "sessions",
) -> SimConfig:
    from goldenloop.sim import SimConfig, default_scenarios

    end = end or datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(days=days)
    return SimConfig(
        seed=seed,
        start=start,
        days=days,
        sessions_per_day=sessions_per_day,
        scenarios=default_scenarios(start, days),
        engine=engine,
    )


@click.command()
@store_options
@click.option(
    "--seed", type=int, default=7, show_default=True, help="Seed: same seed, same traffic."
)
@click.option(
    "--days", type=float, default=7, show_default=True, help="Days of traffic, ending now."
)
@click.option("--sessions-per-day", type=int, default=3000, show_default=True)
@click.option("--url", help="Send over OTLP/HTTP to a running server instead of writing the store.")
@click.option("--api-key", envvar="GOLDENLOOP_API_KEY", help="Bearer key for --url.")
@click.option(
    "--manifest", type=click.Path(dir_okay=False), help="Write the ground-truth manifest (JSON)."
)
@_workers_option
@_engine_option
def simulate(
    db: str | None,
    database_url: str | None,
    seed: int,
    days: float,
    sessions_per_day: int,
    url: str | None,
    api_key: str | None,
    manifest: str | None,
    workers: int | None,
    engine: Engine,
) -> None:
    """Generate realistic production traffic (several apps, injected incidents).

    Writes straight into the store (fast bulk path) or, with --url, sends OTLP to a
    running server exactly as an instrumented app would."""
    from goldenloop import sim

    config = _sim_config(seed, days, sessions_per_day, None, engine)
    with progress_bar("simulating", None) as advance:
        if url:
            result = sim.send_over_otlp(url, config, api_key=api_key, progress=advance)
        else:
            settings = load_cli_settings(db=db, database_url=database_url)
            store = open_cli_store(settings)
            try:
                result = sim.write_to_store(store, config, progress=advance, workers=workers)
                _prepare_metrics(store)
            finally:
                store.close()
    if manifest:
        Path(manifest).write_text(result.to_json(indent=2), encoding="utf-8")
    console.print(_summary(result))


@click.command()
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
@_workers_option
def demo(
    db: str,
    host: str,
    port: int,
    seed: int,
    sessions_per_day: int,
    no_serve: bool,
    workers: int | None,
) -> None:
    """Create an embedded store with a week of simulated traffic and serve it."""
    from goldenloop import sim

    for suffix in ("", ".wal"):
        Path(db + suffix).unlink(missing_ok=True)
    settings = load_cli_settings(db=db, database_url="", host=host, port=port)
    store = open_cli_store(settings)
    config = _sim_config(seed, 7, sessions_per_day, None)
    with progress_bar("simulating a week", None) as advance:
        result = sim.write_to_store(store, config, progress=advance, workers=workers)
    _prepare_metrics(store)
    console.print(_summary(result))
    if no_serve:
        store.close()
        return
    _serve(settings, store)

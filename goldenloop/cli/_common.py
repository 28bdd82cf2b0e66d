"""Helpers every command shares: settings, opening the store, progress, JSON output."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from goldenloop.config import Settings, SettingsError, load_settings
from goldenloop.store import Store, StoreError, open_store

console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def load_cli_settings(**overrides: Any) -> Settings:
    try:
        return load_settings(overrides)
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None


def open_cli_store(settings: Settings) -> Store:
    try:
        return open_store(settings)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None


@contextmanager
def cli_store(db: str | None, database_url: str | None) -> Iterator[Store]:
    """Open the store named by --db/--database-url (or settings) and close it after."""
    store = open_cli_store(load_cli_settings(db=db, database_url=database_url))
    try:
        yield store
    finally:
        store.close()


def store_options(fn: F) -> F:
    """Add --db and --database-url to a command."""
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


def json_option(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(
        fn
    )


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


@contextmanager
def progress_bar(
    label: str, total: int | None, unit: str = "spans"
) -> Iterator[Callable[[int], None]]:
    """A rich progress bar; yields ``advance(n)``."""
    with Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task(label, total=total)
        yield lambda n: progress.advance(task, n)

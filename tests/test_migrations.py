"""Schema migrations and opening stores: idempotence, persistence and clear errors."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import span_batch

from goldenloop.store import migrations
from goldenloop.store.base import Store, StoreError
from goldenloop.store.duckdb import DuckDBStore


def test_migrate_is_idempotent_and_reaches_latest_version(store: Store) -> None:
    # the fixture already migrated once
    assert store.migrate() == []
    assert store.schema_version() == migrations.LATEST_VERSION
    rows = store.fetch("SELECT version FROM schema_migrations ORDER BY version")
    assert [r[0] for r in rows] == [m.version for m in migrations.MIGRATIONS]


def test_migrate_on_empty_database_applies_every_migration(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "fresh.duckdb")
    try:
        assert store.schema_version() == 0
        assert store.migrate() == [m.version for m in migrations.MIGRATIONS]
        assert store.schema_version() == migrations.LATEST_VERSION
    finally:
        store.close()


@pytest.mark.postgres
def test_migrate_on_empty_postgres_database_applies_every_migration(pg_url: str) -> None:
    from goldenloop.store.postgres import PostgresStore

    store = PostgresStore(pg_url)
    try:
        assert store.schema_version() == 0
        assert store.migrate() == [m.version for m in migrations.MIGRATIONS]
        assert store.migrate() == []
        assert store.schema_version() == migrations.LATEST_VERSION
    finally:
        store.close()


def test_data_survives_reopening_the_duckdb_file(tmp_path: Path) -> None:
    path = tmp_path / "persist.duckdb"
    store = DuckDBStore(path)
    try:
        store.migrate()
        store.insert_spans(span_batch({"span_id": "a"}, {"span_id": "b"}))
    finally:
        store.close()

    reopened = DuckDBStore(path)
    try:
        assert reopened.migrate() == []
        assert reopened.schema_version() == migrations.LATEST_VERSION
        assert reopened.count_spans() == 2
        assert reopened.insert_spans(span_batch({"span_id": "a"})) == 0
    finally:
        reopened.close()


@pytest.mark.postgres
def test_data_survives_reconnecting_to_postgres(pg_url: str) -> None:
    from goldenloop.store.postgres import PostgresStore

    store = PostgresStore(pg_url)
    try:
        store.migrate()
        store.insert_spans(span_batch({"span_id": "a"}))
    finally:
        store.close()

    again = PostgresStore(pg_url)
    try:
        assert again.migrate() == []
        assert again.count_spans() == 1
    finally:
        again.close()


def test_unreachable_postgres_raises_store_error_quickly_without_password() -> None:
    from goldenloop.store.postgres import PostgresStore

    # Port 1 on loopback: nothing listens, the connection is refused at once.
    url = "postgresql://alice:hunter2-secret@127.0.0.1:1/goldenloop"
    started = time.monotonic()
    with pytest.raises(StoreError) as info:
        PostgresStore(url)
    elapsed = time.monotonic() - started

    message = str(info.value)
    assert elapsed < 5
    assert "hunter2-secret" not in message
    assert "127.0.0.1:1/goldenloop" in message


@pytest.mark.postgres
def test_postgres_location_masks_the_password(pg_url: str) -> None:
    from goldenloop.store.postgres import PostgresStore

    # Trust authentication accepts any password, so a real connection can carry one.
    url = pg_url.replace("postgres@", "postgres:hunter2-secret@", 1)
    store = PostgresStore(url)
    try:
        assert "hunter2-secret" not in store.location
        assert store.location == pg_url.replace("postgres@", "postgres:***@", 1)
    finally:
        store.close()


def test_duckdb_file_held_by_another_process_raises_store_error(tmp_path: Path) -> None:
    path = tmp_path / "held.duckdb"
    holder_code = (
        "import sys, time, duckdb\n"
        "conn = duckdb.connect(sys.argv[1])\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", holder_code, str(path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "ready"

        with pytest.raises(StoreError) as info:
            DuckDBStore(path)

        message = str(info.value)
        assert "goldenloop serve" in message
        assert str(path) in message
        assert str(holder.pid) in message
    finally:
        holder.kill()
        holder.wait()
        assert holder.stdout is not None
        holder.stdout.close()

    # once the holder is gone the file opens normally
    store = DuckDBStore(path)
    store.close()


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://u:pw@db:5432/x", "postgresql://u:***@db:5432/x"),
        ("postgresql://u@db/x", "postgresql://u@db/x"),
        (
            "postgresql://db/x?sslmode=require&password=pw",
            "postgresql://db/x?sslmode=require&password=***",
        ),
        ("host=db password=pw dbname=x", "host=db password=*** dbname=x"),
    ],
)
def test_location_masks_password_in_every_url_form(url: str, masked: str) -> None:
    from goldenloop.store.postgres import mask_password

    assert mask_password(url) == masked


def test_migrate_applies_lower_versions_added_after_higher_ones(tmp_path: Path) -> None:
    """Versions are reserved per feature: a database at 20+ may still lack 10-13."""
    store = DuckDBStore(tmp_path / "gap.duckdb")
    try:
        everything = [m.version for m in migrations.MIGRATIONS]
        core = [v for v in everything if v < 10]
        later = [v for v in everything if v >= 20]
        store.migrate()
        for version in everything:
            if version not in core and version not in later:
                store.execute("DELETE FROM schema_migrations WHERE version = ?", (version,))
        missing = [v for v in everything if v not in core and v not in later]
        # Drop what those migrations created so applying them again is possible.
        for table in ("metric_turns", "metric_sessions", "metric_state", "slos"):
            store.execute(f"DROP TABLE IF EXISTS {table}")
        assert store.migrate() == missing
        assert store.applied_versions() == set(everything)
    finally:
        store.close()

"""PostgreSQL store for teams that already run a database server.

Connections come from a small ``psycopg_pool.ConnectionPool`` in autocommit mode;
statements that must commit together run inside ``conn.transaction()``. Shared SQL is
written with ``?`` placeholders and translated here to psycopg's ``%s``.

Spans are bulk-loaded with binary ``COPY`` into a temporary table (timestamps travel
as epoch microseconds and are converted by the server), then moved into ``spans`` with
``INSERT ... SELECT DISTINCT ON (trace_id, span_id) ... ON CONFLICT DO NOTHING``, so
duplicates inside a batch and retried batches are stored once.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
import pyarrow as pa
from psycopg import sql as pgsql
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout

from goldenloop.ingest.arrow import arrow_to_span_batch
from goldenloop.model import SPAN_COLUMN_NAMES, SPAN_COLUMNS, ColumnType, SpanBatch
from goldenloop.store.base import Dialect, StoreError
from goldenloop.store.sql import SqlStore

#: Seconds to wait for the first connection before giving up with a StoreError.
CONNECT_TIMEOUT = 5

_COPY_TYPES: dict[ColumnType, str] = {
    "text": "text",
    "bigint": "int8",
    "double": "float8",
    "timestamp": "int8",  # epoch microseconds in a SpanBatch; converted in SQL
    "json": "text",
}
_STAGE_SQL_TYPES: dict[ColumnType, str] = {
    "text": "TEXT",
    "bigint": "BIGINT",
    "double": "DOUBLE PRECISION",
    "timestamp": "BIGINT",
    "json": "TEXT",
}
_STAGE_TABLE = "_goldenloop_incoming_spans"
_CREATE_STAGE = (
    f"CREATE TEMP TABLE {_STAGE_TABLE} ("
    + ", ".join(f"{name} {_STAGE_SQL_TYPES[kind]}" for name, kind in SPAN_COLUMNS)
    + ") ON COMMIT DROP"
)
_COPY_STAGE = f"COPY {_STAGE_TABLE} ({', '.join(SPAN_COLUMN_NAMES)}) FROM STDIN (FORMAT BINARY)"


def _stage_expr(name: str, kind: ColumnType) -> str:
    if kind == "timestamp":
        # Exact: microsecond counts below 2**53 survive the float8 multiplication.
        return f"TIMESTAMP '1970-01-01' + {name} * INTERVAL '1 microsecond'"
    return name


_MOVE_STAGE = (
    f"INSERT INTO spans ({', '.join(SPAN_COLUMN_NAMES)}) "
    f"SELECT {', '.join(_stage_expr(n, k) for n, k in SPAN_COLUMNS)} "
    f"FROM (SELECT DISTINCT ON (trace_id, span_id) * FROM {_STAGE_TABLE}) AS b "
    "ON CONFLICT (trace_id, span_id) DO NOTHING"
)


@functools.lru_cache(maxsize=1024)
def translate_placeholders(query: str) -> str:
    """Turn DuckDB-style ``?`` placeholders into psycopg ``%s``.

    Literal ``%`` becomes ``%%``. A ``?`` inside a quoted string, quoted identifier or
    comment is left alone.
    """
    out: list[str] = []
    i, n = 0, len(query)
    while i < n:
        ch = query[i]
        if ch in ("'", '"'):
            end = i + 1
            while end < n:
                if query[end] == ch:
                    if end + 1 < n and query[end + 1] == ch:  # doubled quote escapes
                        end += 2
                        continue
                    break
                end += 1
            out.append(query[i : end + 1].replace("%", "%%"))
            i = end + 1
        elif query.startswith("--", i):
            end = query.find("\n", i)
            end = n if end < 0 else end
            out.append(query[i:end].replace("%", "%%"))
            i = end
        elif query.startswith("/*", i):
            end = query.find("*/", i + 2)
            end = n if end < 0 else end + 2
            out.append(query[i:end].replace("%", "%%"))
            i = end
        elif ch == "?":
            out.append("%s")
            i += 1
        elif ch == "%":
            out.append("%%")
            i += 1
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def mask_password(url: str) -> str:
    """The URL with any password replaced by ``***`` (safe for logs and messages)."""
    if "://" not in url:  # key=value conninfo string
        return re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", url)
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hosts = netloc.rpartition("@")
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        netloc = f"{userinfo}@{hosts}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "***" if k == "password" else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _describe_target(params: dict[str, Any]) -> str:
    host = params.get("host") or params.get("hostaddr") or "localhost"
    port = params.get("port") or "5432"
    dbname = params.get("dbname") or params.get("user") or "?"
    user = params.get("user")
    who = f" as user {user!r}" if user else ""
    return f"{host}:{port}/{dbname}{who}"


def _scrub(message: str, secret: str | None) -> str:
    message = " ".join(message.split())
    return message.replace(secret, "***") if secret else message


def _configure(conn: psycopg.Connection[Any]) -> None:
    conn.execute("SET TIME ZONE 'UTC'")


class PostgresStore(SqlStore):
    dialect: Dialect = "postgres"

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 8) -> None:
        self.location = mask_password(url)
        try:
            params = conninfo_to_dict(url)
        except psycopg.ProgrammingError as exc:
            raise StoreError(
                f"invalid PostgreSQL URL {self.location}: {_scrub(str(exc), None)}"
            ) from None
        password = params.get("password")
        secret = str(password) if password else None
        target = _describe_target(params)
        kwargs: dict[str, Any] = {"autocommit": True}
        if "connect_timeout" not in params:
            kwargs["connect_timeout"] = CONNECT_TIMEOUT

        # Probe once so a wrong URL fails fast with libpq's reason, not a pool timeout.
        try:
            psycopg.connect(url, **kwargs).close()
        except psycopg.Error as exc:
            reason = _scrub(str(exc), secret)
            raise StoreError(
                f"cannot connect to PostgreSQL at {target}: {reason}. "
                "Check GOLDENLOOP_DATABASE_URL and that the server is running."
            ) from None

        self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            url,
            kwargs=kwargs,
            min_size=min_size,
            max_size=max_size,
            open=False,
            configure=_configure,
            name="goldenloop",
            timeout=30.0,
        )
        try:
            self._pool.open(wait=True, timeout=float(CONNECT_TIMEOUT))
        except PoolTimeout:
            self._pool.close()
            raise StoreError(
                f"PostgreSQL at {target} accepted a test connection but the pool could not "
                f"connect within {CONNECT_TIMEOUT}s; check the server's max_connections."
            ) from None

    def close(self) -> None:
        self._pool.close()

    # -- SqlStore hooks ------------------------------------------------------------------
    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._pool.connection() as conn, conn.cursor() as cur:
            cur.execute(translate_placeholders(sql), list(params))
            if cur.description is None:
                return []
            return cur.fetchall()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        with self._pool.connection() as conn:
            conn.execute(translate_placeholders(sql), list(params))

    def _run_in_transaction(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            for sql, params in statements:
                cur.execute(translate_placeholders(sql), list(params))

    def _insert_rows(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> int:
        if not rows:
            return 0
        statement = pgsql.SQL(
            "INSERT INTO {table} ({columns}) VALUES ({marks}) ON CONFLICT DO NOTHING"
        ).format(
            table=pgsql.Identifier(table),
            columns=pgsql.SQL(", ").join(pgsql.Identifier(c) for c in columns),
            marks=pgsql.SQL(", ").join(pgsql.Placeholder() for _ in columns),
        )
        with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            cur.executemany(statement, [list(r) for r in rows])
            return max(cur.rowcount, 0)

    def insert_spans(self, batch: SpanBatch, *, dedupe: bool = True) -> int:
        """Store a batch in one transaction; return how many spans were new.

        PostgreSQL enforces the (trace_id, span_id) primary key, so the batch is always
        deduplicated (``dedupe=False`` cannot store duplicates here either).
        """
        if not len(batch):
            return 0
        columns = [batch.columns[name] for name in SPAN_COLUMN_NAMES]
        with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            cur.execute(_CREATE_STAGE)
            with cur.copy(_COPY_STAGE) as copy:
                copy.set_types([_COPY_TYPES[kind] for _, kind in SPAN_COLUMNS])
                for row in zip(*columns, strict=True):
                    copy.write_row(row)
            cur.execute(_MOVE_STAGE)
            return max(cur.rowcount, 0)

    def insert_span_table(self, table: pa.Table, *, dedupe: bool = True) -> int:
        return self.insert_spans(arrow_to_span_batch(table), dedupe=dedupe)

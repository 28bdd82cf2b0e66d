"""SQL snippets that differ between DuckDB and PostgreSQL, and small write helpers.

Everything else the flag engine runs is plain SQL both backends accept. Helpers here
return SQL text for one dialect; values still travel as ``?`` parameters.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from goldenloop.store.base import Dialect, Store


def utcnow() -> datetime:
    """Naive UTC now, the way the store keeps timestamps."""
    return datetime.now(UTC).replace(tzinfo=None)


def naive(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value


def hash_bucket(dialect: Dialect, expr: str, buckets: int = 10_000) -> str:
    """A deterministic integer in ``[0, buckets)`` from ``md5(expr)``; the same value on
    both backends, so sampling picks the same sessions everywhere."""
    if dialect == "duckdb":
        number = f"CAST(('0x' || substr(md5({expr}), 1, 7)) AS BIGINT)"
    else:
        number = f"CAST(('x' || lpad(substr(md5({expr}), 1, 7), 8, '0')) AS bit(32))::int"
    return f"({number} % {buckets})"


def fmt_number(dialect: Dialect, expr: str, digits: int) -> str:
    """``expr`` with exactly ``digits`` decimals, as text (for reasons); the same text
    on both backends."""
    if dialect == "duckdb":
        return f"printf('%.{digits}f', round(CAST({expr} AS DOUBLE), {digits}))"
    decimals = "." + "0" * digits if digits else ""
    return f"to_char(CAST({expr} AS numeric), 'FM999999999990{decimals}')"


def json_valid(dialect: Dialect, expr: str) -> str:
    if dialect == "duckdb":
        return f"json_valid({expr})"
    return f"goldenloop_json_valid({expr})"


def regex_match(dialect: Dialect, expr: str, *, ignore_case: bool = True) -> str:
    """``expr`` matches the regex given as the next ``?`` parameter."""
    if dialect == "duckdb":
        flags = ", 'i'" if ignore_case else ""
        return f"regexp_matches({expr}, ?{flags})"
    return f"({expr} {'~*' if ignore_case else '~'} ?)"


#: Sentence punctuation dropped from the end of a message before splitting into words.
_END_PUNCTUATION = "?.!。？！ "


def token_set(dialect: Dialect, expr: str) -> str:
    """The distinct lower-cased words of ``expr``: split on spaces, after dropping the
    message's final punctuation. Plain string functions only (a regex split costs about
    twice as much on millions of messages); the same words on both backends."""
    text = f"rtrim(trim(replace(lower({expr}), chr(10), ' ')), '{_END_PUNCTUATION}')"
    if dialect == "duckdb":
        return f"list_distinct(string_split({text}, ' '))"
    return f"ARRAY(SELECT DISTINCT w FROM unnest(string_to_array({text}, ' ')) AS w)"


def intersection_size(dialect: Dialect, a: str, b: str) -> str:
    """|A ∩ B| of two token sets (lists/arrays of distinct elements)."""
    if dialect == "duckdb":
        # Faster than list_intersect on short lists (no hash set per row).
        return f"len(list_filter({a}, lambda tok: list_contains({b}, tok)))"
    return f"cardinality(ARRAY(SELECT unnest({a}) INTERSECT SELECT unnest({b})))"


def glob_to_like(pattern: str) -> str:
    """``*billing*`` → ``%billing%`` (``_`` and ``%`` in the pattern are escaped)."""
    out = []
    for ch in pattern:
        if ch in "%_\\":
            out.append("\\" + ch)
        elif ch == "*":
            out.append("%")
        elif ch == "?":
            out.append("_")
        else:
            out.append(ch)
    return "".join(out)


def table_exists(store: Store, table: str) -> bool:
    rows = store.fetch(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", (table,)
    )
    return bool(rows and rows[0][0])


def table_columns(store: Store, table: str) -> set[str]:
    rows = store.fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ?", (table,)
    )
    return {str(r[0]) for r in rows}


def insert_rows(
    store: Store,
    table: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    on_conflict: str = "DO NOTHING",
    chunk: int = 400,
) -> None:
    """Insert rows with multi-row ``VALUES`` statements (far faster than executemany on
    DuckDB for the few thousand rows the queue writes)."""
    names = ", ".join(columns)
    one = "(" + ", ".join("?" for _ in columns) + ")"
    batch: list[Sequence[Any]] = []

    def flush() -> None:
        if not batch:
            return
        sql = (
            f"INSERT INTO {table} ({names}) VALUES "
            + ", ".join(one for _ in batch)
            + f" ON CONFLICT {on_conflict}"
        )
        store.execute(sql, [value for row in batch for value in row])
        batch.clear()

    for row in rows:
        batch.append(row)
        if len(batch) >= chunk:
            flush()
    flush()


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)


def json_object(dialect: Dialect, pairs: dict[str, str]) -> str:
    """SQL building a JSON object (as text) from ``{key: sql expression}``."""
    args = ", ".join(f"'{key}', {expr}" for key, expr in pairs.items())
    if dialect == "duckdb":
        return f"CAST(json_object({args}) AS VARCHAR)"
    return f"CAST(json_build_object({args}) AS TEXT)"


def is_root(alias: str = "") -> str:
    p = alias + "." if alias else ""
    return f"({p}parent_id IS NULL OR {p}parent_id = '')"


def set_size(dialect: Dialect, expr: str) -> str:
    return f"len({expr})" if dialect == "duckdb" else f"cardinality({expr})"


def hash_key(dialect: Dialect, expr: str) -> str:
    """An integer hash of ``expr`` for sorting: ordering by it (then by ``expr`` itself
    to break ties) groups equal values far faster than sorting the text."""
    return f"hash({expr})" if dialect == "duckdb" else f"hashtext({expr})"


def latest(dialect: Dialect, expr: str, order: str) -> str:
    """Aggregate: ``expr`` of the row with the greatest ``order`` in the group."""
    if dialect == "duckdb":
        return f"arg_max({expr}, {order})"
    return f"(array_agg({expr} ORDER BY {order} DESC))[1]"

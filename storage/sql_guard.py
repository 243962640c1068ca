"""What a read-only SQL session may run, decided after parsing (never by a statement's first word).

A read-only session runs only SELECT statements (DESCRIBE, SHOW, SUMMARIZE, PRAGMA table_info, VALUES and
CTEs parse as SELECT) and `EXPLAIN [ANALYZE]` of one. Each SELECT is walked as DuckDB parsed it
(`json_serialize_sql`), so a call hidden anywhere in it is seen:

- `__lance_*` functions (compact, clean up, truncate, optimize index, exec, ...) are refused: they change
  Lance data from a plain SELECT;
- `lance_vector_search` / `lance_fts` / `lance_hybrid_search` and `FROM '<path>'` read only allowed places
  (the lance extension does its own I/O, outside DuckDB's `allowed_directories`);
- `query('<sql>')` is checked like a statement of its own;
- table functions come from an allow-list (readers, generators, metadata): `enable_profiling`,
  `enable_logging`, `json_execute_serialized_sql`, `checkpoint` and the like write files or run SQL;
- a URL given to a reader (`read_csv('https://...')`) is refused unless it is the workspace's own store;
- `EXPLAIN [ANALYZE]` runs as rebuilt from the statement it explains, as checked (no options).

The session itself is locked too (see `lock_session`): no external access beyond the allowed folders,
no extension install or autoload, no configuration change. Two walls: one failing is not enough.
"""

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import duckdb

from embedline.errors import ReadOnly

WRITES = {"INSERT", "UPDATE", "DELETE", "CREATE", "DROP", "ALTER", "COPY", "EXPORT", "MERGE_INTO",
          "COPY_DATABASE", "VACUUM", "ANALYZE", "CREATE_FUNC", "LOGICAL_PLAN"}
LANCE_READERS = {"lance_vector_search", "lance_fts", "lance_hybrid_search"}
# Table functions a read-only session may call: readers (paths checked), generators, metadata. Anything
# else (enable_profiling, enable_logging, json_execute_serialized_sql, checkpoint, ...) can write or run SQL.
READ_TABLE_FUNCTIONS = {
    "read_csv",
    "read_csv_auto",
    "read_json",
    "read_json_auto",
    "read_json_objects",
    "read_json_objects_auto",
    "read_ndjson",
    "read_ndjson_auto",
    "read_ndjson_objects",
    "read_parquet",
    "parquet_scan",
    "parquet_metadata",
    "parquet_schema",
    "parquet_file_metadata",
    "parquet_kv_metadata",
    "parquet_full_metadata",
    "read_text",
    "read_blob",
    "glob",
    "sniff_csv",
    "range",
    "generate_series",
    "unnest",
    "json_each",
    "json_tree",
    "repeat",
    "repeat_row",
    "query",
    "query_table",
    "summary",
    "histogram",
    "histogram_values",
    "show",
    "show_tables",
    "show_databases",
    "show_tables_expanded",
    "table_info",
    "pragma_table_info",
    "pragma_show",
    "version",
    "pragma_version",
    "platform",
    "pragma_platform",
    "database_size",
    "pragma_database_size",
    "functions",
    "collations",
    "pragma_collations",
    "icu_calendar_names",
    "pg_timezone_names",
    "test_all_types",
    *LANCE_READERS,
}
DENIED_FUNCTIONS = {"write_log", "json_execute_serialized_sql"}
TO_WRITE = "pass --write (Python: write=True)"
_UNCHECKABLE = f"this EXPLAIN cannot be checked in a read-only session: {TO_WRITE} to run it"
_LANCE_WRITE = (
    "{name} can change Lance data (compaction, cleanup, truncation) and this session is read-only:"
    f" {TO_WRITE} to allow it"
)


@dataclass(frozen=True)
class ReadRule:
    """Where a read-only session may read: local folders and files, and object-store prefixes."""

    folders: tuple[Path, ...]
    files: tuple[Path, ...] = ()
    prefixes: tuple[str, ...] = ()

    def describe(self) -> str:
        return ("a read-only session reads files only under the working directory, $EMBEDLINE_SQL_READ_PATHS"
                " and the workspace's Lance data, never from the network")


def read_rule(lance_uri: str, listed: str, cwd: Path | None = None) -> ReadRule:
    """The working directory, each listed path, and the workspace's Lance location."""
    folders, files, prefixes = [(cwd or Path.cwd()).resolve()], [], []
    for entry in filter(None, listed.split(os.pathsep)):
        path = Path(entry).expanduser().resolve()
        (files if path.is_file() else folders).append(path)
    if "://" in lance_uri and not lance_uri.startswith("file://"):
        prefixes.append(lance_uri.rstrip("/") + "/")
    else:
        folders.append(Path(lance_uri.removeprefix("file://")).resolve())
    return ReadRule(tuple(folders), tuple(files), tuple(prefixes))


def lock_session(con: duckdb.DuckDBPyConnection, rule: ReadRule) -> None:
    """After views and functions exist: file access only where `rule` allows, then no more changes."""
    con.execute("SET allowed_directories = ?", [[f"{folder}/" for folder in rule.folders]])
    con.execute("SET allowed_paths = ?", [[str(path) for path in rule.files]])
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def no_network_extensions(con: duckdb.DuckDBPyConnection) -> None:
    """Before anything loads: no extension is fetched or loaded behind the user's back."""
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")


def check_read_only(con: duckdb.DuckDBPyConnection, statements: list, rule: ReadRule) -> list[str]:
    """Raise `ReadOnly` (one line) unless every parsed statement only reads allowed data; returns the
    texts to run, which are exactly the texts that were checked."""
    return [_check_statement(con, statement, rule) for statement in statements]


def _check_statement(con, statement, rule: ReadRule) -> str:
    kind = statement_kind(statement)
    if kind == "EXPLAIN":
        analyze, inner_text = _explained(statement.query)
        inner = con.extract_statements(inner_text)
        if len(inner) != 1:
            raise ReadOnly(_UNCHECKABLE)
        inner_kind = statement_kind(inner[0])
        if inner_kind != "SELECT":
            raise ReadOnly(f"EXPLAIN runs its {inner_kind}: {_refusal(inner_kind)}")
        _check_select(con, inner[0].query, rule)
        return (
            f"EXPLAIN {'ANALYZE ' if analyze else ''}{inner[0].query}"  # rebuilt: no comment can hide a part
        )
    if kind != "SELECT":
        raise ReadOnly(_refusal(kind))
    _check_select(con, statement.query, rule)
    return statement.query


def _explained(query: str) -> tuple[bool, str]:
    """(ANALYZE?, the explained statement's text) of `EXPLAIN [ANALYZE] stmt`, found by DuckDB's own
    tokenizer (comments are not tokens); options in parentheses are refused, not interpreted."""
    tokens = [position for position, _ in duckdb.tokenize(query)]
    if len(tokens) < 2:
        raise ReadOnly(_UNCHECKABLE)
    analyze = re.match(r"ANALY[SZ]E\b", query[tokens[1]:], re.IGNORECASE) is not None
    start = tokens[2] if analyze and len(tokens) > 2 else tokens[1]
    if query[start:start + 1] == "(":
        raise ReadOnly(
            "EXPLAIN options are not allowed in a read-only session: use EXPLAIN or EXPLAIN ANALYZE"
        )
    return analyze, query[start:]


def statement_kind(statement) -> str:
    return str(statement.type).rsplit(".", 1)[-1]


def _refusal(kind: str) -> str:
    if kind in WRITES:
        return f"{kind} is a write and this session is read-only: {TO_WRITE} to allow it"
    return (f"{kind} changes the session (settings, extensions, attached databases) and this session is"
            f" read-only: {TO_WRITE} to allow it")


def _check_select(con, query: str, rule: ReadRule) -> None:
    parsed = json.loads(con.execute("SELECT json_serialize_sql(?)", [query]).fetchone()[0])
    if parsed.get("error"):
        raise ReadOnly(f"this statement cannot be checked ({parsed.get('error_message', '?')}):"
                       f" {TO_WRITE} to run it")
    for node in _nodes(parsed):
        if "function_name" in node:
            _check_function(con, node, rule)
        elif node.get("type") == "BASE_TABLE" and _looks_like_path(node.get("table_name", "")):
            check_path(node["table_name"], rule)
        elif node.get("type") == "TABLE_FUNCTION":
            _check_table_function(node.get("function") or {}, rule)


def _check_table_function(function: dict, rule: ReadRule) -> None:
    """Only listed table functions; a reader's path (its first argument) only where `rule` allows."""
    name = str(function.get("function_name", "")).lower()
    if name.startswith("__lance_"):
        raise ReadOnly(_LANCE_WRITE.format(name=name))
    if name not in READ_TABLE_FUNCTIONS:
        raise ReadOnly(f"{name}() is not a read this session allows (it can write, log or run SQL):"
                       f" {TO_WRITE} to allow it")
    children = function.get("children") or []
    first = _constant(children[0]) if children else None
    if name.startswith(("read_", "parquet_")) or name in {"glob", "sniff_csv"}:
        if first is not None and "://" in first:  # refused before DuckDB even tries the network
            check_path(first, rule)


def _check_function(con, node: dict, rule: ReadRule) -> None:
    name = str(node["function_name"]).lower()
    children = node.get("children") or []
    if name in DENIED_FUNCTIONS:
        raise ReadOnly(
            f"{name}() can write or run SQL and this session is read-only: {TO_WRITE} to allow it"
        )
    if name.startswith("__lance_"):
        raise ReadOnly(_LANCE_WRITE.format(name=name))
    if name in LANCE_READERS or name in {"query", "query_table"}:
        constants = [_constant(child) for child in children[:1 if name != "query_table" else None]]
        if not children or None in constants:
            raise ReadOnly(f"{name}() takes a constant string in a read-only session: write it out")
        for value in constants:
            if name == "query":
                check_read_only(con, con.extract_statements(value), rule)
            elif name in LANCE_READERS or _looks_like_path(value):
                check_path(value, rule)


def check_path(text: str, rule: ReadRule) -> None:
    """Refuse a path or URL outside `rule` (globs and `..` resolved first)."""
    if "://" in text and not text.startswith("file://"):
        if not any((text.rstrip("/") + "/").startswith(prefix) for prefix in rule.prefixes):
            raise ReadOnly(f"{text!r} is outside what this session may read: {rule.describe()}")
        return
    path = Path(text.removeprefix("file://")).expanduser()
    resolved = (path if path.is_absolute() else rule.folders[0] / path).resolve()
    if resolved in rule.files or any(resolved.is_relative_to(folder) for folder in rule.folders):
        return
    raise ReadOnly(f"{text!r} is outside what this session may read: {rule.describe()}")


def _looks_like_path(name: str) -> bool:
    return any(mark in name for mark in ("/", "\\", ".", ":", "*"))


def _constant(node: dict) -> str | None:
    value = node.get("value") or {}
    if node.get("class") == "CONSTANT" and (value.get("type") or {}).get("id") == "VARCHAR":
        return value.get("value")
    return None


def _nodes(tree):
    """Every dict in the parse tree, depth first."""
    stack = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)

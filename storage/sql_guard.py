"""What a read-only SQL session may run, decided after parsing (never by a statement's first word).

A read-only session runs only SELECT statements (DESCRIBE, SHOW, SUMMARIZE, PRAGMA table_info, VALUES and
CTEs parse as SELECT) and `EXPLAIN [ANALYZE]` of one. Each SELECT is walked as DuckDB parsed it
(`json_serialize_sql`), so a call hidden anywhere in it is seen:

- `__lance_*` functions (compact, clean up, truncate, optimize index, exec, ...) are refused: they change
  Lance data from a plain SELECT;
- `lance_vector_search` / `lance_fts` / `lance_hybrid_search` and `FROM '<path>'` read only allowed places
  (the lance extension does its own I/O, outside DuckDB's `allowed_directories`);
- `query('<sql>')` is checked like a statement of its own;
- a URL given to a table function (`read_csv('https://...')`) is refused unless it is the workspace's own
  object store.

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
_EXPLAIN = re.compile(r"\s*EXPLAIN\s+(?:ANALY[SZ]E\s+)?(?:\((?:[^()']|'[^']*')*\)\s*)?", re.IGNORECASE)


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


def check_read_only(con: duckdb.DuckDBPyConnection, statements: list, rule: ReadRule) -> None:
    """Raise `ReadOnly` (one line) unless every parsed statement only reads allowed data."""
    for statement in statements:
        _check_statement(con, statement, rule)


def _check_statement(con, statement, rule: ReadRule) -> None:
    kind = statement_kind(statement)
    if kind == "EXPLAIN":
        match = _EXPLAIN.match(statement.query)
        inner = con.extract_statements(statement.query[match.end():]) if match else []
        if len(inner) != 1:
            raise ReadOnly("this EXPLAIN cannot be checked in a read-only session: pass --write to run it")
        inner_kind = statement_kind(inner[0])
        if inner_kind != "SELECT":
            raise ReadOnly(f"EXPLAIN runs its {inner_kind}: {_refusal(inner_kind)}")
        statement = inner[0]
    elif kind != "SELECT":
        raise ReadOnly(_refusal(kind))
    _check_select(con, statement.query, rule)


def statement_kind(statement) -> str:
    return str(statement.type).rsplit(".", 1)[-1]


def _refusal(kind: str) -> str:
    if kind in WRITES:
        return f"{kind} is a write and this session is read-only: pass --write to allow it"
    return (f"{kind} changes the session (settings, extensions, attached databases) and this session is"
            " read-only: pass --write to allow it")


def _check_select(con, query: str, rule: ReadRule) -> None:
    parsed = json.loads(con.execute("SELECT json_serialize_sql(?)", [query]).fetchone()[0])
    if parsed.get("error"):
        raise ReadOnly(f"this statement cannot be checked ({parsed.get('error_message', '?')}):"
                       " pass --write to run it")
    for node in _nodes(parsed):
        if "function_name" in node:
            _check_function(con, node, rule)
        elif node.get("type") == "BASE_TABLE" and _looks_like_path(node.get("table_name", "")):
            check_path(node["table_name"], rule)
        elif node.get("type") == "TABLE_FUNCTION":  # read_csv('https://...'), refused before DuckDB is
            for value in filter(None, map(_constant, _nodes(node.get("function")))):
                if "://" in value:
                    check_path(value, rule)


def _check_function(con, node: dict, rule: ReadRule) -> None:
    name = str(node["function_name"]).lower()
    children = node.get("children") or []
    if name.startswith("__lance_"):
        raise ReadOnly(f"{name} can change Lance data (compaction, cleanup, truncation) and this session is"
                       " read-only: pass --write to allow it")
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

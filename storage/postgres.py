"""PostgreSQL, for a catalog and locks shared by many hosts (`EMBEDLINE_CATALOG_URL=postgresql://...`).

The catalog stays a DuckDB session: DuckDB's `postgres` extension (loaded offline from the
`duckdb-extension-postgres` package) attaches the database, so every query, view and the SQL contract are
the same as on the local file. Locks are Postgres session advisory locks, each held by a dedicated psycopg
connection: when the holder dies, its connection drops and the server releases the lock.

Why not DuckLake (`duckdb-extension-ducklake`)? It is a lakehouse format (Parquet data files plus a
metadata database) built for large, append-mostly tables; our catalog is small, row-updated state (runs,
aliases, compare-and-set promotions) that needs row-level transactions and locks from several hosts, and
DuckLake would add a data path (object store for its Parquet files) and its own snapshot model on top of
the same Postgres. Plain tables in Postgres through the extension keep one engine and one transaction.
"""

import hashlib
import importlib.util
import math
import os
import selectors
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import duckdb

from embedline.errors import BadSetting, CatalogBusy
from embedline.storage import duckdb_extensions
from embedline.redaction import redact
from embedline.workspace import private_files

EXTENSION = "postgres_scanner"  # the name DuckDB's loader expects (its entry point is derived from it)
CATALOG_WRITE_LOCK = "embedline-catalog-write"


def extension_path(cache: Path) -> Path:
    """The signed extension from its registry package, under the file name DuckDB's loader expects (the
    package ships it as `postgres.duckdb_extension`): a link in `cache`."""
    if importlib.util.find_spec("duckdb_extension_postgres") is None:
        raise BadSetting("EMBEDLINE_CATALOG_URL names PostgreSQL but duckdb-extension-postgres is not "
                         "installed: pip install duckdb-extension-postgres==1.5.5")
    shipped = duckdb_extensions.shipped("postgres")
    if shipped is None:
        raise BadSetting(f"duckdb-extension-postgres has no build for duckdb {duckdb.__version__}: "
                         "install the package version that matches duckdb")
    with private_files():  # a home this creates (a read on a new host) is the owner's alone
        cache.mkdir(mode=0o700, parents=True, exist_ok=True)
    link = cache / f"{EXTENSION}.duckdb_extension"
    if not link.is_symlink() or link.resolve() != shipped.resolve():
        temporary = cache / f".{EXTENSION}.{os.getpid()}.{threading.get_ident()}"
        temporary.unlink(missing_ok=True)
        temporary.symlink_to(shipped)
        temporary.replace(link)  # atomic: a concurrent process sees the old link or the new one
    return link


def attach(con: duckdb.DuckDBPyConnection, url: str, name: str, cache: Path, read_only: bool = False,
           password: str | None = None) -> None:
    """Load the extension (offline; signature checked) and attach the database at `url` as `name`. The
    password (`password`, else the URL's) reaches the extension through a temporary secret, dropped once
    attached (the attached database keeps it for its new connections): `duckdb_databases()` and errors
    quote a connection string without it, and no other connection of the process (a `postgres_scan`
    source's, with its own PGPASSWORD) gets it."""
    path = str(extension_path(cache)).replace("'", "''")
    con.execute(f"LOAD '{path}'")
    conninfo, password = split_password(url, password)
    options = "TYPE postgres" + (", READ_ONLY" if read_only else "")
    secret = f"{name}_password"
    if password is not None:
        con.execute(f"CREATE OR REPLACE TEMPORARY SECRET {secret} "
                    f"(TYPE postgres, PASSWORD '{_quote(password)}')")
        options += f", SECRET {secret}"
    try:
        con.execute(f"ATTACH '{_quote(conninfo)}' AS {name} ({options})")
    except duckdb.Error as exc:
        raise CatalogBusy(f"cannot reach the catalog at {redact(url)} ({_first_line(exc)}); check "
                          "EMBEDLINE_CATALOG_URL and that PostgreSQL is up, then retry") from exc
    finally:
        if password is not None:
            con.execute(f"DROP TEMPORARY SECRET IF EXISTS {secret}")


def split_password(url: str, password: str | None = None) -> tuple[str, str | None]:
    """`url` as a libpq key=value string without a password, and the password: `password`, else the URL's
    (None where neither has one: libpq then finds one itself, in PGPASSWORD or ~/.pgpass). The catalog
    passes its password to its own connections only, never through the process environment."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        params = conninfo_to_dict(url)
    except Exception as exc:  # psycopg.ProgrammingError: libpq could not parse it
        raise BadSetting(f"EMBEDLINE_CATALOG_URL={redact(url)!r} is not a PostgreSQL URL "
                         f"({_first_line(exc)}); e.g. postgresql://user:password@host:5432/catalog") from exc
    in_url = params.pop("password", None)
    return make_conninfo("", **params), password if password is not None else in_url


def _quote(text: str) -> str:
    return text.replace("'", "''")


def _first_line(exc: Exception) -> str:
    return redact(str(exc).strip().splitlines()[0]) if str(exc).strip() else type(exc).__name__


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for a name (the same on every host)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


# A holder whose host dies or drops off the network holds nothing for long: the server probes an idle
# lock connection after 10 s and gives up after three 5-second probes (the default waits two hours).
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3,
              "options": "-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=3"}


@contextmanager
def advisory_lock(url: str, name: str, wait_seconds: float | None,
                  password: str | None = None) -> Iterator[object | None]:
    """Hold the session advisory lock `name` on a connection of its own for the block; yields that
    connection (`still_held` checks it), or None (holding nothing) when `wait_seconds` passed without
    getting it (None: wait as long as it takes). The server releases the lock when the block ends or the
    holding process dies (its connection closes)."""
    import psycopg

    try:
        conninfo, password = split_password(url, password)
        conn = psycopg.connect(conninfo, password=password, autocommit=True, **KEEPALIVES,
                               application_name=f"embedline lock {name}"[:63])
    except psycopg.Error as exc:
        raise CatalogBusy(f"cannot reach PostgreSQL at {redact(url)} for a lock ({_first_line(exc)}); "
                          "check EMBEDLINE_CATALOG_URL, then retry") from exc
    try:
        key = lock_key(name)
        if wait_seconds is None:
            conn.execute("SELECT pg_advisory_lock(%s)", [key])
            got = True
        else:
            got = _try_lock(conn, key, wait_seconds)
        yield conn if got else None
    finally:
        _release(conn)


UNLOCK_WAIT_SECONDS = 2.0


def _release(conn) -> None:
    """Unlock now, then close: the server ends a closed session's backend (and frees its locks) a moment
    later, so the next holder could find the lock still held. A server that does not answer within
    UNLOCK_WAIT_SECONDS is left to free it when the closed session ends, as before."""
    try:
        with suppress(Exception), selectors.DefaultSelector() as answer:
            conn.pgconn.send_query(b"SELECT pg_advisory_unlock_all()")
            answer.register(conn.pgconn.socket, selectors.EVENT_READ)
            answer.select(UNLOCK_WAIT_SECONDS)  # its answer: the locks are free
    finally:
        conn.close()


def still_held(conn) -> bool:
    """Whether the lock connection is alive, so its lock is still ours: a session lock ends only with
    its session, and psycopg never reconnects a broken one behind our back."""
    import psycopg

    try:
        conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def _try_lock(conn, key: int, wait_seconds: float) -> bool:
    """pg_try_advisory_lock, then (if allowed to wait) a blocking lock under a statement timeout."""
    if conn.execute("SELECT pg_try_advisory_lock(%s)", [key]).fetchone()[0]:
        return True
    if wait_seconds <= 0:
        return False
    import psycopg

    conn.execute(f"SET statement_timeout = {max(1, math.ceil(wait_seconds * 1000))}")  # 0 means forever
    try:
        conn.execute("SELECT pg_advisory_lock(%s)", [key])
        return True
    except psycopg.errors.QueryCanceled:
        return False
    finally:
        conn.execute("SET statement_timeout = 0")

"""The catalog: corpora, models, runs, versions, aliases, documents, adapters, quarantine.

Two backends, one DuckDB dialect. `EMBEDLINE_CATALOG_URL` unset: the DuckDB file `<home>/catalog.duckdb`;
one writer at a time (DuckDB's file lock): every write opens the file, runs one short transaction and
closes it, retrying while another process holds the lock. `postgresql://...`: the same tables in
PostgreSQL, attached to DuckDB by its `postgres` extension (see `storage.postgres`, which also says why
not DuckLake); each process keeps one attached session, every write is one Postgres transaction, and
writers on every host take turns through a Postgres advisory lock held around it (so a transaction
never reads a snapshot older than the last commit, and compare-and-set promotions stay exact).

`space_heads` keeps each space's clean head: the Lance version that holds exactly the content of
runs that passed their gates. `documents` lists what that content holds, so both change together.
"""

import hashlib
import json
import os
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import duckdb
import pyarrow as pa
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_random_exponential

from embedline.errors import (BadInput, CatalogBusy, CatalogMismatch, NotFound, SpaceBusy, SwapRefused,
                              SwapStale)
from embedline.redaction import redact
from embedline.storage import postgres
from embedline.workspace import Workspace, private_files

SCHEMA_VERSION = 18

MIGRATIONS = {
    1: """
    CREATE TABLE corpora (
        name VARCHAR PRIMARY KEY, source VARCHAR, fields VARCHAR, created_at TIMESTAMPTZ);
    CREATE TABLE models (
        name VARCHAR PRIMARY KEY, path VARCHAR, fingerprint VARCHAR, dim INTEGER, pooling VARCHAR,
        normalize BOOLEAN, max_tokens INTEGER, spec VARCHAR, registered_at TIMESTAMPTZ);
    CREATE SEQUENCE run_ids START 1;
    CREATE TABLE runs (
        run_id INTEGER PRIMARY KEY, corpus VARCHAR, model VARCHAR, space VARCHAR, source VARCHAR,
        status VARCHAR, started_at TIMESTAMPTZ, finished_at TIMESTAMPTZ, model_key VARCHAR,
        chunk_key VARCHAR, device VARCHAR, precision VARCHAR,
        docs_read BIGINT, docs_new BIGINT, docs_changed BIGINT, docs_unchanged BIGINT,
        docs_deleted BIGINT, docs_quarantined BIGINT, chunks_embedded BIGINT, chunks_deleted BIGINT,
        tokens_embedded BIGINT, embed_seconds DOUBLE, seconds DOUBLE, version INTEGER, error VARCHAR);
    CREATE TABLE versions (
        space VARCHAR, version INTEGER, corpus VARCHAR, model VARCHAR, run_id INTEGER, tag VARCHAR,
        model_key VARCHAR, chunk_key VARCHAR, row_count BIGINT, validation VARCHAR,
        failures VARCHAR, created_at TIMESTAMPTZ, PRIMARY KEY (space, version));
    CREATE TABLE aliases (
        corpus VARCHAR, alias VARCHAR, space VARCHAR, version INTEGER, model VARCHAR,
        updated_at TIMESTAMPTZ, PRIMARY KEY (corpus, alias));
    CREATE TABLE documents (
        space VARCHAR, doc_id VARCHAR, content_hash VARCHAR, change_key VARCHAR,
        chunk_count INTEGER, run_id INTEGER, updated_at TIMESTAMPTZ, PRIMARY KEY (space, doc_id));
    CREATE TABLE adapters (
        corpus VARCHAR, from_model VARCHAR, to_model VARCHAR, kind VARCHAR, retention DOUBLE,
        path VARCHAR, created_at TIMESTAMPTZ);
    CREATE TABLE quarantine (
        run_id INTEGER, corpus VARCHAR, source VARCHAR, position BIGINT, doc_id VARCHAR,
        reason VARCHAR, raw VARCHAR, created_at TIMESTAMPTZ);
    """,
    2: """
    CREATE TABLE alias_history (
        corpus VARCHAR, alias VARCHAR, space VARCHAR, version INTEGER, model VARCHAR, moved_at TIMESTAMPTZ,
        undone BOOLEAN DEFAULT false);
    ALTER TABLE versions ADD COLUMN index_type VARCHAR;
    ALTER TABLE versions ADD COLUMN index_recall DOUBLE;
    """,
    3: """
    ALTER TABLE versions ADD COLUMN metrics JSON;
    """,
    4: """
    ALTER TABLE adapters ADD COLUMN recalls JSON;
    ALTER TABLE adapters ADD COLUMN sample_size INTEGER;
    """,
    5: """
    ALTER TABLE runs ADD COLUMN docs_deferred BIGINT DEFAULT 0;
    """,
    6: """
    ALTER TABLE corpora ADD COLUMN gates JSON;
    """,
    7: """
    CREATE TABLE metadata_columns (
        corpus VARCHAR, name VARCHAR, type VARCHAR, run_id INTEGER, added_at TIMESTAMPTZ,
        PRIMARY KEY (corpus, name));
    """,
    8: """
    CREATE TABLE space_heads (space VARCHAR PRIMARY KEY, clean_version INTEGER, updated_at TIMESTAMPTZ);
    INSERT INTO space_heads
        SELECT space, max(version) FILTER (WHERE validation = 'passed'), now() FROM versions GROUP BY space;
    UPDATE documents SET change_key = 'failed-run'
        WHERE run_id IN (SELECT run_id FROM runs WHERE status = 'failed');
    ALTER TABLE aliases ADD COLUMN held BOOLEAN DEFAULT false;
    """,  # documents recorded by failed runs (before 8, they were) are embedded and validated again
    9: lambda con: _redact_stored_sources(con),  # credentials recorded before sources were redacted
    10: """
    CREATE TABLE space_storage (
        space VARCHAR PRIMARY KEY, corpus VARCHAR, vectors VARCHAR, index_type VARCHAR,
        updated_at TIMESTAMPTZ);
    """,  # a space without a row stores float32 vectors under an IVF_HNSW_SQ index
    11: """
    ALTER TABLE corpora ADD COLUMN deploy_gates JSON;
    """,  # the thresholds corpora.yaml gives, as the corpus's scheduled runs last passed them
    12: """
    ALTER TABLE runs ADD COLUMN runtime VARCHAR;
    """,  # the forward pass's runtime (torch, openvino): provenance next to device and precision
    13: """
    ALTER TABLE adapters ADD COLUMN fingerprint VARCHAR;
    """,  # sha256 of the adapter file; with it `path` is a key in the file store (before: a local path)
    14: """
    ALTER TABLE runs ADD COLUMN fields VARCHAR;
    """,  # the run's field map: the corpus records it (and its source) only once a run succeeds
    15: """
    ALTER TABLE versions ADD COLUMN pruned_at TIMESTAMPTZ;
    """,  # set when `maintain` drops a version no alias needs: its row stays as history, its data goes
    16: lambda con: _create_identity(con),  # the id the Lance store keeps (storage.store_identity)
    17: """
    ALTER TABLE catalog_identity ADD COLUMN file_store VARCHAR;
    """,  # the `store-id` of the file store its runs use, recorded by its first bind
    18: """
    ALTER TABLE catalog_identity ADD COLUMN file_store_uri VARCHAR;
    """,  # where that store was, for a refusal to name
}

REDACTED_COLUMNS = (("corpora", "source"), ("runs", "source"), ("runs", "error"), ("quarantine", "source"))


def _redact_stored_sources(con) -> None:
    """Rewrite every stored source and error with its credentials redacted."""
    for table, column in REDACTED_COLUMNS:
        values = con.execute(f"SELECT DISTINCT {column} FROM {table} WHERE {column} IS NOT NULL").fetchall()
        for (value,) in values:
            if redact(value) != value:
                con.execute(f"UPDATE {table} SET {column} = ? WHERE {column} = ?", [redact(value), value])


def _create_identity(con) -> None:
    """A new catalog's id is random; one that has runs (written before ids existed) gets an id made from
    its first run, so a backup of it taken before this migration gets the same id when restored."""
    con.execute("CREATE TABLE catalog_identity (id VARCHAR, created_at TIMESTAMPTZ)")
    first = con.execute("SELECT run_id, corpus, space, epoch_us(started_at) FROM runs"
                        " ORDER BY run_id LIMIT 1").fetchone()
    made = hashlib.sha256(repr(tuple(first)).encode()).hexdigest()[:32] if first else uuid.uuid4().hex
    con.execute("INSERT INTO catalog_identity VALUES (?, now())", [made])


RUN_COUNTS = (
    "docs_read", "docs_new", "docs_changed", "docs_unchanged", "docs_deleted", "docs_quarantined",
    "docs_deferred", "chunks_embedded", "chunks_deleted", "tokens_embedded", "embed_seconds",
)


def _nan_to_none(metrics: dict) -> dict:
    """JSON has no NaN: a metric that does not apply is stored as null."""
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in metrics.items()}


def now() -> datetime:
    return datetime.now(timezone.utc)


def location(ws: Workspace) -> str:
    """Where the catalog lives, as a user may be shown it (a URL's password masked)."""
    url = ws.settings.catalog_url
    return redact(url) if url else str(ws.catalog_path)


def on_postgres(ws: Workspace) -> bool:
    return ws.settings.catalog_url is not None


def _is_lock_error(exc: Exception) -> bool:
    return isinstance(exc, duckdb.IOException) and "lock" in str(exc).lower()


@retry(
    retry=retry_if_exception_type(CatalogBusy),
    wait=wait_random_exponential(multiplier=0.05, max=1.0),
    stop=stop_after_delay(30),
    reraise=True,
)
def _open(ws: Workspace, read_only: bool) -> duckdb.DuckDBPyConnection:
    try:
        return duckdb.connect(str(ws.catalog_path), read_only=read_only)
    except duckdb.IOException as exc:
        if _is_lock_error(exc):
            raise CatalogBusy(
                f"the catalog {ws.catalog_path} is locked by another process; retry when it finishes"
            ) from exc
        raise


_SESSIONS: dict[tuple[int, str], duckdb.DuckDBPyConnection] = {}
_SESSIONS_LOCK = threading.Lock()


def _postgres_cursor(ws: Workspace) -> duckdb.DuckDBPyConnection:
    """A cursor on this process's DuckDB session with the Postgres catalog attached as `catalog` (loading
    the extension costs ~0.4 s: once per process, not per call)."""
    url = ws.settings.catalog_url
    # a forked child attaches again (a connection is never shared across a fork); another password too
    key = (os.getpid(), url, ws.settings.catalog_password_text)
    with _SESSIONS_LOCK:
        if key not in _SESSIONS:
            con = duckdb.connect()
            con.execute("SET autoinstall_known_extensions = false")
            con.execute("SET autoload_known_extensions = false")
            postgres.attach(con, url, "catalog", ws.home / "extensions",
                            password=ws.settings.catalog_password_text)
            _SESSIONS[key] = con
        cursor = _SESSIONS[key].cursor()
    cursor.execute("USE catalog")
    return cursor


@contextmanager
def _write_turn(ws: Workspace) -> Iterator[None]:
    """On Postgres, this process's turn among every host's catalog writers; nothing to do on a file."""
    if not on_postgres(ws):
        yield
        return
    url = ws.settings.catalog_url
    with postgres.advisory_lock(url, postgres.CATALOG_WRITE_LOCK, wait_seconds=60,
                                password=ws.settings.catalog_password_text) as conn:
        if conn is None:
            raise CatalogBusy(f"another process has held the catalog {location(ws)} for 60 s; retry later")
        yield


@contextmanager
def writing(ws: Workspace) -> Iterator[duckdb.DuckDBPyConnection]:
    """A short write transaction on the catalog (migrated to the current schema first)."""
    ws.ensure()
    with private_files(), _write_turn(ws):  # a new catalog file and its write-ahead log are 0600
        con = _postgres_cursor(ws) if on_postgres(ws) else _open(ws, read_only=False)
        with _transaction(con, before=lambda: migrate(con)):
            yield con


@contextmanager
def reading(ws: Workspace) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection. A workspace with no catalog yet reads as an empty one, created in memory:
    a read never creates a workspace (a mistyped --home must not leave one behind). One an older
    embedline wrote is migrated first (a workspace that only ever reads must still see today's schema)."""
    if on_postgres(ws):
        with _reading_postgres(ws) as con:
            yield con
        return
    if not ws.catalog_path.exists():
        con = duckdb.connect()
        migrate(con)
        try:
            yield con
        finally:
            con.close()
        return
    con = _open(ws, read_only=True)
    require_known_schema(con)
    if _schema_version(con) < SCHEMA_VERSION:
        con.close()
        with writing(ws):
            pass
        con = _open(ws, read_only=True)
    try:
        yield con
    finally:
        con.close()


@contextmanager
def _reading_postgres(ws: Workspace) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read in one transaction: one snapshot for every query of it, as the file gives."""
    con = _postgres_cursor(ws)

    def catch_up() -> None:
        require_known_schema(con)
        if _schema_version(con) < SCHEMA_VERSION:
            with writing(ws):
                pass
            con.execute("CALL pg_clear_cache()")  # tables another session created or altered

    with _transaction(con, before=catch_up):
        yield con


@contextmanager
def _transaction(con, before: Callable[[], None] | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """`before()`, then BEGIN … COMMIT around the block; rolled back on any error; `con` closed after."""
    try:
        if before is not None:
            before()
        con.execute("BEGIN")
        yield con
        con.execute("COMMIT")
    except BaseException:
        _rollback(con)
        raise
    finally:
        con.close()


def _rollback(con) -> None:
    """Undo the open transaction; the error that got us here is what the caller sees."""
    try:
        con.execute("ROLLBACK")
    except duckdb.Error:
        pass  # nothing was open (the failure came before BEGIN), or the connection is gone with it


def _schema_version(con) -> int:
    try:
        return con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0]
    except duckdb.CatalogException:  # a file created but never migrated (or a Postgres database)
        return 0


def migrate(con: duckdb.DuckDBPyConnection) -> None:
    """Bring the catalog to SCHEMA_VERSION, one transaction per step, on either backend (the caller holds
    the write turn). On Postgres, what DuckDB cannot create there (sequences) goes to the server as is."""
    pg = _is_postgres(con)
    if _schema_version(con) >= SCHEMA_VERSION:
        require_known_schema(con)
        return
    if pg:
        con.execute("CALL pg_clear_cache()")  # see what other hosts created or migrated meanwhile
    con.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER)")
    current = con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0]
    for version in sorted(v for v in MIGRATIONS if current < v <= SCHEMA_VERSION):
        con.execute("BEGIN")
        step = MIGRATIONS[version]
        if callable(step):
            step(con)
        elif pg:
            _run_on_postgres(con, step)
        else:
            con.execute(step)
        con.execute("INSERT INTO schema_version VALUES (?)", [version])
        con.execute("COMMIT")


def require_known_schema(con) -> None:
    """`CatalogMismatch` for a catalog a newer embedline migrated (another host shares it): this one would
    ignore what the newer schema records (e.g. versions `maintain` pruned) and serve removed data."""
    found = _schema_version(con)
    if found > SCHEMA_VERSION:
        raise CatalogMismatch(f"the catalog has schema {found}, newer than this embedline's {SCHEMA_VERSION} "
                              "(a newer embedline migrated it): upgrade embedline on this host")


def _is_postgres(con) -> bool:
    return con.execute(
        "SELECT type = 'postgres' FROM duckdb_databases() WHERE database_name = current_database()"
    ).fetchone()[0]


_SERVER_SIDE = re.compile(r"\s*(CREATE SEQUENCE|ALTER TABLE)\b", re.IGNORECASE)


def _run_on_postgres(con, step: str) -> None:
    """A migration's DuckDB SQL on an attached Postgres. What the extension cannot pass on (CREATE SEQUENCE;
    ALTER TABLE, whose DuckDB type names it sends as they are) goes to the server in its own dialect."""
    for statement in filter(str.strip, step.split(";")):
        if _SERVER_SIDE.match(statement):
            pg_sql = re.sub(r"\bDOUBLE\b", "DOUBLE PRECISION", statement.strip())
            pg_sql = re.sub(r"\bJSON\b", "TEXT", pg_sql)  # the extension writes JSON as text: a json column
            # refuses it; DuckDB's json functions read text the same
            con.execute("CALL postgres_execute('catalog', ?)", [pg_sql])
            con.execute("CALL pg_clear_cache()")
        else:
            con.execute(statement)


def _next_run_id(con) -> int:
    if _is_postgres(con):
        sql = "SELECT * FROM postgres_query('catalog', 'SELECT nextval(''run_ids'')')"
        return con.execute(sql).fetchone()[0]
    return con.execute("SELECT nextval('run_ids')").fetchone()[0]


def table_names(con) -> list[str]:
    """The catalog's tables (the session's current database and schema, file or Postgres)."""
    return [t for (t,) in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database()"
        " AND schema_name = current_schema() ORDER BY table_name").fetchall()]


def _rows(con, sql: str, params: list | None = None) -> list[dict]:
    cur = con.execute(sql, params or [])
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


# -- models ------------------------------------------------------------------------------------
def register_model(ws: Workspace, name: str, spec_json: str) -> None:
    spec = json.loads(spec_json)
    with writing(ws) as con:
        con.execute(
            "INSERT OR REPLACE INTO models VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [name, spec["path"], spec["fingerprint"], spec["dim"], spec["pooling"],
             spec["normalize"], spec["max_tokens"], spec_json, now()],
        )


def get_model(ws: Workspace, name: str) -> dict | None:
    with reading(ws) as con:
        rows = _rows(con, "SELECT * FROM models WHERE name = ?", [name])
    return rows[0] if rows else None


def model_use(ws: Workspace, name: str) -> tuple[list[str], set[str]]:
    """What binds model `name` to its weights: the corpora something was embedded for with it (a run of
    its space, an adapter to or from it), and the model keys its runs recorded."""
    with reading(ws) as con:
        corpora = con.execute("SELECT corpus FROM runs WHERE model = ? UNION SELECT corpus FROM adapters"
                              " WHERE from_model = ? OR to_model = ? ORDER BY corpus", [name, name, name])
        corpora = [corpus for (corpus,) in corpora.fetchall()]
        keys = con.execute("SELECT DISTINCT model_key FROM runs WHERE model = ? AND model_key IS NOT NULL",
                           [name]).fetchall()
    return corpora, {key for (key,) in keys}


def list_models(ws: Workspace) -> list[dict]:
    with reading(ws) as con:
        return _rows(
            con,
            "SELECT name, dim, pooling, normalize, max_tokens, fingerprint, path, spec FROM models"
            " ORDER BY name",
        )


# -- runs --------------------------------------------------------------------------------------
def start_run(ws: Workspace, corpus: str, model: str, space: str, source: str, fields: dict,
              model_key: str, chunk_key: str, device: str, precision: str) -> int:
    """Open a run; returns its id. The corpus is registered (or its source and fields replaced) only when
    a run succeeds: a refused source (a typo, an empty file) must not become what a backfill re-reads."""
    with writing(ws) as con:
        _abandon_runs(con, space)  # the caller holds the space's lock: a run still running there died
        run_id = _next_run_id(con)
        con.execute(
            "INSERT INTO runs (run_id, corpus, model, space, source, status, started_at, model_key,"
            " chunk_key, device, precision, fields)"
            " VALUES (?, ?, ?, ?, ?, 'running', ?, ?, ?, ?, ?, ?)",
            [run_id, corpus, model, space, redact(source), now(), model_key, chunk_key, device, precision,
             json.dumps(fields)],
        )
    return int(run_id)


def abandon_runs(ws: Workspace, space: str) -> int:
    """Mark the space's runs still marked running as abandoned (call it holding the space's lock: they
    died mid-way); returns how many. Their staging is then cleared like any ended run's."""
    with writing(ws) as con:
        return _abandon_runs(con, space)


def _abandon_runs(con, space: str) -> int:
    count = con.execute(  # counted first: DuckDB's Postgres tables take no RETURNING
        "SELECT count(*) FROM runs WHERE space = ? AND status = 'running'", [space]).fetchone()[0]
    if count:
        con.execute("UPDATE runs SET status = 'abandoned', finished_at = ? WHERE space = ?"
                    " AND status = 'running'", [now(), space])
    return count


def fail_run(ws: Workspace, run_id: int, error: str) -> None:
    with writing(ws) as con:
        con.execute(
            "UPDATE runs SET status = 'failed', error = ?, finished_at = ?"
            " WHERE run_id = ? AND status = 'running'",
            [redact(error)[:2000], now(), run_id],
        )


def set_run_precision(ws: Workspace, run_id: int, precision: str) -> None:
    """What a run's shards actually ran under (e.g. "bf16+fp32" from a mixed pool): provenance."""
    with writing(ws) as con:
        con.execute("UPDATE runs SET precision = ? WHERE run_id = ?", [precision, run_id])


def ended_run_ids(ws: Workspace, space: str) -> set[int]:
    """The runs this catalog started in `space` that ended, whatever became of them (a killed one is
    marked abandoned when the next starts); the caller's own, still running, has tagged nothing yet."""
    with reading(ws) as con:
        rows = con.execute("SELECT run_id FROM runs WHERE space = ? AND status <> 'running'", [space])
        return {r for (r,) in rows.fetchall()}


def running_run_ids(ws: Workspace) -> set[int]:
    """Runs still marked running (in any space): their staging folders are in use."""
    with reading(ws) as con:
        return {r for (r,) in con.execute("SELECT run_id FROM runs WHERE status = 'running'").fetchall()}


def has_runs(ws: Workspace, corpus: str) -> bool:
    with reading(ws) as con:
        return con.execute("SELECT count(*) FROM runs WHERE corpus = ?", [corpus]).fetchone()[0] > 0


def exists(ws: Workspace) -> bool:
    """Whether the catalog is there: a PostgreSQL one always is (migrated on first use), a file once made."""
    return on_postgres(ws) or ws.catalog_path.exists()


def no_alias(ws: Workspace, corpus: str, alias: str = "prod") -> NotFound:
    """The `NotFound` for a corpus without `alias`, saying why: no run at all (a typo?), runs whose
    versions all failed their gates, or neither (`versions` then says what the corpus has)."""
    with reading(ws) as con:
        runs, failed, passed = con.execute(
            "SELECT (SELECT count(*) FROM runs WHERE corpus = ?), count(*) FILTER (validation = 'failed'),"
            " count(*) FILTER (validation = 'passed') FROM versions WHERE corpus = ?", [corpus, corpus]
        ).fetchone()
    if runs == 0:
        return NotFound(f"no such corpus {corpus!r} in the catalog {location(ws)}: no run of it was ever "
                        f"started (check --home; `embedline ingest {corpus} SOURCE` starts one)")
    if failed and not passed:
        return NotFound(f"corpus {corpus!r} has no {alias!r} version: its versions failed their gates (see "
                        f"`embedline versions {corpus}`); fix the data and ingest again, relax a gate "
                        f"(`embedline gates {corpus} --set ...`), or serve one as it is: `embedline promote "
                        f"{corpus} VERSION --force` (Python: force=True)")
    return NotFound(f"corpus {corpus!r} has no {alias!r} version (`embedline versions {corpus}` lists what "
                    "it has)")


def require_runs(ws: Workspace, corpus: str) -> None:
    """`NotFound` for a corpus no run ever started (a typo), rather than an empty answer."""
    if not has_runs(ws, corpus):
        raise NotFound(f"no such corpus {corpus!r} in the catalog {location(ws)}: no run of it was ever "
                       f"started (check --home; `embedline ingest {corpus} SOURCE` starts one)")


def quarantined_runs(ws: Workspace, corpus: str) -> list[int]:
    """Runs of `corpus` that rejected records, oldest first."""
    with reading(ws) as con:
        rows = con.execute("SELECT DISTINCT run_id FROM quarantine WHERE corpus = ? ORDER BY run_id",
                           [corpus]).fetchall()
    return [r for (r,) in rows]


def get_run(ws: Workspace, run_id: int) -> dict:
    with reading(ws) as con:
        rows = _rows(con, "SELECT * FROM runs WHERE run_id = ?", [run_id])
    if not rows:
        raise NotFound(f"no run {run_id} in {location(ws)}")
    return rows[0]


# -- documents ---------------------------------------------------------------------------------
def known_documents(ws: Workspace, space: str) -> dict[str, str]:
    """doc_id → change_key for every document the space holds, as a dict: for small spaces and checks;
    a run's diff streams them instead (`space_documents`)."""
    with reading(ws) as con:
        return dict(
            con.execute("SELECT doc_id, change_key FROM documents WHERE space = ?", [space]).fetchall()
        )


@dataclass(frozen=True)
class SpaceDocuments:
    """The `documents` rows of one space, read only when a diff streams them (`storage.document_diff`)."""

    ws: Workspace
    space: str

    @contextmanager
    def reader(self, batch_rows: int = 65_536) -> Iterator[pa.RecordBatchReader]:
        """(doc_id, change_key) as Arrow batches, in one read transaction. DuckDB streams the rows
        (on Postgres a scan with `space = ?` pushed down to the server): Python never holds them."""
        with reading(self.ws) as con:
            yield con.execute(
                "SELECT doc_id, change_key FROM documents WHERE space = ?", [self.space]
            ).fetch_record_batch(batch_rows)


def space_documents(ws: Workspace, space: str) -> SpaceDocuments:
    """What the space holds, for a run's diff to stream (nothing is read yet)."""
    return SpaceDocuments(ws, space)


# -- finishing a run ---------------------------------------------------------------------------
def finish_run(
    ws: Workspace,
    run_id: int,
    *,
    counts: dict,
    seconds: float,
    documents_arrow,  # pyarrow table: doc_id, content_hash, change_key, chunk_count
    deleted_doc_ids: list[str],
    quarantined: list[dict],
    version: dict | None,  # space, version, tag, row_count, validation, failures, corpus, model, ...
    promote_to: str | None,
    metadata_types: dict[str, str] | None = None,
    runtime: str | None = None,
) -> dict:
    """Record everything a run produced in one transaction: it all lands, or none of it does.
    `runtime`: what ran its forward passes ("openvino", "openvino+torch" from a mixed pool): provenance.

    Only a run that passed its gates records its documents and becomes the space's clean head: a failed
    run's documents stay unknown, so the next run embeds and validates them again. The alias moves only
    when it is not held (rolled back) and serves this space, or does not exist yet.
    Returns {"promoted": bool, "prod": the alias as it is now (or None), "model": the run's model}.
    """
    with writing(ws) as con:
        run = _rows(con, "SELECT * FROM runs WHERE run_id = ?", [run_id])[0]
        space = run["space"]
        if run["status"] != "running":  # another host found its lock free, so took it for dead
            raise SpaceBusy(f"run {run_id} of {space} was marked {run['status']} by another process while "
                            "it ran (its space lock was lost): nothing of it is recorded, and the next run "
                            "of the space embeds its documents again")
        passed = version is None or version["validation"] == "passed"
        status = "succeeded" if passed else "failed"
        sets = ", ".join(f"{name} = ?" for name in RUN_COUNTS)
        con.execute(
            f"UPDATE runs SET {sets}, status = ?, seconds = ?, finished_at = ?, version = ?, error = ?,"
            " runtime = coalesce(?, runtime) WHERE run_id = ?",
            [counts.get(name, 0) for name in RUN_COUNTS]
            + [
                status,
                seconds,
                now(),
                version["version"] if version else _newest_passed(con, space),  # what it found still good
                None if status == "succeeded" else version["failures"],
                runtime or None,
                run_id,
            ],
        )
        if passed:
            _record_documents(con, space, run_id, documents_arrow, deleted_doc_ids)
            con.execute(  # the source a backfill re-reads: the last one a run succeeded on
                "INSERT INTO corpora (name, source, fields, created_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET source = excluded.source,"
                " fields = coalesce(excluded.fields, fields)",
                [run["corpus"], run["source"], run["fields"], now()],
            )
        for row in quarantined:
            con.execute(
                "INSERT INTO quarantine VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [run_id, run["corpus"], redact(row["source"]), row["position"], row.get("doc_id"),
                 row["reason"], row.get("raw", "")[:10_000], now()],
            )
        if version is not None:
            if passed:  # the clean head holds these columns now: later runs keep their types
                _add_metadata_columns(con, run["corpus"], run_id, metadata_types or {})
            con.execute(
                "INSERT OR REPLACE INTO versions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
                [space, version["version"], run["corpus"], run["model"], run_id, version["tag"],
                 run["model_key"], run["chunk_key"], version["row_count"], version["validation"],
                 version["failures"], now(), version.get("index_type"), version.get("index_recall"),
                 json.dumps(_nan_to_none(version.get("metrics") or {}), default=_json_number)],
            )
            if passed:
                _set_clean_version(con, space, version["version"])
        prod = _alias(con, run["corpus"], promote_to) if promote_to else None
        promoted = bool(version and passed and promote_to and _may_move(prod, space))
        if promoted:
            _set_alias(con, run["corpus"], promote_to, space, version["version"], run["model"])
            prod = _alias(con, run["corpus"], promote_to)
        return {"promoted": promoted, "prod": prod, "model": run["model"]}


def _record_documents(con, space: str, run_id: int, documents_arrow, deleted_doc_ids: list[str]) -> None:
    if documents_arrow is not None and documents_arrow.num_rows:
        con.register("incoming_documents", documents_arrow)
        con.execute(
            "INSERT OR REPLACE INTO documents SELECT ?, doc_id, content_hash, change_key, chunk_count,"
            " ?, ? FROM incoming_documents",
            [space, run_id, now()],
        )
        con.unregister("incoming_documents")
    if deleted_doc_ids:
        con.execute(  # a semi-join: one pass over the space's rows, not one list search per row
            "DELETE FROM documents WHERE space = ? AND doc_id IN (SELECT unnest(?::VARCHAR[]))",
            [space, deleted_doc_ids],
        )


def restored_head(ws: Workspace, space: str, version: int, held_doc_ids: set[str] | None) -> int:
    """Record a restored version as the clean head and, in the same transaction, list the documents it
    holds that `documents` lacks with change key 'orphan' (which matches no source record), so the next
    run's diff replaces or deletes them; returns how many were adopted."""
    with writing(ws) as con:
        _set_clean_version(con, space, version)
        if not held_doc_ids:
            return 0
        return con.execute(
            "INSERT INTO documents SELECT ?, h.doc_id, NULL, 'orphan', NULL, NULL, ?"
            " FROM (SELECT unnest(?::VARCHAR[]) AS doc_id) h WHERE NOT EXISTS"
            " (SELECT 1 FROM documents d WHERE d.space = ? AND d.doc_id = h.doc_id)",
            [space, now(), sorted(held_doc_ids), space],
        ).fetchone()[0]


def _may_move(alias: dict | None, space: str) -> bool:
    """A run moves an alias only within the alias's space, and never a held one (operators win)."""
    return alias is None or (not alias["held"] and alias["space"] == space)


# -- clean heads -------------------------------------------------------------------------------
def catalog_id(ws: Workspace, create: bool = True) -> str | None:
    """This catalog's id, made once by its migration: the Lance store it writes keeps it. A catalog file
    not there yet is created (a read would see a new, empty catalog, with a new id, each time), or with
    `create=False` has no id (None)."""
    if not on_postgres(ws) and not ws.catalog_path.exists():
        if not create:
            return None
        with writing(ws):
            pass
    with reading(ws) as con:
        return con.execute("SELECT id FROM catalog_identity").fetchone()[0]


def file_store(ws: Workspace) -> tuple[str, str] | None:
    """(store id, URI) of the file store this catalog uses (storage.store_identity); None without a
    catalog, or before a run bound one."""
    if not on_postgres(ws) and not ws.catalog_path.exists():
        return None
    with reading(ws) as con:
        found = con.execute("SELECT file_store, file_store_uri FROM catalog_identity").fetchone()
    return found if found[0] else None


def bind_file_store(ws: Workspace, choose: Callable[[], tuple[str, str]]) -> tuple[str, str]:
    """Record the (store id, URI) `choose` gives unless one is recorded; returns the one recorded. `choose`
    runs in the catalog's write turn, so binders on every host take turns (it must not read the catalog:
    this process holds it)."""
    with writing(ws) as con:
        found = con.execute("SELECT file_store, file_store_uri FROM catalog_identity").fetchone()
        if found[0]:
            return found
        chosen = choose()
        con.execute("UPDATE catalog_identity SET file_store = ?, file_store_uri = ?", list(chosen))
        return chosen


def golden_measured(ws: Workspace, corpus: str) -> tuple[str, int] | None:
    """The latest (space, version) of `corpus` whose golden recall was measured: it had golden queries."""
    return _golden_measured(ws, corpus).get(corpus)


def golden_corpora(ws: Workspace) -> set[str]:
    """Corpora a version of which measured its golden recall: the file store held their golden queries."""
    return set(_golden_measured(ws))


def _golden_measured(ws: Workspace, corpus: str | None = None) -> dict[str, tuple[str, int]]:
    with reading(ws) as con:
        rows = con.execute("SELECT corpus, space, version, metrics FROM versions WHERE metrics IS NOT NULL"
                           " AND coalesce(corpus = ?, true) ORDER BY created_at DESC, version DESC",
                           [corpus]).fetchall()
    found = {}
    for name, space, version, metrics in rows:
        if (json.loads(metrics) if isinstance(metrics, str) else metrics).get("golden_recall") is not None:
            found.setdefault(name, (space, version))
    return found


def served_spaces(ws: Workspace) -> set[str]:
    """Spaces an alias points at or with a clean head: their tables must be in the store."""
    with reading(ws) as con:
        rows = con.execute("SELECT space FROM aliases UNION SELECT space FROM space_heads"
                           " WHERE clean_version IS NOT NULL").fetchall()
    return {space for (space,) in rows}


def run_versions(ws: Workspace) -> dict[tuple[str, int], tuple[int, datetime, datetime | None]]:
    """By (space, run id): the version each run recorded, and when the run started and finished."""
    with reading(ws) as con:
        rows = con.execute("SELECT v.space, v.run_id, v.version, r.started_at, r.finished_at FROM versions v"
                           " JOIN runs r ON r.run_id = v.run_id AND r.space = v.space").fetchall()
    return {(space, run_id): (version, started, finished)
            for space, run_id, version, started, finished in rows}


def clean_version(ws: Workspace, space: str) -> int | None:
    """The Lance version of `space` that holds exactly what passed; None when nothing has yet."""
    with reading(ws) as con:
        row = con.execute("SELECT clean_version FROM space_heads WHERE space = ?", [space]).fetchone()
    return row[0] if row else None


def set_clean_version(ws: Workspace, space: str, version: int) -> None:
    """Record a version with the same content as the clean head (a restore, a compaction) as the new one."""
    with writing(ws) as con:
        _set_clean_version(con, space, version)


def _set_clean_version(con, space: str, version: int) -> None:
    con.execute("INSERT OR REPLACE INTO space_heads VALUES (?, ?, ?)", [space, version, now()])


def _add_metadata_columns(con, corpus: str, run_id: int, types: dict[str, str]) -> None:
    added = now()  # one microsecond apart: their order is the columns' order on either backend
    for i, (name, kind) in enumerate(types.items()):
        con.execute("INSERT INTO metadata_columns VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    [corpus, name, kind, run_id, added + timedelta(microseconds=i)])


def metadata_types(ws: Workspace, corpus: str) -> dict[str, str]:
    """column → type (int64, double, bool, string, list<string>) of the corpus's metadata columns, in
    the order they first came; a type is fixed by the first run that wrote the column."""
    with reading(ws) as con:
        rows = con.execute("SELECT name, type FROM metadata_columns WHERE corpus = ?"
                           " ORDER BY run_id, added_at, rowid",
                           [corpus]).fetchall()
    return dict(rows)


# -- aliases and versions ----------------------------------------------------------------------
def _set_alias(con, corpus: str, alias: str, space: str, version: int, model: str, log: bool = True,
               held: bool = False) -> None:
    """Point the alias and log the move (rollback walks the log back), in the caller's transaction.
    A held alias (set by rollback) stays where it is until `promote` moves it again."""
    moved = now()
    if alias == "prod":
        _reembed_rolled_back(con, space, version)
    con.execute("INSERT OR REPLACE INTO aliases (corpus, alias, space, version, model, updated_at, held)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)", [corpus, alias, space, version, model, moved, held])
    if log:
        con.execute("INSERT INTO alias_history VALUES (?, ?, ?, ?, ?, ?, false)",
                    [corpus, alias, space, version, model, moved])


def _reembed_rolled_back(con, space: str, version: int) -> None:
    """Prod moved back past newer versions of its space (a rollback, a promote to an older one): the
    documents runs after `version` wrote are marked for embedding again, so no later version of the space
    carries the rows an operator took out of service (their vectors, or text the source has since fixed)."""
    newer = con.execute("SELECT count(*) FROM versions WHERE space = ? AND version > ?", [space, version])
    if newer.fetchone()[0]:
        con.execute(
            "UPDATE documents SET change_key = 'rolled-back' WHERE space = ? AND run_id >"
            " (SELECT run_id FROM versions WHERE space = ? AND version = ?)", [space, space, version])


def promote(ws: Workspace, corpus: str, version: int, alias: str = "prod", space: str | None = None,
            allow_failed: bool = False, hold: bool = False, expect: tuple | None = None,
            fresh: bool = False) -> dict:
    """Move `alias` to `version` of the corpus (of `space`, or of the alias's current space) and set its
    hold: a held alias stays where an operator put it until `promote` moves it again.

    `expect` makes the move a compare-and-set for automated callers (a backfill's swap): the alias must
    still be unheld and at `expect` = (space, version), or () for no alias yet, inside this transaction;
    otherwise `SwapRefused` (an operator's move or rollback stands), or `SwapStale` where a run of the
    alias's space promoted its newer version (a catch-up, then the swap again).
    `fresh` (a swap to another space): in the same transaction, `version` must be its space's newest
    passed one, and that space's last run must have read the source after the alias's space last changed
    its documents; otherwise `SwapStale`, so a swap never serves text a scheduled ingest has since changed
    or deleted in prod.
    """
    with writing(ws) as con:
        current = _alias(con, corpus, alias)
        if expect is not None:
            _require_unchanged(con, corpus, alias, current, expect)
        space = space or (current["space"] if current else None)
        found = _rows(
            con,
            "SELECT * FROM versions WHERE corpus = ? AND version = ? AND (? IS NULL OR space = ?)",
            [corpus, version, space, space],
        )
        if not found:
            within = f" in space {space!r}" if space else ""
            raise NotFound(
                f"corpus {corpus!r} has no version {version}{within}: see `embedline versions {corpus}`"
            )
        target = only_match(found, version, corpus)
        if target["validation"] != "passed" and not allow_failed:
            raise BadInput(f"version {version} failed validation ({target['failures']}); "
                           "pass --force (Python: force=True) to promote it anyway")
        if fresh and current is not None and target["space"] != current["space"]:
            _require_fresh(con, current, target)
        _set_alias(con, corpus, alias, target["space"], version, target["model"], held=hold)
        return {"corpus": corpus, "alias": alias, "space": target["space"], "version": version, "held": hold}


def _newest_passed(con, space: str) -> int | None:
    return con.execute("SELECT max(version) FROM versions WHERE space = ? AND validation = 'passed'"
                       " AND pruned_at IS NULL", [space]).fetchone()[0]


def only_match(found: list[dict], version: int, corpus: str) -> dict:
    """The one version row a user's number names: pruned rows do not count (their data is gone) unless
    they are all there is, which raises `require_kept`'s NotFound; several kept ones need --space."""
    kept = [row for row in found if row["pruned_at"] is None] or found[:1]
    if len(kept) > 1:
        raise BadInput(f"version {version} exists in several spaces of {corpus!r} "
                       f"({', '.join(row['space'] for row in kept)}): pass --space (Python: space=...)")
    require_kept(kept[0])
    return kept[0]


def require_kept(version: dict) -> None:
    """`NotFound` for a version `maintain` pruned: its row stays as history, its data is gone."""
    if version["pruned_at"] is not None:
        raise NotFound(
            f"{version['space']} version {version['version']} was removed by `embedline maintain` on "
            f"{version['pruned_at']:%Y-%m-%d} (it kept the newest passed versions and those aliases use): "
            f"`embedline versions {version['corpus']}` lists the versions still kept")


def _require_unchanged(con, corpus: str, alias: str, current: dict | None, expect: tuple) -> None:
    if current is not None and current["held"]:
        raise SwapRefused(
            f"{alias} of {corpus!r} is held (rolled back or pinned); `embedline promote` moves it"
        )
    now_at = (current["space"], current["version"]) if current else ()
    if now_at == tuple(expect):
        return
    by_a_run = bool(expect) and current is not None and current["space"] == expect[0] and (
        current["version"] == _newest_passed(con, current["space"]))
    if by_a_run:  # a scheduled ingest promoted its newer version: the new space catches up with it
        raise SwapStale(f"{alias} of {corpus!r} moved to {now_at} (a run's promotion) while the swap was "
                        f"checked (it expected {tuple(expect)}): catch up, then swap")
    raise SwapRefused(f"{alias} of {corpus!r} was moved to {now_at} while the swap was checked (it expected "
                      f"{tuple(expect)}); that move stands: run the backfill again to swap over it")


def _require_fresh(con, current: dict, target: dict) -> None:
    """Refuse (`SwapStale`) a swap to `target` unless it is its space's newest passed version and that
    space's last run read the source after the last run that changed the alias's space's documents
    (a run reads its source when it starts): else prod may serve text the new space has not seen."""
    corpus, space, version, model = target["corpus"], target["space"], target["version"], target["model"]
    newest = _newest_passed(con, space)
    if newest != version:
        raise SwapStale(f"{space} version {version} is not its newest passed version ({newest}): "
                        f"`embedline backfill {corpus} --model {model}` swaps that one")
    read, changed = con.execute(
        "SELECT (SELECT max(started_at) FROM runs WHERE space = ? AND status = 'succeeded'),"
        " (SELECT max(finished_at) FROM runs WHERE space = ? AND status = 'succeeded' AND"
        " coalesce(docs_new, 0) + coalesce(docs_changed, 0) + coalesce(docs_deleted, 0) > 0)",
        [space, current["space"]],
    ).fetchone()
    if changed is not None and (read is None or read < changed):
        raise SwapStale(
            f"{current['space']} changed its documents ({changed}) after {space} last read the source "
            f"({read}): `embedline backfill {corpus} --model {model}` catches up, then swaps")


def rollback(ws: Workspace, corpus: str, alias: str = "prod") -> dict:
    """Undo the alias's latest move: each rollback steps one promotion further back. The alias is then
    held: runs keep writing and validating versions, but only `promote` moves it again."""
    with writing(ws) as con:
        history = _rows(
            con,
            "SELECT moved_at, space, version, model FROM alias_history"
            " WHERE corpus = ? AND alias = ? AND NOT undone ORDER BY moved_at DESC, rowid DESC LIMIT 2",
            [corpus, alias],
        )
        if len(history) < 2:
            raise NotFound(f"{corpus!r} {alias!r} has no earlier version to roll back to")
        latest, previous = history
        kept = _rows(con, "SELECT * FROM versions WHERE space = ? AND version = ?",
                     [previous["space"], previous["version"]])
        if kept:
            require_kept(kept[0])
        con.execute("UPDATE alias_history SET undone = true WHERE corpus = ? AND alias = ? AND moved_at = ?",
                    [corpus, alias, latest["moved_at"]])
        _set_alias(con, corpus, alias, previous["space"], previous["version"], previous["model"], log=False,
                   held=True)
        return {"corpus": corpus, "alias": alias, "space": previous["space"], "version": previous["version"],
                "from_version": latest["version"]}


def get_alias(ws: Workspace, corpus: str, alias: str = "prod") -> dict | None:
    with reading(ws) as con:
        return _alias(con, corpus, alias)


def _alias(con, corpus: str, alias: str) -> dict | None:
    rows = _rows(con, "SELECT * FROM aliases WHERE corpus = ? AND alias = ?", [corpus, alias])
    return rows[0] if rows else None


def serving_model(ws: Workspace, corpus: str) -> str | None:
    """The model of the space `corpus`'s prod alias points at; None before its first promotion."""
    alias = get_alias(ws, corpus)
    return alias["model"] if alias else None


def prod_models(ws: Workspace) -> dict[str, tuple[str, str | None]]:
    """corpus → (model, model key) of the version its prod alias serves: what made the vectors it serves."""
    with reading(ws) as con:
        rows = con.execute("SELECT a.corpus, a.model, v.model_key FROM aliases a LEFT JOIN versions v"
                           " ON v.space = a.space AND v.version = a.version WHERE a.alias = 'prod'")
        rows = rows.fetchall()
    return {corpus: (model, key) for corpus, model, key in rows}


def list_aliases(ws: Workspace) -> list[dict]:
    with reading(ws) as con:
        return _rows(con, "SELECT * FROM aliases ORDER BY corpus, alias")


def latest_passed_version(ws: Workspace, space: str, before: int | None = None) -> int | None:
    """The newest version of `space` that passed validation (older than `before`, if given)."""
    with reading(ws) as con:
        row = con.execute(
            "SELECT max(version) FROM versions WHERE space = ? AND validation = 'passed'"
            " AND pruned_at IS NULL AND (? IS NULL OR version < ?)",
            [space, before, before],
        ).fetchone()
    return row[0] if row else None


def prune_versions(ws: Workspace, space: str, keep: int,
                   before: datetime) -> tuple[int, list[tuple[int | None, str]]]:
    """Mark as pruned the versions of `space` created before `before` and older than its `keep` newest
    passed versions, but those an alias points at and the clean head: no run, rollback or SQL view may
    reach them again, so `maintain` may drop their tags, then their data. Returns how many were marked now,
    and (version, tag) of every pruned version of the space (those of an earlier, killed maintain too),
    with (None, tag) for the tags of runs that died before the catalog recorded their version."""
    with writing(ws) as con:
        floor = con.execute(
            "SELECT version FROM versions WHERE space = ? AND validation = 'passed' AND pruned_at IS NULL"
            " ORDER BY version DESC LIMIT 1 OFFSET ?", [space, keep - 1]).fetchone()
        marked = 0
        if floor is not None:
            unreachable = (
                " FROM versions WHERE space = ? AND pruned_at IS NULL AND version < ? AND created_at < ?"
                " AND version NOT IN (SELECT version FROM aliases WHERE space = ?)"
                " AND version IS DISTINCT FROM (SELECT clean_version FROM space_heads WHERE space = ?)")
            params = [space, floor[0], before, space, space]
            # counted first: DuckDB's Postgres tables take no RETURNING
            marked = con.execute("SELECT count(*)" + unreachable, params).fetchone()[0]
            if marked:
                con.execute("UPDATE versions SET pruned_at = ? WHERE space = ? AND version IN"
                            " (SELECT version" + unreachable + ")", [now(), space, *params])
        pruned = con.execute("SELECT version, tag FROM versions WHERE space = ? AND pruned_at IS NOT NULL"
                             " AND tag IS NOT NULL ORDER BY version", [space]).fetchall()
        killed = con.execute(  # tagged their commit, then died (or failed) before the catalog recorded it
            "SELECT run_id FROM runs WHERE space = ? AND status IN ('abandoned', 'failed') AND run_id NOT IN"
            " (SELECT run_id FROM versions WHERE space = ? AND run_id IS NOT NULL)", [space, space])
        killed = killed.fetchall()
    return marked, [(int(v), t) for v, t in pruned] + [(None, f"run-{r}") for (r,) in killed]


def set_validation(ws: Workspace, space: str, version: int, passed: bool, failures: str | None,
                   metrics: dict | None = None) -> None:
    with writing(ws) as con:
        con.execute(
            "UPDATE versions SET validation = ?, failures = ?, metrics = ? WHERE space = ? AND version = ?",
            [
                "passed" if passed else "failed",
                failures,
                json.dumps(_nan_to_none(metrics or {}), default=_json_number),
                space,
                version,
            ],
        )


def _json_number(value):
    return float(value)


def get_version(ws: Workspace, space: str, version: int) -> dict | None:
    with reading(ws) as con:
        rows = _rows(con, "SELECT * FROM versions WHERE space = ? AND version = ?", [space, version])
    return rows[0] if rows else None


def record_adapter(ws: Workspace, corpus: str, from_model: str, to_model: str, kind: str, retention: float,
                   path: str, recalls: dict, sample_size: int, fingerprint: str | None = None) -> None:
    """`path`: the adapter file's key in the file store, with its sha256 `fingerprint` (None: an absolute
    local path, as catalogs before schema 13 kept them)."""
    with writing(ws) as con:
        con.execute("INSERT INTO adapters (corpus, from_model, to_model, kind, retention, path, created_at,"
                    " recalls, sample_size, fingerprint) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [corpus, from_model, to_model, kind, retention, path, now(),
                     json.dumps(_nan_to_none(recalls), default=_json_number), sample_size, fingerprint])


def latest_adapters(ws: Workspace) -> dict[tuple[str, str, str], tuple[str, str | None]]:
    """(corpus, from_model, to_model) → (path or store key, fingerprint) of the newest adapter for each."""
    with reading(ws) as con:
        rows = con.execute("SELECT corpus, from_model, to_model,"
                           " arg_max({'path': path, 'digest': fingerprint}, created_at)"
                           " FROM adapters GROUP BY ALL").fetchall()
    return {(corpus, source, target): (row["path"], row["digest"]) for corpus, source, target, row in rows}


def get_adapter(ws: Workspace, corpus: str, from_model: str, to_model: str) -> dict | None:
    """The newest adapter mapping `from_model` queries into `to_model`'s space for the corpus."""
    with reading(ws) as con:
        rows = _rows(con, "SELECT * FROM adapters WHERE corpus = ? AND from_model = ? AND to_model = ?"
                          " ORDER BY created_at DESC LIMIT 1", [corpus, from_model, to_model])
    return rows[0] if rows else None


GATE_LAYERS = ("gates", "deploy_gates")  # set by an operator; given by the deployment (corpora.yaml)


def get_gates(ws: Workspace, corpus: str, layer: str = "gates") -> dict:
    """The validation thresholds of `layer` for `corpus` (only those given; the rest keep their defaults)."""
    column = _gate_layer(layer)
    with reading(ws) as con:
        row = con.execute(f"SELECT {column} FROM corpora WHERE name = ?", [corpus]).fetchone()
    return json.loads(row[0]) if row and row[0] else {}


def set_gates(ws: Workspace, corpus: str, gates: dict, layer: str = "gates") -> None:
    column = _gate_layer(layer)
    with writing(ws) as con:
        con.execute(
            f"INSERT INTO corpora (name, created_at, {column}) VALUES (?, ?, ?)"
            f" ON CONFLICT (name) DO UPDATE SET {column} = excluded.{column}",
            [corpus, now(), json.dumps(gates)],
        )


def _gate_layer(layer: str) -> str:
    if layer not in GATE_LAYERS:
        raise ValueError(f"gate layer {layer!r}: one of {GATE_LAYERS}")
    return layer


def get_storage(ws: Workspace, space: str) -> dict | None:
    """The storage choice recorded for `space` ({"vectors": ..., "index_type": ...}); None if never set."""
    with reading(ws) as con:
        rows = _rows(con, "SELECT vectors, index_type FROM space_storage WHERE space = ?", [space])
    return rows[0] if rows else None


def set_storage(ws: Workspace, corpus: str, space: str, vectors: str, index_type: str,
                keep_existing: bool = False) -> None:
    """Record the space's storage choice; `keep_existing`: only where it has none (one statement, so a
    choice set meanwhile by `embedline storage` stays)."""
    verb = "INSERT OR IGNORE" if keep_existing else "INSERT OR REPLACE"
    with writing(ws) as con:
        con.execute(f"{verb} INTO space_storage VALUES (?, ?, ?, ?, ?)",
                    [space, corpus, vectors, index_type, now()])


def get_corpus(ws: Workspace, corpus: str) -> dict | None:
    with reading(ws) as con:
        rows = _rows(con, "SELECT * FROM corpora WHERE name = ?", [corpus])
    return rows[0] if rows else None


def space_progress(ws: Workspace, space: str) -> dict:
    """Documents the space holds, and its newest run."""
    with reading(ws) as con:
        docs = con.execute("SELECT count(*) FROM documents WHERE space = ?", [space]).fetchone()[0]
        runs = _rows(con, "SELECT run_id, status, started_at, finished_at, version FROM runs WHERE space = ?"
                          " ORDER BY run_id DESC LIMIT 1", [space])
    return {"documents": docs, "last_run": runs[0] if runs else None}


def list_versions(ws: Workspace, corpus: str) -> list[dict]:
    with reading(ws) as con:
        return _rows(
            con,
            "SELECT v.corpus, v.space, v.version, v.tag, v.run_id, v.row_count, v.validation, v.failures,"
            " v.created_at, v.index_type, v.index_recall, v.pruned_at, r.tokens_embedded, r.embed_seconds,"
            " r.seconds,"
            " coalesce(list(a.alias ORDER BY a.alias) FILTER (WHERE a.alias IS NOT NULL), []) AS aliases,"
            " coalesce(bool_or(a.held), false) AS held"
            " FROM versions v LEFT JOIN aliases a ON a.space = v.space AND a.version = v.version"
            " LEFT JOIN runs r ON r.run_id = v.run_id"
            " WHERE v.corpus = ? GROUP BY ALL ORDER BY v.created_at, v.version",
            [corpus],
        )

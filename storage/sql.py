"""The DuckDB session of the SQL contract.

- catalog tables (`corpora`, `runs`, `versions`, ...) from the catalog (`catalog.duckdb`, or PostgreSQL
  when `EMBEDLINE_CATALOG_URL` names it): a snapshot unless the session was opened for writing, then
  the catalog itself, attached;
- one view per corpus over its `prod` alias and one per space over its clean head (what passed), scanned
  from Lance through Arrow (projections and filters are pushed down); a space storing float16 vectors
  is scanned with them cast to float32 (`storage.vectors.WidenedDataset`), so `vector` is `FLOAT[d]`
  in every view;
- `embed(text [, model])` and `embed_<model>(text)` returning the model's native `FLOAT[d]`, computed
  by the embedding function the caller passes in (storage never imports the engine);
- the `lance` extension's `lance_vector_search` / `lance_fts` / `lance_hybrid_search`, loaded from
  the `duckdb-extension-lance` package, when it is installed.
"""

import functools
import json
import logging
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
from duckdb.sqltypes import FLOAT, VARCHAR

from embedline.storage import catalog, duckdb_extensions, embeddings, postgres, sql_guard, store_identity
from embedline.storage.vectors import readable_by_duckdb
from embedline.errors import BadInput, BadName, CatalogMismatch, NotFound, ReadOnly
from embedline.names import check_name, check_space
from embedline.workspace import Workspace

log = logging.getLogger("embedline.sql")

ITER_BATCH_ROWS = 2048  # rows a `for row in relation` loop fetches at a time
INTERRUPTED = "INTERRUPT Error: Interrupted!"  # what DuckDB says of an interrupted query (see `Relation`)

Embedder = Callable[[str, list[str]], np.ndarray]  # (model name, texts) -> (n, d) float32
QueryEmbedder = Callable[[str, str, str | None], np.ndarray]  # (corpus, text, model) -> prod-space vector

SESSION_TABLES = frozenset({"models", "aliases", "space_heads", "versions"})  # what views and functions read
LISTINGS = re.compile(r"\b(show|describe|summarize|information_schema|pg_catalog|duckdb_\w+|sqlite_master)\b",
                      re.IGNORECASE)  # statements that list tables and views: their session holds every one


def connect(ws: Workspace, embedder: Embedder | None = None, write: bool = False,
            query_embedder: QueryEmbedder | None = None,
            for_sql: str | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with every name of the SQL contract defined. Read-only (the default): once its
    views and functions exist, the session reads only what `read_rule` allows and its settings are locked.
    `for_sql`: the one statement the session is for; its snapshot then copies only the catalog tables whose
    names the text contains (`documents` holds a row per document: copying it costs seconds at 1M)."""
    try:  # before the catalog is attached: the checks read it (DuckDB opens a file once per process)
        if write:
            store_identity.check_file_store_early(ws)  # an adapter a query routes through is read from it
        store_identity.require_readable_store(ws)  # views over another catalog's store would serve its rows
        mismatch = None
    except CatalogMismatch as exc:  # the catalog's own tables still answer: where an operator looks first
        mismatch = exc
    con = duckdb.connect()
    sql_guard.no_network_extensions(con)
    if write:
        with catalog.writing(ws):  # creates and migrates the catalog if this workspace is new
            pass
        _attach_catalog(con, ws)
    else:
        con.execute("SET allow_persistent_secrets = false")  # no ~/.duckdb/stored_secrets to read
        _snapshot_catalog(con, ws, for_sql)
    load_lance_extension(con)
    models = _models(con)
    if mismatch is None:
        _create_space_views(con, ws, for_sql)
    else:
        log.warning(f"no corpus views in this SQL session: {mismatch}")
        con.execute("SET VARIABLE embedline_no_views = ?", [str(mismatch)])
    if embedder is not None:
        _create_embed_functions(con, embedder, models, _default_model(con, ws, models))
    if query_embedder is not None:
        _create_query_vector_functions(con, query_embedder, models)
    if not write:
        rule = read_rule(ws)
        con.execute("SET VARIABLE embedline_read_rule = ?", [json.dumps(_rule_json(rule))])
        sql_guard.lock_session(con, rule)
    return con


def read_rule(ws: Workspace) -> sql_guard.ReadRule:
    """What a read-only session may read: the working directory, `$EMBEDLINE_SQL_READ_PATHS`, the Lance
    data."""
    return sql_guard.read_rule(ws.lance_uri, ws.settings.sql_read_paths)


def _rule_json(rule: sql_guard.ReadRule) -> dict:
    return {"folders": [str(p) for p in rule.folders], "files": [str(p) for p in rule.files],
            "prefixes": list(rule.prefixes)}


def _session_rule(con) -> sql_guard.ReadRule:
    """The rule `connect` stored in the session (a session opened for writing has none: cwd only)."""
    raw = con.execute("SELECT getvariable('embedline_read_rule')").fetchone()[0]
    if raw is None:
        return sql_guard.ReadRule((Path.cwd().resolve(),))
    stored = json.loads(raw)
    return sql_guard.ReadRule(tuple(map(Path, stored["folders"])), tuple(map(Path, stored["files"])),
                              tuple(stored["prefixes"]))


def _attach_catalog(con, ws: Workspace) -> None:
    """The catalog itself, writable: the DuckDB file, or the Postgres database through the extension."""
    if ws.settings.catalog_url:
        postgres.attach(con, ws.settings.catalog_url, "catalog", ws.home / "extensions",
                        password=ws.settings.catalog_password_text)
    else:
        con.execute(f"ATTACH '{_quote(str(ws.catalog_path))}' AS catalog")
    con.execute("USE catalog")


def _snapshot_catalog(con, ws: Workspace, for_sql: str | None = None) -> None:
    """Copy the catalog's tables into the session: one consistent snapshot, and no file handle held,
    so ingests (in this process or another) can write while the session is open. With `for_sql`, only
    the tables the views need and those the text names (a word match, strings included: never fewer
    than the statement reads)."""
    con.execute("ATTACH ':memory:' AS catalog")
    with catalog.reading(ws) as source:
        every = for_sql is None or LISTINGS.search(for_sql) is not None  # SHOW TABLES lists them all
        tables = [t for t in catalog.table_names(source)
                  if every or t in SESSION_TABLES or _names(for_sql, t)]
        snapshot = {t: source.execute(f'SELECT * FROM "{t}"').fetch_arrow_table() for t in tables}
    for name, table in snapshot.items():
        con.register("snapshot_source", table)
        con.execute(f'CREATE TABLE catalog.main."{name}" AS SELECT * FROM snapshot_source')
        con.unregister("snapshot_source")
    con.execute("USE catalog")


def _names(text: str, name: str) -> bool:
    """Whether `text` contains `name` as a word, in any case, strings included: never fewer names than a
    statement reads."""
    return re.search(rf"\b{re.escape(name)}\b", text, re.IGNORECASE) is not None


def execute(con: duckdb.DuckDBPyConnection, sql: str, write: bool = False) -> "Relation | None":
    """Run user SQL; refuse anything but reads of allowed data unless `write` (see `sql_guard`)."""
    statements = parse(con, sql)
    rule = None if write else _session_rule(con)
    texts = [statement.query for statement in statements]
    if rule is not None:
        try:
            texts = sql_guard.check_read_only(con, statements, rule)
        except duckdb.Error as exc:  # SQL inside query('...') or after EXPLAIN that does not parse
            raise BadInput(f"SQL does not parse: {str(exc).splitlines()[0]}") from exc
    try:
        with typed_errors(rule):
            for text in texts[:-1]:
                con.execute(text)
            relation = con.sql(texts[-1])
    except BadInput as exc:
        raise _why_no_view(con, exc) from exc.__cause__
    return None if relation is None else Relation(relation, rule)


def _why_no_view(con: duckdb.DuckDBPyConnection, exc: BadInput) -> BadInput:
    """A missing table named like a corpus (or space) the catalog has versions of: it has no view because
    none of them passed its gates, which DuckDB's "does not exist" does not say."""
    found = re.match(r"SQL error: Catalog Error: Table with name (\w+) does not exist", str(exc))
    if found is None:
        return exc
    with suppress(duckdb.Error):  # a session whose statements moved away from the catalog
        if mismatch := con.execute("SELECT getvariable('embedline_no_views')").fetchone()[0]:
            return CatalogMismatch(f"{str(exc).splitlines()[0]}: the session has no corpus views: {mismatch}")
    if "__v" in found.group(1):
        return exc
    corpus = found.group(1).lower().split("__")[0]
    try:
        versions, passed = con.execute(
            "SELECT count(*), count(*) FILTER (validation = 'passed') FROM versions WHERE corpus = ?",
            [corpus]).fetchone()
    except duckdb.Error:  # a session whose statements moved away from the catalog
        return exc
    if not versions or passed:
        return exc
    return BadInput(f"{str(exc).splitlines()[0]}: corpus {corpus!r} has versions, but none passed its gates, "
                    f"so it has no view yet (`embedline versions {corpus}`; a failed version reads as "
                    f"{corpus}__<model>__v<N>)")


@contextmanager
def typed_errors(rule: sql_guard.ReadRule | None) -> Iterator[None]:
    """DuckDB's errors as ours: `ReadOnly` for a read the session's rule forbids, else `BadInput`."""
    try:
        yield
    except duckdb.PermissionException as exc:
        if rule is None:
            raise BadInput(f"SQL error: {_first_line(exc)}") from exc
        raise ReadOnly(f"{_first_line(exc).removeprefix('Permission Error: ')}: {rule.describe()}") from exc
    except duckdb.Error as exc:
        raise BadInput(f"SQL error: {_first_line(exc)}") from exc


CLOSED = "Invalid Input Error: Attempting to execute an unsuccessful or closed pending query result"


def _first_line(exc: Exception) -> str:
    """The line that says what went wrong: a streamed result read after its query failed says so first
    and names the cause on a later `Error: ` line."""
    lines = str(exc).splitlines() or [type(exc).__name__]
    if lines[0].startswith(CLOSED):
        causes = [line.removeprefix("Error: ") for line in lines[1:] if line.startswith("Error: ")]
        return causes[0] if causes else lines[0]
    return lines[0]


class Relation:
    """User SQL's rows: a DuckDB relation (every method and attribute of one) whose errors are typed.

    A relation runs when it is read (`fetchall()`, `df()`, `arrow()`, ...), so a failed cast, `error()`
    or a raising function surfaces there, not when the statement is given: here it is `BadInput` (or
    `ReadOnly`) like a statement's own, and the CLI prints one line. Rows still stream: nothing is read
    before the caller asks, and Arrow readers are wrapped batch by batch. `.relation` is DuckDB's own.

    DuckDB 1.5 reports an error a worker thread raises while rows stream as "Interrupted!" when the
    reading thread sees the interrupt flag the error sets before the error itself (its materialized
    results read the error; streamed ones do not). embedline never interrupts a query, so such a read
    of a read-only session runs the query once more, materialized but counted rather than kept, and
    raises the error it gives."""

    def __init__(self, relation: duckdb.DuckDBPyRelation, rule: sql_guard.ReadRule | None = None):
        self.relation, self._rule = relation, rule

    def __getattr__(self, name: str):
        if name in ("relation", "_rule"):  # before __init__ (a copy): no relation to ask
            raise AttributeError(name)
        with self._typed_errors():
            found = getattr(self.relation, name)
        return self._method(found) if callable(found) else self._wrap(found)

    def _method(self, method: Callable) -> Callable:
        def call(*args, **kwargs):
            args = [a.relation if isinstance(a, Relation) else a for a in args]
            with self._typed_errors():
                return self._wrap(method(*args, **kwargs))

        return functools.wraps(method)(call)

    def _wrap(self, value):
        """Relations the call returned (`filter`, `limit`, ...) and Arrow readers keep their errors typed."""
        if isinstance(value, duckdb.DuckDBPyRelation):
            return Relation(value, self._rule)
        if isinstance(value, pa.RecordBatchReader):
            return pa.RecordBatchReader.from_batches(value.schema, self._batches(value))
        return value

    def _batches(self, reader: pa.RecordBatchReader) -> Iterator[pa.RecordBatch]:
        try:
            yield from reader
        except OSError as exc:  # what an error DuckDB raises mid-stream becomes in pyarrow
            if str(exc).startswith(INTERRUPTED):
                raise self._worker_error() from exc
            raise BadInput(f"SQL error: {_first_line(exc)}") from exc

    @contextmanager
    def _typed_errors(self) -> Iterator[None]:
        try:
            with typed_errors(self._rule):
                yield
        except BadInput as exc:
            if not isinstance(exc.__cause__, duckdb.InterruptException):
                raise
            raise self._worker_error() from exc.__cause__

    def _worker_error(self) -> BadInput | ReadOnly:
        """The error behind a streamed read's "Interrupted!" (see the class): from one more run of a
        read-only query, materialized but only counted (a cost paid on failure only). A session opened for
        writing is not run twice (its statement may change data): it says what to do instead."""
        if self._rule is None:
            return BadInput(f"SQL error: {INTERRUPTED} (DuckDB says so of some errors raised while rows "
                            "stream): read it with fetchall() or df() to see the cause")
        try:
            with typed_errors(self._rule):
                self.relation.aggregate("count(hash(COLUMNS(*)))").fetchall()
        except (BadInput, ReadOnly) as exc:
            return exc
        return BadInput("SQL error: the query failed while its rows streamed and ran clean when run again: "
                        "run it again")

    def __iter__(self) -> Iterator[tuple]:
        """Rows as tuples, streamed, of the types `fetchall()` gives, for `for row in db.sql(...)` (a DuckDB
        relation is not iterable: it says `__getitem__(): incompatible function arguments`). Each loop runs
        the query afresh. (`list(rows)` asks `len()` first, which runs a count: `fetchall()` runs once.)"""
        with self._typed_errors():
            fresh = self.relation.project("*")  # its own result: other reads of this relation keep theirs
            while rows := fresh.fetchmany(ITER_BATCH_ROWS):
                yield from rows

    def __arrow_c_stream__(self, requested_schema=None):
        return self.arrow().__arrow_c_stream__(requested_schema)

    def __getitem__(self, key):
        return self._method(self.relation.__getitem__)(key)

    def __contains__(self, name) -> bool:
        return name in self.relation

    def __len__(self) -> int:
        with self._typed_errors():
            return len(self.relation)

    def __repr__(self) -> str:
        with typed_errors(self._rule):
            return repr(self.relation)

    def __str__(self) -> str:
        with typed_errors(self._rule):
            return str(self.relation)


def parse(con: duckdb.DuckDBPyConnection, sql: str) -> list:
    """The statements of `sql`, parsed by the session itself (so even parse-time file reads are locked)."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise BadInput(f"SQL does not parse: {str(exc).splitlines()[0]}") from exc
    if not statements:
        raise BadInput("no SQL statement given")
    return statements


def write_plan(ws: Workspace, sql: str) -> str:
    """What a `--write` run will do, said before it runs."""
    kinds = [sql_guard.statement_kind(s) for s in parse(duckdb.connect(), sql)]
    return (
        f"--write: running {len(kinds)} statement(s) ({', '.join(kinds)}) with write access to the catalog"
        f" {catalog.location(ws)}, the Lance data (__lance_* functions) and any file DuckDB can reach"
    )


def lance_extension_path() -> Path | None:
    return duckdb_extensions.shipped("lance")


def load_lance_extension(con: duckdb.DuckDBPyConnection) -> bool:
    """Load the signed `lance` extension from its registry package, offline; False if absent."""
    path = lance_extension_path()
    if path is None:
        return False
    con.execute(f"LOAD '{_quote(str(path))}'")
    return True


def _models(con) -> dict[str, int]:
    """model name → output dim of every registered model."""
    dims = {}
    for name, spec in con.execute("SELECT name, spec FROM models ORDER BY name").fetchall():
        if not _valid_row("models.name", name, check_name):
            continue
        parsed = json.loads(spec)
        dims[name] = parsed.get("truncate_dim") or parsed["dim"]
    return dims


def _default_model(con, ws: Workspace, models: dict[str, int]) -> str | None:
    """`$EMBEDLINE_MODEL`, else the model most `prod` aliases serve, else `minilm`, else any."""
    chosen = ws.settings.model
    if chosen in models:
        return chosen
    row = con.execute(
        "SELECT model FROM aliases WHERE alias = 'prod' GROUP BY model ORDER BY count(*) DESC, model LIMIT 1"
    ).fetchone()
    if row and row[0] in models:
        return row[0]
    if "minilm" in models:
        return "minilm"
    return next(iter(models), None)


def _create_space_views(con, ws: Workspace, for_sql: str | None = None) -> None:
    """`<corpus>` over the prod alias; `<corpus>__<model>` over each space's clean head (the latest
    content that passed: never the rows of a run still being validated, or of one that failed); and
    `<corpus>__<model>__v<N>` over every recorded version N (time travel, failed ones included). A session
    for one statement (`for_sql`) gets only the version views its text names: each opens a Lance
    version, and a space gains one per run, so the session's start stays bounded."""
    prod = con.execute("SELECT corpus, space, version, model FROM aliases WHERE alias = 'prod'").fetchall()
    for corpus, space, version, model in prod:
        if _valid_row("aliases", (corpus, space, model), _check_row):
            _register_or_warn(con, ws, corpus, space, version, model)
    heads = con.execute(
        "SELECT h.space, any_value(v.model), any_value(h.clean_version) FROM space_heads h"
        " JOIN versions v USING (space) WHERE h.clean_version IS NOT NULL GROUP BY h.space"
    ).fetchall()
    for space, model, version in heads:
        if _valid_row("space_heads", (None, space, model), _check_row):
            _register_or_warn(con, ws, space, space, version, model)
    recorded = con.execute("SELECT space, version, model FROM versions WHERE pruned_at IS NULL"
                           " ORDER BY space, version").fetchall()
    listing = for_sql is None or LISTINGS.search(for_sql) is not None
    for space, version, model in recorded:
        name = f"{space}__v{int(version)}"
        if not listing and not _names(for_sql, name):
            continue
        if _valid_row("versions", (None, space, model), _check_row):
            _register_or_warn(con, ws, name, space, version, model)


def _register_or_warn(con, ws: Workspace, name: str, space: str, version: int, model: str) -> None:
    """A version gone from Lance leaves its view out of the session, not every view: `maintain` pruned it
    after the snapshot, or the catalog was restored from a backup older than what maintain kept."""
    try:
        _register_view(con, ws, name, space, version, model)
    except NotFound:
        embeddings.dataset_at(ws, space)  # no table at all (a wrong store): NotFound, as before
        log.warning(f"{name} left out of the SQL session: version {version} of {space} is no longer in Lance")


def _check_row(row: tuple) -> None:
    corpus, space, model = row
    if corpus is not None:
        check_name(corpus, "corpus name")
    check_space(space)
    check_name(model, "model name")


def _valid_row(table: str, value, check) -> bool:
    """Names read back from the catalog are checked again before they become SQL identifiers or paths: a
    row a `--write` session planted (`x" AS SELECT ...`) is left out of the session, with a warning."""
    try:
        check(value)
        return True
    except BadName as exc:
        log.warning(f"catalog {table} row {value!r} left out of the SQL session: {exc}; fix or delete the row"
                    " with `embedline sql --write`")
        return False


def describe(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str, str]]:
    """Every name the session offers: (name, kind, what it is)."""
    names = [
        (t, "table", "catalog")
        for (t,) in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = 'catalog'"
            " AND schema_name = current_schema() ORDER BY table_name"
        ).fetchall()
    ]
    for (view,) in con.execute(
        "SELECT view_name FROM duckdb_views() WHERE temporary AND database_name = 'temp'"
        " AND view_name NOT LIKE 'lance_%'"  # the session's views, not DuckDB's pg_catalog/information_schema
        " ORDER BY view_name"
    ).fetchall():
        if "__v" in view:
            what = "space at a recorded version (time travel)"
        elif "__" in view:
            what = "space at its clean head (what passed)"
        else:
            what = "corpus at its prod alias"
        names.append((view, "view", what))
    functions = con.execute(
        "SELECT DISTINCT function_name, function_type FROM duckdb_functions() WHERE function_name = 'embed'"
        " OR starts_with(function_name, 'embed_') OR starts_with(function_name, 'lance_')"
        " OR function_name = 'query_vector' OR starts_with(function_name, 'query_vector_')"
        " ORDER BY function_name"
    ).fetchall()
    what = {"embed": "embedding",
            "query": "query vector in the space prod serves (adapter on a model change)",
            "lance": "lance extension"}
    names += [(name, kind, what[name.split("_")[0]]) for name, kind in functions]
    return names


def _register_view(con, ws: Workspace, name: str, space: str, version: int | None, model: str) -> None:
    dataset = readable_by_duckdb(embeddings.dataset_at(ws, space, version), ws.lance_storage_options)
    source = f"lance_{name}"
    con.register(source, dataset)
    shown_version = dataset.version
    excluded, renamed = _legacy_view_columns(dataset.schema.names)
    con.execute(
        f'CREATE OR REPLACE TEMP VIEW "{name}" AS SELECT chunk_id, doc_id, chunk_index, text, vector,'
        f" '{_quote(model)}' AS model, {int(shown_version)} AS version,"
        f" * EXCLUDE (chunk_id, doc_id, chunk_index, text, vector, model_key{excluded}){renamed}"
        f' FROM "{source}"'
    )


def _legacy_view_columns(names: list[str]) -> tuple[str, str]:
    """A metadata column named `model` or `version` (written before such fields got a `meta_` prefix)
    shows as `meta_<name>`, merged with the prefixed column of later runs: never a silent `version_1`."""
    excluded, renamed = "", ""
    for column in ("model", "version"):
        if column in names:
            prefixed = f"meta_{column}"
            merged = f'coalesce("{prefixed}", "{column}")' if prefixed in names else f'"{column}"'
            excluded += f', "{column}"' + (f', "{prefixed}"' if prefixed in names else "")
            renamed += f', {merged} AS "{prefixed}"'
    return excluded, renamed


def _create_embed_functions(con, embedder: Embedder, models: dict[str, int], default: str | None) -> None:
    for model, dim in models.items():
        con.create_function(f"embed_{model}", _arrow_udf(embedder, model, dim), [VARCHAR],
                            duckdb.array_type(FLOAT, dim), type="arrow")
    if default is None:
        return
    same_dim = [m for m in models if models[m] == models[default]]
    cases = " ".join(f"WHEN '{m}' THEN embed_{m}(t)" for m in same_dim)
    con.execute(
        f"CREATE OR REPLACE TEMP MACRO embed(t) AS embed_{default}(t),"
        f" (t, m) AS CASE m {cases} ELSE error('embed(text, model): model ' || m || ' is not registered'"
        f" || ' or has another dimension than {default}; call embed_<model>(text) instead') END"
    )


def _create_query_vector_functions(con, query_embedder: QueryEmbedder, models: dict[str, int]) -> None:
    """`query_vector_<corpus>(text, model)` per corpus, and `query_vector(corpus, text [, model])`
    over the corpora whose prod space has the same dimension as the first one's."""
    prod = con.execute("SELECT corpus, model FROM aliases WHERE alias = 'prod' ORDER BY corpus").fetchall()
    dims = {corpus: models[model] for corpus, model in prod
            if model in models and _valid_row("aliases.corpus", corpus, check_name)}
    for corpus, dim in dims.items():
        con.create_function(
            f"query_vector_{corpus}",
            _query_udf(query_embedder, corpus, dim),
            [VARCHAR, VARCHAR],
            duckdb.array_type(FLOAT, dim),
            type="arrow",
            null_handling="special",
        )
    if not dims:
        return
    first_dim = next(iter(dims.values()))
    same_dim = [c for c, d in dims.items() if d == first_dim]
    missing = ("ELSE error('query_vector: corpus ' || c || ' has no prod version here, or another dimension;"
               " call query_vector_<corpus>(text, model) instead') END")
    two = " ".join(f"WHEN '{c}' THEN query_vector_{c}(t, NULL::VARCHAR)" for c in same_dim)
    three = " ".join(f"WHEN '{c}' THEN query_vector_{c}(t, m)" for c in same_dim)
    con.execute(f"CREATE OR REPLACE TEMP MACRO query_vector(c, t) AS CASE c {two} {missing},"
                f" (c, t, m) AS CASE c {three} {missing}")


def _query_udf(query_embedder: QueryEmbedder, corpus: str, dim: int):
    def udf(texts: pa.Array, models: pa.Array) -> pa.Array:
        """NULL text gives a NULL vector, as embed() does: a zero one would score every row alike."""
        texts = texts.to_pylist()
        rows = [query_embedder(corpus, t, m) if t is not None else np.zeros(dim, np.float32)
                for t, m in zip(texts, models.to_pylist())]
        return pa.FixedSizeListArray.from_arrays(pa.array(np.asarray(rows, np.float32).reshape(-1)), dim,
                                                 mask=pa.array([t is None for t in texts]))

    return udf


def _arrow_udf(embedder: Embedder, model: str, dim: int):
    """Embed each distinct text of a DuckDB vector once, whatever the row count."""

    def udf(texts: pa.Array) -> pa.Array:
        values = texts.to_pylist()
        distinct = sorted({v for v in values if v is not None})
        vectors = embedder(model, distinct) if distinct else np.zeros((0, dim), np.float32)
        row_of = {text: i for i, text in enumerate(distinct)}
        flat = np.zeros((len(values), dim), np.float32)
        for i, value in enumerate(values):
            if value is not None:
                flat[i] = vectors[row_of[value]]
        mask = pa.array([v is None for v in values])
        return pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), dim, mask=mask)

    return udf


def _quote(text: str) -> str:
    return text.replace("'", "''")

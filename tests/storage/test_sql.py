"""The SQL session: catalog tables, per-corpus and per-space views, embed(), the lance extension."""

import pytest

from embedline.storage import sql
from embedline.errors import BadInput, ReadOnly
from embedline.tasks.search import make_embedder
from tests.conftest import ingest


@pytest.fixture
def session(workspace, debian_case):
    ingest(workspace, debian_case)
    return sql.connect(workspace, make_embedder(workspace))


def test_every_contract_name_is_defined(session):
    names = {r[0] for r in session.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert {"corpora", "models", "runs", "versions", "aliases", "documents", "adapters", "quarantine",
            "debian", "debian__tiny"} <= names
    columns = [r[0] for r in session.execute("DESCRIBE debian").fetchall()]
    assert columns[:7] == ["chunk_id", "doc_id", "chunk_index", "text", "vector", "model", "version"]
    assert {"title", "section", "tags"} <= set(columns)


def test_embed_returns_the_models_native_array(session):
    assert session.execute(
        "SELECT typeof(embed('x')), typeof(embed('x', 'tiny')), typeof(embed_tiny('x'))"
    ).fetchone() == ("FLOAT[32]", "FLOAT[32]", "FLOAT[32]")
    with pytest.raises(Exception, match="not registered"):
        session.execute("SELECT embed('x', 'nope')").fetchall()


def test_read_only_session_refuses_writes_and_never_touches_the_catalog(session, workspace):
    with pytest.raises(ReadOnly):
        sql.execute(session, "INSERT INTO runs (run_id) VALUES (99)")
    session.execute("DELETE FROM runs")  # a snapshot: even a raw write stays in this session
    assert sql.connect(workspace).execute("SELECT count(*) FROM runs").fetchone()[0] == 1


def test_a_session_stays_open_while_another_ingest_writes(session, workspace, debian_case):
    before = session.execute("SELECT count(*) FROM runs").fetchone()[0]
    ingest(workspace, debian_case)  # writes the catalog while `session` is open in this process
    assert session.execute("SELECT count(*) FROM runs").fetchone()[0] == before  # a consistent snapshot
    assert sql.connect(workspace).execute("SELECT count(*) FROM runs").fetchone()[0] == before + 1


def test_lance_extension_searches_a_space(session, workspace):
    assert sql.lance_extension_path() is not None
    uri = f"{workspace.lance_uri}/debian__tiny.lance"
    rows = session.execute(
        f"SELECT doc_id FROM lance_vector_search('{uri}', 'vector', embed('window manager'), k = 3)"
    ).fetchall()
    assert len(rows) == 3


def test_a_session_for_one_statement_copies_only_the_catalog_tables_it_names(workspace):
    def copied(for_sql):
        con = sql.connect(workspace, for_sql=for_sql)
        return {t for (t,) in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = 'catalog'").fetchall()}

    everything = copied(None)
    assert {"documents", "runs", "quarantine"} <= everything
    one = copied("SELECT count(*) FROM runs")
    assert "runs" in one and sql.SESSION_TABLES <= one and not {"documents", "quarantine"} & one
    assert "documents" in copied("SELECT * FROM query_table('Documents')")  # named in a string counts too
    assert copied("SHOW TABLES") == copied("SELECT * FROM information_schema.tables") == everything


def test_a_session_for_one_statement_opens_only_the_version_views_it_names(workspace, debian_case, tmp_path):
    import json

    from tests.conftest import ingest

    first = ingest(workspace, debian_case)
    records = [json.loads(line) for line in debian_case.read_text().splitlines()]
    records[0]["text"] += " Revised."
    revised = tmp_path / "revised.jsonl"
    revised.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert ingest(workspace, revised).version > first.version

    def views(for_sql):
        con = sql.connect(workspace, for_sql=for_sql)
        return {v for (v,) in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}

    every = views(None)
    named = f"debian__tiny__v{first.version}"
    assert named in every and {"debian", "debian__tiny"} <= every
    one = views(f"SELECT count(*) FROM {named.upper()}")
    versions = lambda found: {v for v in found if v.startswith("debian__tiny__v")}  # noqa: E731
    assert versions(one) == {named} and {"debian", "debian__tiny"} <= one
    assert versions(every) > {named} and not versions(views("SELECT count(*) FROM debian"))


def test_a_streamed_read_duckdb_says_was_interrupted_raises_the_error_behind_it(workspace):
    """DuckDB 1.5 reports a worker thread's error reaching a streamed read as "Interrupted!" (a race: the
    reader sees the flag the error sets first). A real interrupt puts the stream in that state on purpose."""
    con = sql.connect(workspace, make_embedder(workspace))
    late = "SELECT CASE WHEN i = 4500000 THEN error('late') ELSE i END AS i FROM range(5000000) t(i)"
    for query, cause in ((late, "late"), ("SELECT i FROM range(5000000) t(i)", "ran clean when run again")):
        rows = sql.execute(con, query)
        reader = rows.to_arrow_reader(1000)
        assert reader.read_next_batch().num_rows == 1000
        con.interrupt()
        with pytest.raises(BadInput, match=f"^SQL error: .*{cause}"):
            reader.read_all()
        rows = sql.execute(con, query)
        assert rows.fetchone() == (0,)
        con.interrupt()
        with pytest.raises(BadInput, match=f"^SQL error: .*{cause}"):
            rows.fetchmany(5000)
    writable = sql.connect(workspace, make_embedder(workspace), write=True)  # its statements may write:
    sql.execute(writable, "CREATE TEMP SEQUENCE s", write=True)              # never run twice
    reader = sql.execute(writable, "SELECT nextval('s') AS n FROM range(5000000)", write=True).arrow()
    assert reader.read_next_batch().num_rows > 0
    writable.interrupt()
    with pytest.raises(BadInput, match=r"Interrupted!.*read it with fetchall\(\)"):
        reader.read_all()
    assert sql.execute(writable, "SELECT currval('s')", write=True).fetchone()[0] < 5000000

"""A read-only SQL session cannot write or reach out: one test per escape, each refused with one line,
and afterwards the catalog's bytes and the Lance versions are what they were."""

import hashlib
import logging

import lance
import pytest

from embedline.errors import ReadOnly
from embedline.storage import sql
from embedline.tasks.search import make_embedder
from tests.conftest import DEBIAN_CASE, ingest


@pytest.fixture(scope="module")
def ws(tmp_path_factory, tiny_model_dir):
    from embedline.tasks.models import add_model
    from embedline.workspace import Workspace

    workspace = Workspace.from_env(tmp_path_factory.mktemp("sec") / "home").ensure()
    add_model(workspace, "tiny", str(tiny_model_dir))
    ingest(workspace, DEBIAN_CASE)
    return workspace


def state(ws) -> tuple:
    """What no read-only statement may change: the catalog's bytes, every Lance version, the home's files."""
    dataset = lance.dataset(f"{ws.lance_uri}/debian__tiny.lance")
    files = sorted(str(p.relative_to(ws.home)) for p in ws.home.rglob("*"))
    return (hashlib.sha256(ws.catalog_path.read_bytes()).hexdigest(),
            [v["version"] for v in dataset.versions()], dataset.count_rows(), files)


def space_uri(ws) -> str:
    return f"{ws.lance_uri}/debian__tiny.lance"


ESCAPES = {
    "copy_onto_catalog": ("COPY (SELECT 'x') TO '{catalog}'", "COPY is a write"),
    "explain_analyze_copy_onto_catalog": (
        "EXPLAIN ANALYZE COPY (SELECT 'x') TO '{catalog}'",
        "EXPLAIN runs its COPY",
    ),
    "explain_analyze_with_options": (
        "EXPLAIN (ANALYZE, FORMAT json) COPY (SELECT 'x') TO '{catalog}'",
        "EXPLAIN options are not allowed",
    ),
    "explain_comment_hiding_a_copy": (
        "EXPLAIN (ANALYZE /*'*/) COPY (SELECT 'x') TO '{catalog}' (FORMAT csv) --'*/) SELECT 1",
        "EXPLAIN options are not allowed",
    ),
    "explain_analyze_comment_then_copy": (
        "EXPLAIN ANALYZE /* x */ COPY (SELECT 'x') TO '{catalog}'",
        "EXPLAIN runs its COPY",
    ),
    "json_execute_serialized_sql": (
        "SELECT * FROM json_execute_serialized_sql(json_serialize_sql('SELECT * FROM __lance_truncate_table(''{uri}'')'))",
        "json_execute_serialized_sql() is not a read",
    ),
    "enable_profiling_to_a_file": (
        "SELECT * FROM enable_profiling(format='json', save_location='{home}/lance/debian__tiny.lance/x.json')",
        "enable_profiling() is not a read",
    ),
    "enable_logging_to_files": (
        "SELECT * FROM enable_logging(storage='file', storage_path='{home}/logs')",
        "enable_logging() is not a read",
    ),
    "write_log": ("SELECT write_log('x')", "write_log() can write"),
    "force_checkpoint_function": ("SELECT * FROM force_checkpoint()", "force_checkpoint() is not a read"),
    "export_database": ("EXPORT DATABASE '{home}/export'", "EXPORT is a write"),
    "import_database": ("IMPORT DATABASE '{home}/export'", ""),
    "attach_and_create": ("ATTACH '{catalog}' AS c2; CREATE TABLE c2.evil AS SELECT 1", "ATTACH"),
    "install": ("INSTALL httpfs", "LOAD changes the session"),
    "force_install": ("FORCE INSTALL httpfs", "LOAD changes the session"),
    "load": ("LOAD '{lance_ext}'", "LOAD changes the session"),
    "explain_analyze_load": ("EXPLAIN ANALYZE LOAD httpfs", "EXPLAIN runs its LOAD"),
    "set": ("SET enable_external_access = true", "SET changes the session"),
    "set_variable_read_rule": ("SET VARIABLE embedline_read_rule = '{{}}'", "SET changes the session"),
    "explain_analyze_set": ("EXPLAIN ANALYZE SET lock_configuration = false", "EXPLAIN runs its SET"),
    "reset": ("RESET lock_configuration", "SET changes the session"),
    "create_secret": ("CREATE SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')", "CREATE is a write"),
    "call": ("CALL __lance_truncate_table('{uri}')", "CALL changes the session"),
    "lance_compact_files": (
        "SELECT * FROM __lance_compact_files('{uri}')",
        "__lance_compact_files can change",
    ),
    "lance_cleanup_old_versions": (
        "SELECT * FROM __lance_cleanup_old_versions('{uri}')",
        "__lance_cleanup_old_versions can change",
    ),
    "lance_truncate_table": (
        "SELECT * FROM __lance_truncate_table('{uri}')",
        "__lance_truncate_table can change",
    ),
    "lance_optimize_index": (
        "SELECT * FROM __lance_optimize_index('{uri}')",
        "__lance_optimize_index can change",
    ),
    "lance_set_auto_cleanup": (
        "SELECT * FROM __lance_set_auto_cleanup('{uri}', 1, 1)",
        "__lance_set_auto_cleanup can change",
    ),
    "lance_exec": ("SELECT * FROM __lance_exec('{uri}', 'x')", "__lance_exec can change"),
    "lance_qualified_in_subquery": (
        "SELECT (SELECT count(*) FROM system.main.__LANCE_TRUNCATE_TABLE('{uri}')) AS n",
        "__lance_truncate_table",
    ),
    "lance_in_cte": (
        "WITH t AS (SELECT * FROM __lance_compact_files('{uri}')) SELECT * FROM t",
        "__lance_compact_files",
    ),
    "lance_hidden_in_query": (
        "SELECT * FROM query('SELECT * FROM __lance_truncate_table(''{uri}'')')",
        "__lance_truncate_table",
    ),
    "copy_hidden_in_query": ("SELECT * FROM query('COPY (SELECT 1) TO ''{catalog}''')", "COPY is a write"),
    "https_read_csv": ("SELECT * FROM read_csv('https://example.com/x.csv')", "never from the network"),
    "https_replacement_scan": (
        "SELECT * FROM 'https://example.com/x.parquet'",
        "outside what this session may read",
    ),
    "s3_lance_search": (
        "SELECT * FROM lance_vector_search('s3://bucket/x.lance', 'vector', [0.1]::FLOAT[1])",
        "outside what this session may read",
    ),
    "lance_read_outside": ("SELECT count(*) FROM '/etc/x.lance'", "outside what this session may read"),
    "local_file_outside": ("SELECT * FROM read_text('/etc/hostname')", "never from the network"),
    "drop_after_select": ("SELECT 1; DROP TABLE runs", "DROP is a write"),
    "cte_delete": ("WITH x AS (SELECT 1) DELETE FROM runs", "DELETE is a write"),
    "begin_then_delete": ("BEGIN; DELETE FROM runs; COMMIT", "TRANSACTION changes the session"),
    "checkpoint": ("CHECKPOINT", "CALL changes the session"),
    "detach": ("DETACH catalog", "DETACH changes the session"),
    "pragma_setting": ("PRAGMA enable_profiling", "changes the session"),
}


@pytest.mark.parametrize("name", list(ESCAPES))
def test_read_only_session_refuses(name, ws):
    template, message = ESCAPES[name]
    statement = template.format(catalog=ws.catalog_path, home=ws.home, uri=space_uri(ws),
                                lance_ext=sql.lance_extension_path())
    before = state(ws)
    session = sql.connect(ws, make_embedder(ws))
    with pytest.raises(Exception) as refused:
        relation = sql.execute(session, statement)
        if relation is not None:
            relation.fetchall()
    error = str(refused.value)
    assert "\n" not in error and error
    if name != "import_database":  # refused at parse time: the session may not read the folder
        assert isinstance(refused.value, ReadOnly), error
        assert message.lower() in error.lower(), error
    assert state(ws) == before
    assert not (ws.home / "export").exists()


def test_session_settings_are_locked(ws):
    session = sql.connect(ws)
    settings = dict(
        session.execute(
            "SELECT name, value FROM duckdb_settings() WHERE name IN ('enable_external_access', 'lock_configuration',"
            " 'autoinstall_known_extensions', 'autoload_known_extensions')"
        ).fetchall()
    )
    assert settings == {"enable_external_access": "false", "lock_configuration": "true",
                        "autoinstall_known_extensions": "false", "autoload_known_extensions": "false"}
    with pytest.raises(Exception, match="locked"):
        session.execute("SET enable_external_access = true")  # even on the raw connection


def test_reads_still_work(ws, tmp_path, monkeypatch):
    """Views, embed(), lance search in the workspace, DESCRIBE, EXPLAIN, and a CSV from a listed folder."""
    (tmp_path / "tags.csv").write_text("doc_id,tag\nx,y\n")
    monkeypatch.setenv("EMBEDLINE_SQL_READ_PATHS", str(tmp_path))
    from embedline.workspace import Workspace

    listed = Workspace.from_env(ws.home)
    session = sql.connect(listed, make_embedder(listed))
    assert sql.execute(session, f"SELECT count(*) FROM read_csv('{tmp_path}/tags.csv')").fetchone() == (1,)
    hits = sql.execute(session, f"SELECT doc_id FROM lance_vector_search('{space_uri(ws)}', 'vector',"
                                " embed('window manager'), k = 2)").fetchall()
    assert len(hits) == 2
    assert sql.execute(session, "DESCRIBE debian").fetchall()
    assert sql.execute(session, "EXPLAIN SELECT count(*) FROM debian").fetchall()
    assert sql.execute(
        session, "/* why */ EXPLAIN ANALYZE -- how long\n SELECT count(*) FROM debian"
    ).fetchall()
    assert sql.execute(session, "SELECT * FROM unnest(['https://debian.org'])").fetchone() == (
        "https://debian.org",
    )
    assert sql.execute(session, """SELECT count(*) FROM json_each('{"a": "http://x"}')""").fetchone() == (1,)
    assert sql.execute(session, "WITH r AS (SELECT * FROM runs) SELECT count(*) FROM r").fetchone() == (1,)
    assert sql.execute(session, "SELECT * FROM query('SELECT 42')").fetchone() == (42,)


def test_write_session_says_what_it_will_do(ws, caplog):
    from embedline import connect

    with caplog.at_level(logging.INFO, logger="embedline.sql"):
        connect(ws.home).sql("SELECT 1; DELETE FROM quarantine", write=True)
    assert "--write: running 2 statement(s) (SELECT, DELETE)" in caplog.text
    assert str(ws.catalog_path) in caplog.text


def test_planted_names_are_refused_by_the_next_session(tmp_path, tiny_model_dir, caplog):
    """A write session plants rows whose names would inject SQL; the next session leaves them out."""
    from embedline.tasks.models import add_model
    from embedline.workspace import Workspace

    fresh = Workspace.from_env(tmp_path / "home").ensure()
    add_model(fresh, "tiny", str(tiny_model_dir))
    ingest(fresh, DEBIAN_CASE)
    writer = sql.connect(fresh, write=True)
    evil = "debian__tiny\" AS SELECT 1; --"
    writer.execute("INSERT INTO versions (space, version, corpus, model, validation) VALUES (?, 99, 'debian',"
                   " 'tiny', 'passed')", [evil])
    writer.execute(
        "INSERT INTO models (name, spec) SELECT 'x(t) AS 1; --', spec FROM models WHERE name = 'tiny'"
    )
    writer.execute("INSERT INTO aliases (corpus, alias, space, version, model) VALUES"
                   " ('evil\" AS SELECT 2; --', 'prod', 'debian__tiny', 1, 'tiny')")
    writer.close()
    with caplog.at_level(logging.WARNING, logger="embedline.sql"):
        session = sql.connect(fresh, make_embedder(fresh))
    views = {v for (v,) in session.execute("SELECT view_name FROM duckdb_views() WHERE temporary").fetchall()}
    assert "debian" in views and not any('"' in v or "(" in v for v in views)
    functions = {f for (f,) in session.execute("SELECT function_name FROM duckdb_functions()").fetchall()}
    assert not any("(" in f for f in functions)
    assert "left out of the SQL session" in caplog.text

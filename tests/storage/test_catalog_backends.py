"""The catalog's contract on both backends: the local DuckDB file, and PostgreSQL through DuckDB."""

import os
import signal
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from embedline.errors import (BadSetting, CatalogBusy, CatalogMismatch, NotFound, SpaceBusy, SwapRefused,
                              SwapStale)
from embedline.settings import load
from embedline.storage import catalog, postgres
from embedline.storage.query_source import iter_query_rows
from embedline.storage.locks import space_lock
from embedline.workspace import Workspace
from tests.postgres_server import running_postgres

CONTRACT_TABLES = {"corpora", "models", "runs", "versions", "aliases", "documents", "adapters", "quarantine"}


def make_workspace(tmp_path, url: str | None) -> Workspace:
    settings = load(home=tmp_path / "home", catalog_url=url)
    return Workspace.from_env(tmp_path / "home", settings=settings).ensure()


def record_run(ws: Workspace, space: str = "debian__tiny", version: int = 1, passed: bool = True,
               docs: tuple[str, ...] = ("a", "b"), hashes: dict | None = None,
               deleted: tuple[str, ...] = ()) -> int:
    """A run of `space` that records `docs` (content hash `h-<id>` unless `hashes` says) and `deleted`."""
    run_id = catalog.start_run(ws, space.split("__")[0], "tiny", space, "debian.jsonl", {"id_field": "id"},
                               "model-key", "chunk-key", "cpu", "fp32")
    content = [(hashes or {}).get(d, f"h-{d}") for d in docs]
    documents = pa.table({"doc_id": list(docs), "content_hash": content,
                          "change_key": [f"k-{d}" for d in docs], "chunk_count": [1] * len(docs)})
    catalog.finish_run(
        ws, run_id, counts={"docs_read": len(docs), "docs_new": len(docs)}, seconds=0.5,
        documents_arrow=documents, deleted_doc_ids=list(deleted),
        quarantined=[{"source": "debian.jsonl", "position": 7, "reason": "no text", "raw": "{}"}],
        version={"space": space, "version": version, "tag": f"run-{run_id}", "row_count": len(docs),
                 "validation": "passed" if passed else "failed", "failures": None if passed else "recall",
                 "metrics": {"recall": float("nan")}},
        promote_to="prod", metadata_types={"section": "string", "priority": "int64"},
    )
    return run_id


def test_reading_a_workspace_that_does_not_exist_creates_nothing(tmp_path):
    ws = Workspace.from_env(tmp_path / "typo", settings=load(home=tmp_path / "typo"))
    with catalog.reading(ws) as con:
        assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 0  # an empty catalog, today's schema
    with pytest.raises(NotFound, match=str(tmp_path / "typo")):
        catalog.require_runs(ws, "debian")
    assert not (tmp_path / "typo").exists()


def test_a_read_on_a_new_host_of_a_postgres_catalog_keeps_its_home_private(tmp_path, postgres_url):
    with catalog.writing(make_workspace(tmp_path / "first", postgres_url)):
        pass  # migrated by another host
    home = tmp_path / "new-host"
    ws = Workspace.from_env(home, settings=load(home=home, catalog_url=postgres_url))
    assert catalog.get_alias(ws, "debian") is None
    assert not home.exists() or home.stat().st_mode & 0o077 == 0  # was 0755 (the extension link's folder)


def test_a_new_catalog_is_migrated_to_the_current_schema(tmp_path, catalog_url):
    ws = make_workspace(tmp_path, catalog_url)
    with catalog.reading(ws) as con:
        assert con.execute("SELECT max(version) FROM schema_version").fetchone()[0] == catalog.SCHEMA_VERSION
        assert CONTRACT_TABLES <= set(catalog.table_names(con))
        columns = {c for (c,) in con.execute("SELECT column_name FROM duckdb_columns() WHERE table_name ="
                                             " 'versions' AND database_name = current_database()").fetchall()}
    assert {"index_recall", "metrics"} <= columns  # added by migrations 2 and 3
    with catalog.writing(ws):
        pass  # created (a read of a catalog that is not there yet sees a new, empty one each time)
    assert len(catalog.catalog_id(ws)) == 32 and catalog.catalog_id(ws) == catalog.catalog_id(ws)  # made once


def test_a_run_is_recorded_with_its_documents_version_quarantine_and_alias(tmp_path, catalog_url):
    ws = make_workspace(tmp_path, catalog_url)
    run_id = record_run(ws)
    run = catalog.get_run(ws, run_id)
    assert (run["status"], run["docs_read"], run["version"]) == ("succeeded", 2, 1)
    assert catalog.known_documents(ws, "debian__tiny") == {"a": "k-a", "b": "k-b"}
    assert catalog.get_alias(ws, "debian")["version"] == 1
    assert catalog.clean_version(ws, "debian__tiny") == 1
    assert catalog.metadata_types(ws, "debian") == {"section": "string", "priority": "int64"}
    [listed] = catalog.list_versions(ws, "debian")
    assert (listed["aliases"], listed["validation"]) == (["prod"], "passed")
    with catalog.reading(ws) as con:
        assert con.execute("SELECT count(*), any_value(reason) FROM quarantine").fetchone() == (1, "no text")


def test_a_run_another_process_marked_abandoned_records_nothing(tmp_path, catalog_url):
    """Its lock was lost (a dropped connection) and another host's run or maintain took the space: what it
    would record may already be undone, its tag dropped."""
    ws = make_workspace(tmp_path, catalog_url)
    run_id = catalog.start_run(ws, "debian", "tiny", "debian__tiny", "debian.jsonl", {}, "m", "c", "cpu",
                               "fp32")
    assert catalog.abandon_runs(ws, "debian__tiny") == 1
    with pytest.raises(SpaceBusy, match="marked abandoned by another process"):
        catalog.finish_run(ws, run_id, counts={}, seconds=1.0, documents_arrow=pa.table({"doc_id": ["a"]}),
                           deleted_doc_ids=[], quarantined=[], promote_to="prod",
                           version={"space": "debian__tiny", "version": 1, "tag": f"run-{run_id}",
                                    "row_count": 1, "validation": "passed", "failures": None})
    assert catalog.get_alias(ws, "debian") is None and catalog.get_version(ws, "debian__tiny", 1) is None


def test_a_failed_run_records_no_documents_and_moves_no_alias(tmp_path, catalog_url):
    ws = make_workspace(tmp_path, catalog_url)
    record_run(ws, version=1, docs=("a",))
    failed = record_run(ws, version=2, passed=False, docs=("a", "b"))
    assert catalog.get_run(ws, failed)["status"] == "failed"
    assert catalog.known_documents(ws, "debian__tiny") == {"a": "k-a"}
    assert catalog.get_alias(ws, "debian")["version"] == 1


def test_a_write_that_fails_midway_leaves_nothing(tmp_path, catalog_url):
    ws = make_workspace(tmp_path, catalog_url)
    with pytest.raises(RuntimeError, match="midway"):
        with catalog.writing(ws) as con:
            con.execute("INSERT INTO corpora (name, source) VALUES ('half', 'x')")
            con.execute("INSERT INTO aliases (corpus, alias, space, version) VALUES ('half', 'prod', 'h', 1)")
            raise RuntimeError("midway")
    assert catalog.get_corpus(ws, "half") is None
    assert catalog.list_aliases(ws) == []


def test_promote_is_a_compare_and_set_and_rollback_holds_the_alias(tmp_path, catalog_url):
    ws = make_workspace(tmp_path, catalog_url)
    record_run(ws, version=1)
    record_run(ws, version=2, docs=("b", "c"))
    assert catalog.get_alias(ws, "debian")["version"] == 2
    with pytest.raises(SwapRefused, match="moved to"):
        catalog.promote(ws, "debian", 1, expect=("debian__tiny", 1))
    back = catalog.rollback(ws, "debian")
    assert (back["version"], back["from_version"]) == (1, 2)
    alias = catalog.get_alias(ws, "debian")
    assert (alias["version"], alias["held"]) == (1, True)
    assert catalog.known_documents(ws, "debian__tiny") == {  # what run 2 wrote is embedded again
        "a": "k-a", "b": "rolled-back", "c": "rolled-back"}
    with pytest.raises(SwapRefused, match="held"):
        catalog.promote(ws, "debian", 2, expect=("debian__tiny", 1))
    assert catalog.promote(ws, "debian", 2)["version"] == 2
    with pytest.raises(NotFound):
        catalog.promote(ws, "debian", 9)


def test_pruning_marks_only_versions_no_alias_head_or_newest_passed_needs(tmp_path, catalog_url):
    ws = make_workspace(tmp_path, catalog_url)
    for version in range(1, 6):
        record_run(ws, version=version, passed=version != 4)  # 5 clean head and prod; 4 failed
    catalog.promote(ws, "debian", 1, alias="audit")
    record_run(ws, space="debian__small", version=3)  # another model's space: prod stays in debian__tiny
    assert catalog.prune_versions(ws, "debian__tiny", 2, catalog.now() - timedelta(days=1)) == (0, [])
    marked, pruned = catalog.prune_versions(ws, "debian__tiny", 2, catalog.now())  # keeps 3 and 5 (and 4)
    assert (marked, [v for v, _ in pruned]) == (1, [2])
    assert catalog.prune_versions(ws, "debian__tiny", 2, catalog.now())[0] == 0
    with pytest.raises(NotFound, match="removed by `embedline maintain`"):
        catalog.promote(ws, "debian", 2)
    assert catalog.latest_passed_version(ws, "debian__tiny", before=3) == 1
    assert catalog.prune_versions(ws, "debian__tiny", 1, catalog.now())[0] == 2  # 3 and 4
    assert catalog.promote(ws, "debian", 3, alias="other")["space"] == "debian__small"  # no longer ambiguous


def test_a_catalog_a_newer_embedline_migrated_is_refused(tmp_path, catalog_url):
    ws = make_workspace(tmp_path, catalog_url)
    with catalog.writing(ws) as con:
        con.execute("INSERT INTO schema_version VALUES (?)", [catalog.SCHEMA_VERSION + 1])
    for call in (lambda: catalog.get_alias(ws, "debian"), lambda: record_run(ws)):
        with pytest.raises(CatalogMismatch, match="upgrade embedline"):
            call()


def test_a_swap_needs_a_space_that_read_the_source_after_prod_last_changed(tmp_path, catalog_url):
    ws = make_workspace(tmp_path, catalog_url)
    record_run(ws, docs=("a", "b", "c"))  # prod: debian__tiny version 1
    record_run(ws, "debian__small", docs=("a", "b", "c"))  # the backfill's batch, read after it
    record_run(ws, "debian__small", version=2, docs=("d",))
    swap = dict(space="debian__small", expect=("debian__tiny", 1), fresh=True)
    with pytest.raises(SwapStale, match="version 1 is not its newest passed version"):
        catalog.promote(ws, "debian", 1, **swap)
    record_run(ws, version=2, docs=("a",), hashes={"a": "h-a-edited"})  # a scheduled ingest, then
    with pytest.raises(SwapStale, match=r"moved to \('debian__tiny', 2\) \(a run's promotion\)"):
        catalog.promote(ws, "debian", 2, **swap)
    with pytest.raises(SwapStale, match="debian__tiny changed its documents .* after debian__small last"):
        catalog.promote(ws, "debian", 2, **{**swap, "expect": ("debian__tiny", 2)})
    catalog.promote(ws, "debian", 1, space="debian__tiny")  # an operator moves prod back
    with pytest.raises(SwapRefused, match="that move stands") as refused:
        catalog.promote(ws, "debian", 2, **{**swap, "expect": ("debian__tiny", 2)})
    assert not isinstance(refused.value, SwapStale)  # not retried: the backfill does not override it
    record_run(ws, "debian__small", version=3, docs=("a",), hashes={"a": "h-a-edited"})  # a catch-up
    assert catalog.get_alias(ws, "debian")["space"] == "debian__tiny"
    swapped = catalog.promote(ws, "debian", 3, **{**swap, "expect": ("debian__tiny", 1)})
    assert swapped["space"] == "debian__small"


WRITER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    from tests.storage.test_catalog_backends import make_workspace, record_run
    from pathlib import Path
    ws = make_workspace(Path(sys.argv[1]), sys.argv[2] or None)
    ids = [record_run(ws, space=f"c{{sys.argv[3]}}__tiny", version=v) for v in (1, 2)]
    print(*ids)
""")


def test_many_processes_record_runs_at_once_and_all_land(tmp_path, catalog_url):
    ws = make_workspace(tmp_path, catalog_url)
    with catalog.writing(ws):
        pass  # created once, so the writers race on runs, not on the first migration
    script = WRITER.format(root=str(Path(__file__).parents[2]))
    writers = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path), catalog_url or "", str(i)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(6)]
    outputs = [w.communicate(timeout=240) for w in writers]
    assert [w.returncode for w in writers] == [0] * 6, [err[-2000:] for _, err in outputs]
    reported = [int(i) for out, _ in outputs for i in out.split()]
    assert len(reported) == len(set(reported)) == 12
    with catalog.reading(ws) as con:
        rows = con.execute("SELECT run_id, status FROM runs ORDER BY run_id").fetchall()
        spaces = con.execute("SELECT count(DISTINCT space), count(*) FROM versions").fetchone()
    assert sorted(reported) == [r for r, _ in rows] and {s for _, s in rows} == {"succeeded"}
    assert spaces == (6, 12)
    assert len(catalog.list_aliases(ws)) == 6


def test_a_held_space_lock_turns_a_second_writer_away(tmp_path, catalog_url):
    ws = make_workspace(tmp_path, catalog_url)
    with space_lock(ws, "debian__tiny"):
        with pytest.raises(SpaceBusy, match="another run is writing space 'debian__tiny'"):
            with space_lock(ws, "debian__tiny"):
                pass
        with space_lock(ws, "other__tiny"):  # other spaces are free
            pass
    with space_lock(ws, "debian__tiny"):  # released when the block ended
        pass


HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from embedline.settings import load
    from embedline.storage.locks import space_lock
    from embedline.workspace import Workspace
    ws = Workspace.from_env(Path(sys.argv[1]), settings=load(home=sys.argv[1], catalog_url=sys.argv[2]))
    with space_lock(ws, "debian__tiny"):
        print("held", flush=True)
        time.sleep(600)
""")


def test_the_postgres_space_lock_is_released_when_its_holder_is_killed(tmp_path, postgres_url):
    ws = make_workspace(tmp_path, postgres_url)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(ws.home), postgres_url],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held", holder.stderr.read()
        assert not (ws.home / "locks").exists()  # held in Postgres, not on this disk
        with pytest.raises(SpaceBusy):
            with space_lock(ws, "debian__tiny", wait_seconds=0.5):
                pass
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
        with space_lock(ws, "debian__tiny", wait_seconds=30):  # the server released it with the connection
            assert holder.returncode == -signal.SIGKILL
    finally:
        holder.kill()


def test_the_catalog_url_is_checked_and_its_password_never_shown():
    settings = load(catalog_url="postgresql://app:s3cret@db/cat")
    shown = {name: value for name, value, _ in settings.shown()}
    assert shown["EMBEDLINE_CATALOG_URL"] == "postgresql://app:***@db/cat"
    with pytest.raises(BadSetting, match="EMBEDLINE_CATALOG_URL='mysql://x'"):
        load(catalog_url="mysql://x")
    assert load(catalog_url="").catalog_url is None


def test_a_run_that_lost_its_postgres_lock_is_stopped_before_it_writes(tmp_path, postgres_url):
    import psycopg

    ws = make_workspace(tmp_path, postgres_url)
    with space_lock(ws, "debian__tiny") as lease:
        lease.confirm()  # held: nothing raised
        with psycopg.connect(postgres_url, autocommit=True) as admin:  # a server restart, a network blip
            admin.execute("SELECT pg_terminate_backend(%s, 10000)",  # returns once the backend is gone
                          [lease.connection.info.backend_pid])
        with space_lock(ws, "debian__tiny"):  # another host may take the space now...
            with pytest.raises(SpaceBusy, match="lost the lock of space 'debian__tiny'"):
                lease.confirm()  # ...so the first run stops before its next write


def test_the_catalog_password_reaches_its_own_connections_only(tmp_path, monkeypatch):
    """A flow run of a `postgres_scan` source has the source's PGPASSWORD in its environment (a corpus
    `env:`); the catalog, on the same server under another role, gives its connections the password of
    its URL, and never puts it where the source, the environment or a SQL user would see it."""
    import psycopg

    with running_postgres(password="catalog-pw") as server:
        with psycopg.connect(f"{server}/postgres", password="catalog-pw", autocommit=True) as admin:
            admin.execute("CREATE ROLE etl LOGIN PASSWORD 'source-pw'")
            admin.execute("CREATE DATABASE cat")
            admin.execute("CREATE DATABASE app OWNER etl")
        source = server.replace("embedline@", "etl@") + "/app"
        with psycopg.connect(source, password="source-pw") as app:
            app.execute("CREATE TABLE tickets AS SELECT 1 AS id, 'disk full' AS text")
        monkeypatch.setenv("PGPASSWORD", "source-pw")
        ws = make_workspace(tmp_path, server.replace("embedline@", "embedline:catalog-pw@") + "/cat")
        run_id = record_run(ws)  # an advisory lock (psycopg), then writes (DuckDB's extension)
        assert [v["run_id"] for v in catalog.list_versions(ws, "debian")] == [run_id]
        query = f"SELECT id, text FROM postgres_scan('{source}', 'public', 'tickets')"
        assert list(iter_query_rows(query)) == [{"id": 1, "text": "disk full"}]
        assert os.environ["PGPASSWORD"] == "source-pw"
        con = duckdb.connect()  # what a `write=True` SQL session attaches
        postgres.attach(con, ws.settings.catalog_url, "catalog", ws.home / "extensions")
        paths = con.execute("SELECT string_agg(path, ' ') FROM duckdb_databases()").fetchone()[0]
        assert "catalog-pw" not in paths and con.execute("FROM duckdb_secrets()").fetchall() == []
        with pytest.raises(CatalogBusy, match="embedline:\\*\\*\\*@") as refused:
            wrong = ws.settings.catalog_url.replace("-pw@", "@")
            catalog.list_versions(make_workspace(tmp_path / "typo", wrong), "debian")
        assert "catalog@" not in str(refused.value)
        settings = load(home=tmp_path / "apart", catalog_url=f"{server}/cat", catalog_password="catalog-pw")
        apart = Workspace.from_env(tmp_path / "apart", settings=settings).ensure()  # deploy/'s way
        assert [v["run_id"] for v in catalog.list_versions(apart, "debian")] == [run_id]
        assert list(iter_query_rows(query)) == [{"id": 1, "text": "disk full"}]
        monkeypatch.setenv("PGPASSWORD", "catalog-pw")  # neither: libpq's own PGPASSWORD, as before
        plain = make_workspace(tmp_path / "plain", f"{server}/cat")
        assert [v["run_id"] for v in catalog.list_versions(plain, "debian")] == [run_id]


def test_a_catalog_password_setting_needs_a_url_without_one_and_is_never_shown():
    with pytest.raises(BadSetting, match=r"^EMBEDLINE_CATALOG_PASSWORD='\*\*\*': .* needs EMBEDLINE_CATALOG"):
        load(catalog_password="hunter2")
    with pytest.raises(BadSetting, match="has a password too"):
        load(catalog_url="postgresql://app:other@db/cat", catalog_password="hunter2")
    with pytest.raises(BadSetting, match="has a password too"):
        load(catalog_url="postgresql://app@db/cat?password=other", catalog_password="hunter2")
    with pytest.raises(BadSetting, match=r"^EMBEDLINE_CATALOG_URL='postgresq://app:\*\*\*@db/cat': use a"):
        load(catalog_url="postgresq://app:hunter2@db/cat")
    settings = load(catalog_url="postgresql://app@db:5433/cat", catalog_password="p@ss/:w'rd")
    assert settings.catalog_url == "postgresql://app@db:5433/cat"  # shown as given
    assert postgres.split_password(settings.catalog_url, settings.catalog_password_text) == (
        "user=app dbname=cat host=db port=5433", "p@ss/:w'rd")
    assert "p@ss" not in repr(settings) + str(settings.shown()) + str(settings.model_dump())


def test_a_storage_choice_recorded_only_where_absent_never_replaces_one(tmp_path, catalog_url):
    ws = make_workspace(tmp_path, catalog_url)
    catalog.set_storage(ws, "debian", "debian__new", "float32", "ivf_hnsw_sq", keep_existing=True)
    catalog.set_storage(ws, "debian", "debian__new", "float16", "ivf_sq")  # `embedline storage` meanwhile
    catalog.set_storage(ws, "debian", "debian__new", "float32", "ivf_hnsw_sq", keep_existing=True)
    assert catalog.get_storage(ws, "debian__new") == {"vectors": "float16", "index_type": "ivf_sq"}

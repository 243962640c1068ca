"""A user's session with the catalog in PostgreSQL (`EMBEDLINE_CATALOG_URL`): ingest, SQL, versions,
search."""

import json

from tests.conftest import run_cli


def test_ingest_sql_versions_and_search_with_a_postgres_catalog(tmp_path, tiny_model_dir, debian_case,
                                                                postgres_url, prefect_api_url, monkeypatch):
    from embedline.tasks.models import add_model
    from embedline.workspace import Workspace

    monkeypatch.setenv("EMBEDLINE_CATALOG_URL", postgres_url)
    monkeypatch.setenv("PREFECT_API_URL", prefect_api_url)  # the session's server, not a new ephemeral one
    ws = Workspace.from_env(tmp_path / "home").ensure()
    add_model(ws, "tiny", str(tiny_model_dir))

    run_cli("ingest", "debian", str(debian_case), "--model", "tiny", home=ws.home, check=True)
    assert not ws.catalog_path.exists()  # nothing of the catalog on this disk
    from embedline.storage import catalog
    from embedline.storage.store_identity import MARKER
    assert (ws.home / "lance" / MARKER).read_text() == catalog.catalog_id(ws)  # the store is the catalog's
    runs = json.loads(run_cli("sql", "SELECT count(*) AS n, min(status) AS s FROM runs", "--format", "json",
                              home=ws.home, check=True).stdout)
    assert runs == [{"n": 1, "s": "succeeded"}]
    docs = json.loads(run_cli("sql", "SELECT count(DISTINCT doc_id) AS n FROM debian", "--format", "json",
                              home=ws.home, check=True).stdout)
    assert docs[0]["n"] > 100
    versions = json.loads(run_cli("versions", "debian", "--json", home=ws.home, check=True).stdout)
    assert [(v["validation"], v["aliases"]) for v in versions] == [("passed", ["prod"])]
    title = json.loads(debian_case.read_text().splitlines()[3])["title"]
    hits = json.loads(run_cli("search", "debian", title, "-k", "3", "--json", home=ws.home,
                              check=True).stdout)
    assert len(hits) == 3 and all(h["doc_id"] for h in hits)
    again = run_cli("ingest", "debian", str(debian_case), "--model", "tiny", home=ws.home, check=True)
    latest = "SELECT chunks_embedded AS c FROM runs ORDER BY run_id DESC LIMIT 1"
    unchanged = json.loads(run_cli("sql", latest, "--format", "json", home=ws.home, check=True).stdout)
    assert unchanged == [{"c": 0}], again.stdout
    run_cli("sql", "UPDATE runs SET device = 'by-hand' WHERE run_id = 1", "--write", home=ws.home, check=True)
    edited = run_cli("sql", "SELECT device FROM runs WHERE run_id = 1", "--format", "csv", home=ws.home,
                     check=True).stdout.split()
    assert edited == ["device", "by-hand"]  # --write attaches the Postgres catalog itself
    schema = run_cli("sql", "--schema", home=ws.home, check=True).stdout
    assert "runs" in schema and "pg_" not in schema and "information_schema" not in schema

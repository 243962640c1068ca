"""The `embedline` console script as users run it: one-line errors, formats, read-only SQL."""

import json

import pytest

from tests.conftest import ingest, run_cli


@pytest.fixture(scope="module")
def ingested(tmp_path_factory, tiny_model_dir):
    """One ingested workspace shared by the read-only CLI tests of this module."""
    from storage.workspace import Workspace
    from tasks.models import add_model
    from tests.conftest import DEBIAN_CASE

    ws = Workspace.from_env(tmp_path_factory.mktemp("cli") / "home").ensure()
    add_model(ws, "tiny", str(tiny_model_dir))
    ingest(ws, DEBIAN_CASE)
    return ws


def test_sql_refuses_a_write_without_the_write_flag(ingested):
    result = run_cli("sql", "DELETE FROM runs", home=ingested.home)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: DELETE is a write and this session is read-only: pass --write to allow it"
    ]
    count = run_cli("sql", "SELECT count(*) AS n FROM runs", "--format", "json", home=ingested.home, check=True)
    assert json.loads(count.stdout) == [{"n": 1}]


def test_sql_write_flag_allows_a_write(ingested):
    run_cli("sql", "DELETE FROM quarantine", "--write", home=ingested.home, check=True)


def test_sql_embed_query_in_three_formats(ingested):
    query = ("SELECT doc_id, array_cosine_similarity(vector, embed('tiling window manager')) AS s "
             "FROM debian ORDER BY s DESC LIMIT 5")
    as_json = json.loads(run_cli("sql", query, "--format", "json", home=ingested.home, check=True).stdout)
    assert len(as_json) == 5 and set(as_json[0]) == {"doc_id", "s"}
    assert as_json == sorted(as_json, key=lambda r: -r["s"])
    as_csv = run_cli("sql", query, "--format", "csv", home=ingested.home, check=True).stdout.splitlines()
    assert as_csv[0] == "doc_id,s" and len(as_csv) == 6
    as_table = run_cli("sql", query, home=ingested.home, check=True).stdout.splitlines()
    assert as_table[0].split() == ["doc_id", "s"] and as_table[-1] == "(5 rows)"


def test_search_json_lists_doc_ids_titles_and_scores(ingested):
    from tests.conftest import DEBIAN_CASE

    record = json.loads(DEBIAN_CASE.read_text().splitlines()[0])
    hits = json.loads(run_cli("search", "debian", record["title"], "-k", "4", "--json", home=ingested.home, check=True).stdout)
    assert len(hits) == 4
    assert set(hits[0]) == {"score", "doc_id", "title", "chunk_index", "text"}
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)


@pytest.mark.parametrize("bad", ["../etc", "Debian", "drop table x", "a__b", "runs"])
def test_bad_corpus_names_get_a_one_line_error(workspace, bad):
    result = run_cli("search", bad, "anything", home=workspace.home)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "corpus name" in result.stderr


def test_unknown_corpus_and_bad_sql_say_what_to_do(workspace):
    missing = run_cli("search", "nothing_here", "text", home=workspace.home)
    assert missing.returncode == 3 and "embedline ingest" in missing.stderr
    bad_sql = run_cli("sql", "SELEC 1", home=workspace.home)
    assert bad_sql.returncode == 2 and bad_sql.stderr.startswith("error: SQL does not parse")


def test_versions_and_models_list(ingested):
    versions = json.loads(run_cli("versions", "debian", "--json", home=ingested.home, check=True).stdout)
    assert [(v["validation"], v["aliases"]) for v in versions] == [("passed", ["prod"])]
    models = json.loads(run_cli("models", "list", "--json", home=ingested.home, check=True).stdout)
    assert [(m["name"], m["dim"], m["pooling"]) for m in models] == [("tiny", 32, "mean")]

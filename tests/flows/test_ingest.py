"""The ingest flow end to end on real Prefect, LanceDB, DuckDB and GX, with a tiny random BERT."""

import json
import subprocess
import sys

import pytest

from embedline.storage import catalog, sql
from embedline.tasks.search import make_embedder, search_corpus
from tests.conftest import ingest


def test_ingest_makes_a_promoted_version_whose_rows_sql_counts(workspace, debian_case):
    summary = ingest(workspace, debian_case)

    assert summary.status == "succeeded" and summary.promoted
    assert summary.docs_read == 120 and summary.docs_new == 120 and summary.docs_quarantined == 0
    con = sql.connect(workspace, make_embedder(workspace))
    assert con.execute("SELECT count(*) FROM debian").fetchone()[0] == summary.chunks_embedded
    assert con.execute("SELECT count(DISTINCT doc_id) FROM debian").fetchone()[0] == 120
    run = con.execute("SELECT status, docs_read, chunks_embedded, version FROM runs").fetchall()
    assert run == [("succeeded", 120, summary.chunks_embedded, summary.version)]
    version = con.execute("SELECT space, version, tag, validation, row_count FROM versions").fetchall()
    assert version == [
        ("debian__tiny", summary.version, f"run-{summary.run_id}", "passed", summary.chunks_embedded)
    ]
    alias = catalog.get_alias(workspace, "debian")
    assert (alias["space"], alias["version"]) == ("debian__tiny", summary.version)


def test_metadata_fields_become_columns(workspace, debian_case):
    ingest(workspace, debian_case)
    con = sql.connect(workspace)
    section, tags = con.execute(
        "SELECT section, tags FROM debian WHERE doc_id = ?", [_first_id(debian_case)]
    ).fetchone()
    source = json.loads(debian_case.read_text().splitlines()[0])
    assert section == source["section"] and tags == source["tags"]
    assert con.execute("SELECT typeof(vector) FROM debian LIMIT 1").fetchone()[0] == "FLOAT[32]"


def test_second_ingest_of_the_same_file_is_a_new_run_without_duplicates(workspace, debian_case):
    first = ingest(workspace, debian_case)
    second = ingest(workspace, debian_case)

    assert second.run_id == first.run_id + 1
    assert (second.docs_unchanged, second.chunks_embedded, second.version) == (120, 0, None)
    con = sql.connect(workspace)
    total, distinct = con.execute("SELECT count(*), count(DISTINCT chunk_id) FROM debian__tiny").fetchone()
    assert total == distinct == first.chunks_embedded
    assert con.execute("SELECT count(*) FROM runs WHERE status = 'succeeded'").fetchone()[0] == 2


def test_search_finds_a_document_by_its_own_text(workspace, debian_case):
    ingest(workspace, debian_case)
    record = _short_records(debian_case)[0]
    hits = search_corpus(workspace, "debian", record["text"], k=3)
    assert hits[0]["text"] == record["text"].strip()
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert record["id"] in {h["doc_id"] for h in hits}


def test_sql_embed_ranks_a_document_first_by_its_own_text(workspace, debian_case):
    ingest(workspace, debian_case)
    record = _short_records(debian_case)[1]
    con = sql.connect(workspace, make_embedder(workspace))
    doc_id, text, score = con.execute(
        "SELECT doc_id, text, array_cosine_similarity(vector, embed(?)) AS s FROM debian ORDER BY s DESC LIMIT 1",
        [record["text"]],
    ).fetchone()
    assert score == pytest.approx(1.0, abs=1e-4)
    assert text == record["text"].strip()


def test_malformed_line_is_quarantined_with_file_and_line(workspace, tmp_path):
    source = tmp_path / "bad.jsonl"
    good = [
        {"id": f"d{i}", "title": f"t{i}", "text": f"document number {i} about tiling window managers"}
        for i in range(4)
    ]
    lines = [
        json.dumps(good[0]),
        json.dumps(good[1]),
        '{"id": "broken", "text": ',
        json.dumps(good[2]),
        json.dumps(good[3]),
    ]
    source.write_text("\n".join(lines) + "\n")

    summary = ingest(workspace, source, corpus="bad")

    assert (summary.docs_read, summary.docs_new, summary.docs_quarantined) == (5, 4, 1)
    assert summary.quarantine_reasons == [f"{source}:3: invalid JSON (Expecting value at column 26)"]
    con = sql.connect(workspace)
    assert con.execute("SELECT position, reason LIKE '%invalid JSON%' FROM quarantine").fetchall() == [
        (3, True)
    ]
    saved = (workspace.quarantine_dir / f"run-{summary.run_id}.jsonl").read_text()
    assert '{\\"id\\": \\"broken\\", \\"text\\": ' in saved  # the raw line is kept whole


def test_table_opens_with_plain_lancedb_in_another_process(workspace, debian_case):
    summary = ingest(workspace, debian_case)
    code = (
        "import lancedb, sys; t = lancedb.connect(sys.argv[1]).open_table('debian__tiny');"
        "print(t.count_rows(), t.schema.field('vector').type)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, workspace.lance_uri], capture_output=True, text=True, check=True
    )
    assert out.stdout.split(maxsplit=1) == [
        str(summary.chunks_embedded),
        "fixed_size_list<item: float>[32]\n",
    ]


def _short_records(path) -> list[dict]:
    """Records whose text is one chunk even for the tiny model's 64-token window."""
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return [r for r in records if len(r["text"]) < 120]


def _first_id(path) -> str:
    return json.loads(path.read_text().splitlines()[0])["id"]

"""Versions, aliases, time travel, maintenance, ANN recall, filtered and hybrid search."""

import json
from datetime import timedelta
from pathlib import Path

import pytest

from embedline.storage import catalog, embeddings, sql
from embedline.errors import BadInput, NotFound
from embedline.storage.maintenance import maintain_space
from embedline.tasks.search import make_embedder, search_corpus
from tests.conftest import ingest, run_cli

EXAMPLES = Path(__file__).resolve().parents[2] / "embedline" / "data" / "debian-2k.jsonl.gz"


def rewrite(path: Path, doc_index: int, text: str) -> str:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    records[doc_index]["text"] = text
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return records[doc_index]["id"]


def prod_version(ws) -> int:
    return catalog.get_alias(ws, "debian")["version"]


def test_promote_and_rollback_move_prod_and_sql_follows(workspace, debian_case):
    v1 = ingest(workspace, debian_case).version
    doc = rewrite(debian_case, 2, "second edition of this text")
    v2 = ingest(workspace, debian_case).version
    rewrite(debian_case, 2, "third edition of this text")
    v3 = ingest(workspace, debian_case).version
    assert prod_version(workspace) == v3

    assert catalog.rollback(workspace, "debian")["version"] == v2
    assert catalog.rollback(workspace, "debian")["version"] == v1
    with pytest.raises(NotFound):
        catalog.rollback(workspace, "debian")
    text = sql.connect(workspace).execute("SELECT text FROM debian WHERE doc_id = ?", [doc]).fetchone()[0]
    assert text != "second edition of this text" and text != "third edition of this text"

    catalog.promote(workspace, "debian", v3)
    con = sql.connect(workspace)
    assert con.execute("SELECT text, version FROM debian WHERE doc_id = ?", [doc]).fetchone() == (
        "third edition of this text",
        v3,
    )
    listed = catalog.list_versions(workspace, "debian")
    assert [(v["version"], v["aliases"]) for v in listed] == [(v1, []), (v2, []), (v3, ["prod"])]
    with pytest.raises(NotFound):
        catalog.promote(workspace, "debian", 999)


def test_cli_promote_rollback_and_refusing_a_failed_version(workspace, debian_case):
    v1 = ingest(workspace, debian_case).version
    rewrite(debian_case, 0, "changed")
    v2 = ingest(workspace, debian_case).version
    out = run_cli("rollback", "debian", home=workspace.home, check=True).stdout
    assert out.startswith(f"debian prod → debian__tiny version {v1} (was version {v2}); held: ")
    with catalog.writing(workspace) as con:
        con.execute("UPDATE versions SET validation = 'failed', failures = 'x' WHERE version = ?", [v2])
    with pytest.raises(BadInput, match="failed validation"):
        catalog.promote(workspace, "debian", v2)
    refused = run_cli("promote", "debian", str(v2), home=workspace.home)
    assert refused.returncode == 3 and "--force" in refused.stderr
    run_cli("promote", "debian", str(v2), "--force", home=workspace.home, check=True)
    assert prod_version(workspace) == v2


def test_time_travel_views_return_old_content_after_an_update(workspace, debian_case):
    v1 = ingest(workspace, debian_case).version
    doc = rewrite(debian_case, 4, "brand new text")
    v2 = ingest(workspace, debian_case).version
    con = sql.connect(workspace, make_embedder(workspace))
    old = con.execute(f"SELECT text FROM debian__tiny__v{v1} WHERE doc_id = ?", [doc]).fetchall()
    new = con.execute(f"SELECT text FROM debian__tiny__v{v2} WHERE doc_id = ?", [doc]).fetchall()
    assert new == [("brand new text",)] and old and old != new
    names = {row[0] for row in sql.describe(con)}
    assert {
        f"debian__tiny__v{v1}",
        f"debian__tiny__v{v2}",
        "debian",
        "debian__tiny",
        "runs",
        "embed",
    } <= names


def test_maintenance_keeps_tagged_and_aliased_versions(workspace, debian_case):
    v1 = ingest(workspace, debian_case).version
    rewrite(debian_case, 1, "edited once")
    v2 = ingest(workspace, debian_case).version
    catalog.promote(workspace, "debian", v1)
    done = maintain_space(workspace, "debian__tiny", retention=timedelta(0))
    assert done["versions_after"] < done["versions_before"]
    assert {"run-1", "run-2"} <= set(done["tags"])
    for version in (v1, v2):
        assert embeddings.dataset_at(workspace, "debian__tiny", version).count_rows() > 0
    assert sql.connect(workspace).execute("SELECT count(*) FROM debian").fetchone()[0] > 0


@pytest.fixture
def indexed(workspace, monkeypatch):
    monkeypatch.setenv("EMBEDLINE_INDEX_MIN_ROWS", "1000")
    summary = ingest(workspace, EXAMPLES)
    return workspace, summary


def test_ann_index_is_built_past_the_threshold_with_measured_recall(indexed):
    ws, summary = indexed
    (version,) = catalog.list_versions(ws, "debian")
    assert summary.chunks_embedded > 1000
    assert version["index_type"] == "IVF_HNSW_SQ"
    assert version["index_recall"] >= 0.95
    table = embeddings.open_space(ws, "debian__tiny")
    assert {i.name for i in table.list_indices()} >= {"vector_idx", "text_idx", "doc_id_idx"}


def test_filtered_search_returns_only_matching_rows(indexed):
    ws, _ = indexed
    vector = make_embedder(ws)("tiny", ["library for parsing"])[0]
    hits = embeddings.search(ws, "debian__tiny", prod_version(ws), vector, 10, "section = 'libs'",
                             ["doc_id", "section"])
    assert len(hits) == 10 and {h["section"] for h in hits} == {"libs"}


def test_hybrid_search_finds_an_exact_keyword(indexed):
    ws, _ = indexed
    hits = search_corpus(ws, "debian", "xmonad", k=5, hybrid=True)
    assert "xmonad" in {h["doc_id"] for h in hits}


def test_an_indexed_space_answers_any_k_up_to_its_rows(indexed):
    """HNSW refused an `ef` (100) below k x refine (4): every vector search over 25 hits failed."""
    ws, summary = indexed
    for k in (26, 300):
        assert len(search_corpus(ws, "debian", "library for parsing", k=k)) == k
        assert len(search_corpus(ws, "debian", "library for parsing", k=k, hybrid=True)) == k

"""Versions, aliases, time travel, maintenance, ANN recall, filtered and hybrid search."""

import json
import shutil
from datetime import timedelta
from pathlib import Path

import pytest

from embedline.storage import catalog, embeddings, sql
from embedline.errors import BadInput, NotFound
from embedline.storage.maintenance import maintain_space
from embedline.tasks.evaluation import revalidate_version
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


def test_maintenance_prunes_versions_no_alias_or_rollback_needs(workspace, debian_case):
    """Every run's version is tagged: without pruning, a nightly maintain never frees a run's space."""
    from embedline.flows.maintain import maintain_corpus

    space = "debian__tiny"
    versions = [ingest(workspace, debian_case).version]
    for edit in range(3):
        rewrite(debian_case, 1, f"edit {edit}")
        versions.append(ingest(workspace, debian_case).version)
    v1, v2, v3, v4 = versions
    catalog.promote(workspace, "debian", v1, alias="audit")  # an alias keeps its version, however old
    lines = maintain_corpus("debian", retention_days=7, keep_versions=1)
    assert "pruned" not in lines[0]  # every version is younger than the retention

    # a maintain killed after the catalog marked v2 pruned, before it dropped the tag: the tag stays
    assert catalog.prune_versions(workspace, space, 2, catalog.now())[0] == 1
    assert "run-2" in embeddings.open_space(workspace, space).tags.list()
    (line,) = maintain_corpus("debian", retention_days=0, keep_versions=1)
    assert "1 old run version(s) pruned" in line  # v3; v2's tag is dropped too
    assert set(embeddings.open_space(workspace, space).tags.list()) == {"run-1", "run-4"}
    pruned = {v["version"]: v["pruned_at"] is not None for v in catalog.list_versions(workspace, "debian")}
    assert pruned == {v1: False, v2: True, v3: True, v4: False}
    for version in (v2, v3):
        with pytest.raises(Exception):  # their data is gone
            embeddings.dataset_at(workspace, space, version).count_rows()
        with pytest.raises(NotFound, match="removed by `embedline maintain`"):
            catalog.promote(workspace, "debian", version)
        with pytest.raises(NotFound, match="removed by `embedline maintain`"):
            revalidate_version(workspace, "debian", version)
    assert embeddings.dataset_at(workspace, space, v1).count_rows() > 0
    with pytest.raises(NotFound, match=f"version {v3} was removed"):  # prod came from v3
        catalog.rollback(workspace, "debian")
    assert prod_version(workspace) == v4
    con = sql.connect(workspace)
    names = {row[0] for row in sql.describe(con)}
    assert {f"{space}__v{v1}", f"{space}__v{v4}"} <= names
    assert not {f"{space}__v{v2}", f"{space}__v{v3}"} & names
    assert con.execute("SELECT count(*) FROM debian").fetchone()[0] > 0
    assert "pruned" not in maintain_corpus("debian", retention_days=0, keep_versions=1)[0]  # nothing left


def test_a_sql_session_opened_while_maintain_prunes_opens_without_the_pruned_views(
        workspace, debian_case, monkeypatch):
    from embedline.flows.maintain import maintain_corpus

    for edit in range(3):
        rewrite(debian_case, 1, f"edit {edit}")
        ingest(workspace, debian_case)
    snapshot = sql._snapshot_catalog

    def snapshot_then_maintain(con, ws, for_sql=None):  # the nightly maintain, in another process
        snapshot(con, ws, for_sql)
        maintain_corpus("debian", retention_days=0, keep_versions=1)

    monkeypatch.setattr(sql, "_snapshot_catalog", snapshot_then_maintain)
    con = sql.connect(workspace)  # failed with NotFound: the snapshot listed the versions just pruned
    views = {name for name, kind, _ in sql.describe(con) if kind == "view"}
    assert f"debian__tiny__v{prod_version(workspace)}" in views and len(views) == 3  # prod, head, v<prod>
    assert con.execute("SELECT count(*) FROM debian").fetchone()[0] > 0


def test_maintenance_drops_the_tags_of_runs_killed_before_the_catalog_recorded_them(workspace, debian_case):
    ingest(workspace, debian_case)
    run_id = catalog.start_run(workspace, "debian", "tiny", "debian__tiny", str(debian_case), {}, "k", "c",
                               "cpu", "fp32")
    table = embeddings.open_space(workspace, "debian__tiny")
    table.tags.create(f"run-{run_id}", table.version)  # its commit was tagged, then it was killed
    maintain_space(workspace, "debian__tiny", retention=timedelta(0))  # marks it abandoned first
    assert catalog.get_run(workspace, run_id)["status"] == "abandoned"
    assert set(embeddings.open_space(workspace, "debian__tiny").tags.list()) == {"run-1"}


def test_a_catalog_older_than_the_pruned_table_is_refused_before_anything_changes(
        workspace, debian_case, tmp_path):
    from embedline.errors import CatalogMismatch
    from embedline.flows.maintain import maintain_corpus

    ingest(workspace, debian_case)
    shutil.copy(workspace.catalog_path, tmp_path / "backup.duckdb")
    for edit in range(2):
        rewrite(debian_case, 1, f"edit {edit}")
        ingest(workspace, debian_case)
    maintain_corpus("debian", retention_days=0, keep_versions=1)
    shutil.copy(tmp_path / "backup.duckdb", workspace.catalog_path)  # its clean head was pruned since
    latest = embeddings.latest_version(workspace, "debian__tiny")
    rewrite(debian_case, 2, "after the restore")
    with pytest.raises(CatalogMismatch, match="restore a newer backup"):  # was Lance's raw ValueError
        ingest(workspace, debian_case)
    assert embeddings.latest_version(workspace, "debian__tiny") == latest


def test_a_catalog_whose_prod_was_pruned_since_its_backup_is_refused_and_sql_still_opens(
        workspace, debian_case, tmp_path):
    from embedline.errors import CatalogMismatch
    from embedline.flows.maintain import maintain_corpus

    v1 = ingest(workspace, debian_case).version
    rewrite(debian_case, 1, "edited")
    v2 = ingest(workspace, debian_case).version
    catalog.rollback(workspace, "debian")  # prod held at v1 ...
    shutil.copy(workspace.catalog_path, tmp_path / "backup.duckdb")  # ... in the backup
    catalog.promote(workspace, "debian", v2)
    maintain_corpus("debian", retention_days=0, keep_versions=1)  # v1 goes
    shutil.copy(tmp_path / "backup.duckdb", workspace.catalog_path)
    assert prod_version(workspace) == v1
    with pytest.raises(CatalogMismatch, match=rf"versions \[{v1}\]"):  # a run passed, and prod stayed broken
        ingest(workspace, debian_case)
    views = {name for name, kind, _ in sql.describe(sql.connect(workspace)) if kind == "view"}
    assert "debian" not in views and "debian__tiny" in views  # failed every corpus's session before


def test_a_store_without_the_catalogs_table_is_refused_by_runs_and_sql(workspace, debian_case):
    """A host pointed at the wrong store: a run would trust the catalog's documents and embed only the
    changed ones into a new, nearly empty table; SQL would open a session without the corpus's views."""
    from embedline.errors import CatalogMismatch

    ingest(workspace, debian_case)
    shutil.rmtree(Path(workspace.lance_uri) / "debian__tiny.lance")
    rewrite(debian_case, 1, "edited")
    with pytest.raises(CatalogMismatch, match="no such table"):
        ingest(workspace, debian_case)
    with pytest.raises(NotFound, match="debian__tiny"):
        sql.connect(workspace)


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

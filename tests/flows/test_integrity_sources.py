"""The source side of integrity, through the real ingest flow: a bad source never deletes good data, a
metadata change never blocks a corpus, and CSV, glob and `version` fields work as documented."""

import json
import os
import random

import pytest

from embedline.errors import BadInput
from embedline.storage import catalog, embeddings, sql
from tests.conftest import DEBIAN_CASE, ingest, run_cli

SLICE = 12  # documents of the Debian case these tests start from: small keeps the flow quick


def records(count: int = SLICE) -> list[dict]:
    return [json.loads(line) for line in DEBIAN_CASE.read_text().splitlines()[:count]]


def write_jsonl(path, rows: list) -> str:
    """Dicts become JSON lines; strings are written as they are (malformed lines)."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def chunks_by_doc(ws, view: str = "debian") -> dict[str, int]:
    con = sql.connect(ws)
    try:
        return dict(con.execute(f"SELECT doc_id, count(*) FROM {view} GROUP BY doc_id").fetchall())
    finally:
        con.close()


def quarantine_reasons(ws, run_id: int) -> dict[str, str]:
    con = sql.connect(ws)
    try:
        return dict(
            con.execute("SELECT doc_id, reason FROM quarantine WHERE run_id = ?", [run_id]).fetchall()
        )
    finally:
        con.close()


@pytest.fixture
def served(workspace, tmp_path) -> tuple[list[dict], dict[str, int]]:
    """The Debian slice ingested and promoted; returns its records and chunks per document."""
    rows = records()
    ingest(workspace, write_jsonl(tmp_path / "first.jsonl", rows))
    return rows, chunks_by_doc(workspace)


# -- C2: a bad source deletes no good data ---------------------------------------------------------
@pytest.mark.parametrize("edit", ["empty", "too_long", "duplicate"])
def test_a_known_document_whose_new_record_is_rejected_keeps_its_chunks(workspace, tmp_path, served, edit):
    rows, before = served
    target = dict(rows[3])
    if edit == "empty":
        rows[3] = {**target, "text": "   "}
    elif edit == "too_long":
        rows[3] = {**target, "text": "x" * 1_000_001}
    else:
        rows.append({**target, "text": "a second record with the same id"})

    summary = ingest(workspace, write_jsonl(tmp_path / "second.jsonl", rows))

    assert (summary.docs_deleted, summary.docs_quarantined) == (0, 1)
    assert chunks_by_doc(workspace) == before
    reason = quarantine_reasons(workspace, summary.run_id)[target["id"]]
    if edit == "duplicate":
        assert "duplicate id" in reason  # the first record is the document: nothing to keep serving
    else:
        assert reason.endswith("the document's previous version keeps serving")


def test_a_line_whose_id_cannot_be_read_deletes_nothing(workspace, tmp_path, served):
    rows, before = served
    kept = rows[:-2] + ['{"id": "broken", "text": ']

    summary = ingest(workspace, write_jsonl(tmp_path / "second.jsonl", kept))

    assert (summary.docs_deleted, summary.docs_quarantined, summary.docs_unchanged) == (0, 1, SLICE - 2)
    assert chunks_by_doc(workspace) == before
    assert "deletions skipped" in summary.quarantine_reasons[0]
    assert (
        ingest(workspace, write_jsonl(tmp_path / "third.jsonl", rows[:-2])).docs_deleted == 2
    )  # clean: deletes


@pytest.mark.parametrize("kind", ["file", "query"])
def test_an_empty_source_is_refused_naming_the_option_and_allowed_with_it(workspace, tmp_path, served, kind):
    _, before = served
    empty = write_jsonl(tmp_path / "empty.jsonl", [])
    source = empty if kind == "file" else f"query:SELECT * FROM read_json_auto('{DEBIAN_CASE}') WHERE false"

    with pytest.raises(BadInput, match=r"would delete 12 of 12 documents.*--max-delete-share"):
        ingest(workspace, source)

    assert chunks_by_doc(workspace) == before
    summary = ingest(workspace, source, max_delete_share=1.0)
    assert summary.docs_deleted == SLICE and chunks_by_doc(workspace, "debian__tiny") == {}


def test_the_cli_refuses_an_empty_source_with_exit_3_and_allows_it_with_the_option(
    workspace, tmp_path, served
):
    empty = write_jsonl(tmp_path / "empty.jsonl", [])
    refused = run_cli("ingest", "debian", empty, "--model", "tiny", home=workspace.home)
    assert refused.returncode == 3 and "--max-delete-share 1" in refused.stderr
    allowed = run_cli("ingest", "debian", empty, "--model", "tiny", "--max-delete-share", "1", "--json",
                      home=workspace.home, check=True)
    assert json.loads(allowed.stdout)[0]["docs_deleted"] == SLICE


def test_a_run_deleting_more_than_half_of_the_corpus_is_refused(workspace, tmp_path, served):
    rows, before = served
    source = write_jsonl(tmp_path / "second.jsonl", rows[:5])

    with pytest.raises(BadInput, match=r"would delete 7 of 12 documents \(58%\).*max_delete_share"):
        ingest(workspace, source)

    assert chunks_by_doc(workspace) == before
    summary = ingest(workspace, source, max_delete_share=0.6)
    assert summary.docs_deleted == 7
    gone = sum(count for doc_id, count in before.items() if doc_id not in {r["id"] for r in rows[:5]})
    assert catalog.get_run(workspace, summary.run_id)["chunks_deleted"] == gone >= 7  # counts reconcile


def test_a_new_corpus_from_an_empty_source_fails_without_a_version(workspace, tmp_path):
    with pytest.raises(BadInput, match="has no records"):
        ingest(workspace, write_jsonl(tmp_path / "empty.jsonl", []))
    assert catalog.get_alias(workspace, "debian") is None
    assert catalog.get_corpus(workspace, "debian") is None  # no corpus started


def test_a_refused_source_leaves_the_source_a_backfill_rereads(workspace, tmp_path, served):
    recorded = catalog.get_corpus(workspace, "debian")
    with pytest.raises(BadInput, match="does not exist"):
        ingest(workspace, str(tmp_path / "typo.jsonl"), id_field="key")
    with pytest.raises(BadInput, match="would delete"):
        ingest(workspace, write_jsonl(tmp_path / "empty.jsonl", []), title_field="name")
    assert catalog.get_corpus(workspace, "debian") == recorded  # neither the typo nor the empty file
    again = write_jsonl(tmp_path / "again.jsonl", served[0])
    ingest(workspace, again)
    assert catalog.get_corpus(workspace, "debian")["source"] == again  # a good run records its source


def test_a_blank_id_in_a_csv_deletes_nothing(workspace, tmp_path):
    import csv

    def write_csv(name: str, rows: list[dict]) -> str:
        with open(tmp_path / name, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=["id", "title", "text"])
            writer.writeheader()
            writer.writerows({k: r[k] for k in ("id", "title", "text")} for r in rows)
        return str(tmp_path / name)

    rows = records()
    ingest(workspace, write_csv("first.csv", rows))
    before = chunks_by_doc(workspace)
    rows[6] = {**rows[6], "id": "  "}

    summary = ingest(workspace, write_csv("second.csv", rows))

    assert (summary.docs_deleted, summary.docs_quarantined) == (0, 1)
    assert chunks_by_doc(workspace) == before
    assert "missing id" in summary.quarantine_reasons[0]
    assert "deletions skipped" in summary.quarantine_reasons[0]


def test_a_folder_that_cannot_be_listed_deletes_nothing_of_it(workspace, tmp_path, monkeypatch):
    folder = tmp_path / "docs"
    for name, text in [("pub/a.txt", "tiling window manager"), ("pub/c.txt", "secure shell server"),
                       ("priv/b.txt", "a text editor for programmers")]:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    ingest(workspace, str(folder), corpus="notes")
    scandir = os.scandir

    def refusing(path="."):  # EACCES, as `chmod 000 priv` gives any user but root (these tests run as root)
        if not isinstance(path, int) and os.fspath(path).rstrip("/").endswith("priv"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refusing)  # what os.walk, glob and rglob list folders with
    for source in (str(folder), f"{folder}/*/*.txt", f"{folder}/**/*.txt"):
        summary = ingest(workspace, source, corpus="notes")
        assert (summary.docs_read, summary.docs_deleted, summary.docs_quarantined) == (3, 0, 1), source
        assert "folder unreadable (Permission denied)" in summary.quarantine_reasons[0]
        assert "deletions skipped" in summary.quarantine_reasons[0]
        assert sorted(chunks_by_doc(workspace, "notes")) == ["priv/b.txt", "pub/a.txt", "pub/c.txt"]


# -- C3: metadata evolves ----------------------------------------------------------------------------
def first_run(ws, tmp_path) -> list[dict]:
    rows = [{"id": f"d{i}", "title": f"t{i}", "text": f"document {i} about window managers", "priority": i,
             "section": "x11"} for i in range(4)]
    ingest(ws, write_jsonl(tmp_path / "first.jsonl", rows), corpus="tickets")
    return rows


def test_missing_new_and_reordered_metadata_columns_land(workspace, tmp_path):
    rows = first_run(workspace, tmp_path)
    rows.append({"id": "d4", "text": "reordered fields", "section": "games", "title": "t4", "priority": 7})
    rows.append({"id": "d5", "title": "t5", "text": "no section, a new field", "priority": 8, "owner": "ana"})

    summary = ingest(workspace, write_jsonl(tmp_path / "second.jsonl", rows), corpus="tickets")

    assert (summary.status, summary.docs_new, summary.docs_quarantined) == ("succeeded", 2, 0)
    con = sql.connect(workspace)
    got = con.execute(
        "SELECT doc_id, priority, section, owner FROM tickets WHERE doc_id IN ('d0', 'd4', 'd5')"
        " ORDER BY doc_id"
    ).fetchall()
    assert got == [("d0", 0, "x11", None), ("d4", 7, "games", None), ("d5", 8, None, "ana")]
    assert con.execute(
        "SELECT type FROM metadata_columns WHERE corpus = 'tickets' AND name = 'owner'"
    ).fetchall() == [("string",)]


def test_a_value_of_another_type_is_coerced_or_quarantined_and_the_corpus_goes_on(workspace, tmp_path):
    rows = first_run(workspace, tmp_path)
    rows[1] = {**rows[1], "priority": "unknown", "text": "changed text"}
    rows.append({"id": "d4", "title": "t4", "text": "a priority given as text", "priority": "12"})

    summary = ingest(workspace, write_jsonl(tmp_path / "second.jsonl", rows), corpus="tickets")

    assert (summary.status, summary.docs_new, summary.docs_quarantined) == ("succeeded", 1, 1)
    assert quarantine_reasons(workspace, summary.run_id) == {
        "d1": "metadata 'priority'='unknown' is not int64; the document's previous version keeps serving"}
    con = sql.connect(workspace)
    assert con.execute(
        "SELECT doc_id, priority, text FROM tickets WHERE doc_id IN ('d1', 'd4') ORDER BY doc_id"
    ).fetchall() == [("d1", 1, "document 1 about window managers"), ("d4", 12, "a priority given as text")]
    again = ingest(workspace, write_jsonl(tmp_path / "third.jsonl", rows), corpus="tickets")
    assert (again.status, again.docs_unchanged, again.docs_quarantined) == ("succeeded", 4, 1)


# -- C9: CSV, glob sources, a field named `version` -------------------------------------------------
def test_csv_with_a_200_kb_field_ingests(workspace, tmp_path):
    words = " ".join(r["text"] for r in records(120)).split()
    body = " ".join(random.Random(0).choices(words, k=40_000))  # no two chunks alike: the gates pass
    assert len(body) > 200_000
    path = tmp_path / "big.csv"
    quoted = body.replace('"', '""')  # CSV escapes a quote inside a quoted field by doubling it
    path.write_text(f'id,title,text\nbig,Big,"{quoted}"\nsmall,Small,a small document\n')

    summary = ingest(workspace, path, corpus="csvs")

    assert (summary.status, summary.docs_new, summary.docs_quarantined) == ("succeeded", 2, 0)
    assert set(chunks_by_doc(workspace, "csvs")) == {"big", "small"}


def test_a_glob_source_ingests_the_matching_files(workspace, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in [
        ("b.md", "# Tiling\nwindow managers"),
        ("a.md", "# Editors\ntext editors"),
        ("c.txt", "other"),
    ]:
        (docs / name).write_text(text)

    summary = ingest(workspace, f"{docs}/*.md", corpus="notes")

    assert (summary.status, summary.docs_new) == ("succeeded", 2)
    assert set(chunks_by_doc(workspace, "notes")) == {"a.md", "b.md"}


def test_a_field_named_version_is_meta_version_in_the_sql_view(workspace, served):
    rows, _ = served
    con = sql.connect(workspace)
    columns = [c[0] for c in con.execute("DESCRIBE debian").fetchall()]
    meta_version, version = con.execute("SELECT meta_version, version FROM debian WHERE doc_id = ? LIMIT 1",
                                        [rows[0]["id"]]).fetchone()
    assert meta_version == rows[0]["version"] and version == catalog.get_alias(workspace, "debian")["version"]
    assert "version_1" not in columns and columns.count("version") == 1


def test_a_space_written_before_the_prefix_shows_its_version_field_as_meta_version(
    workspace, tmp_path, served
):
    from embedline.storage import embeddings

    rows, _ = served
    embeddings.open_space(workspace, "debian__tiny").alter_columns(
        {"path": "meta_version", "rename": "version"}
    )
    rows[0] = {**rows[0], "text": rows[0]["text"] + " Changed.", "version": "9.9-1"}

    ingest(workspace, write_jsonl(tmp_path / "second.jsonl", rows))

    con = sql.connect(workspace)
    got = dict(con.execute("SELECT DISTINCT doc_id, meta_version FROM debian WHERE doc_id IN (?, ?)",
                           [rows[0]["id"], rows[1]["id"]]).fetchall())
    assert got == {rows[0]["id"]: "9.9-1", rows[1]["id"]: rows[1]["version"]}
    assert [c[0] for c in con.execute("DESCRIBE debian").fetchall()].count("version") == 1


def test_a_new_corpus_whose_first_run_failed_takes_its_column_types_from_its_first_good_run(
    workspace, tmp_path
):
    from embedline.errors import ValidationFailed

    rows = [
        {"id": f"d{i}", "title": f"t{i}", "text": f"ticket {i} about a crash", "priority": i}
        for i in range(4)
    ]
    catalog.set_gates(workspace, "tickets", {"norm_tolerance": -1.0})  # no chunk passes (stored as is)
    with pytest.raises(ValidationFailed):
        ingest(workspace, write_jsonl(tmp_path / "first.jsonl", rows), corpus="tickets")
    for row in rows:  # the operator fixes the data: priorities are words
        row["priority"] = "high" if row["priority"] % 2 else "low"
    catalog.set_gates(workspace, "tickets", {})

    summary = ingest(workspace, write_jsonl(tmp_path / "second.jsonl", rows), corpus="tickets")

    assert (summary.status, summary.docs_new, summary.docs_quarantined) == ("succeeded", 4, 0)
    assert sql.connect(workspace).execute(
        "SELECT doc_id, priority FROM tickets ORDER BY doc_id"
    ).fetchall() == [("d0", "low"), ("d1", "high"), ("d2", "low"), ("d3", "high")]
    failed = [v for v in catalog.list_versions(workspace, "tickets") if v["validation"] == "failed"][0]
    kept = embeddings.dataset_at(workspace, failed["space"], failed["version"])  # still there to inspect
    assert (kept.count_rows(), str(kept.schema.field("priority").type)) == (4, "int64")

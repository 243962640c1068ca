"""Planning a run: capped runs defer the rest; rejected records and a bad source never delete good documents;
metadata types are kept per corpus, coerced where lossless, misfits quarantined."""

import json

import pytest

from embedline.errors import BadInput
from embedline.tasks.changes import (
    coerce_value,
    column_name,
    defer_beyond,
    plan_changes,
    read_staged_documents,
)
from embedline.tasks.sources import FieldMap
from tests.conftest import DEBIAN_CASE


def staged_ids(plan) -> list[str]:
    return [d for batch in read_staged_documents(plan.docs_path) for d in batch.column("doc_id").to_pylist()]


def test_defer_beyond_keeps_the_highest_priority_documents_and_reconciles(tmp_path):
    plan = plan_changes(str(DEBIAN_CASE), FieldMap(), {}, "model-key", "chunk-key", tmp_path / "run")
    ids = staged_ids(plan)
    priority = {doc_id: float(i % 7) for i, doc_id in enumerate(ids)}

    capped = defer_beyond(plan, 50, priority)

    kept = staged_ids(capped)
    assert len(kept) == 50 and min(priority[d] for d in kept) >= max(
        priority[d] for d in set(ids) - set(kept)
    )
    c = capped.counts
    assert (c["docs_new"], c["docs_deferred"]) == (50, 70)
    assert (
        c["docs_read"]
        == c["docs_new"]
        + c["docs_changed"]
        + c["docs_unchanged"]
        + c["docs_quarantined"]
        + c["docs_deferred"]
    )
    assert staged_ids(defer_beyond(plan, 30)) == ids[:30]  # no priority: source order
    assert defer_beyond(plan, 500) is plan


def write_jsonl(path, *records) -> str:
    """A JSONL file of `records`: dicts become JSON lines, strings are written as they are."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return str(path)


def doc(doc_id: str, text: str = "some text", **metadata) -> dict:
    return {"id": doc_id, "title": doc_id.upper(), "text": text, **metadata}


def plan_of(tmp_path, source: str, known: dict | None = None, fields: FieldMap | None = None, **kwargs):
    return plan_changes(
        source, fields or FieldMap(), known or {}, "model-key", "chunk-key", tmp_path / "run", **kwargs
    )


def reconciles(counts: dict) -> bool:
    return counts["docs_read"] == (counts["docs_new"] + counts["docs_changed"] + counts["docs_unchanged"]
                                   + counts["docs_quarantined"] + counts.get("docs_deferred", 0))


def test_a_rejected_record_of_a_known_document_keeps_it_and_says_so(tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", doc("empty", "  "), doc("long", "x" * 50), doc("dup"),
                         doc("dup", "second copy"), doc("fine"))
    known = dict.fromkeys(("empty", "long", "dup", "fine"), "old-key")

    result = plan_of(tmp_path, source, known, FieldMap(max_chars=40))

    assert result.deleted_doc_ids == [] and result.counts["docs_deleted"] == 0
    reasons = {row["doc_id"]: row["reason"] for row in result.quarantined}
    assert reasons["empty"].endswith("; the document's previous version keeps serving")
    assert reasons["long"].endswith("; the document's previous version keeps serving")
    assert "keeps serving" not in reasons["dup"]  # its first record is the new version
    assert sorted(result.changed_doc_ids) == ["dup", "fine"] and reconciles(result.counts)


def test_a_record_whose_id_cannot_be_read_stops_every_deletion(tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", doc("a"), '{"id": "b", "text": ', doc("c"))
    known = dict.fromkeys(("a", "b", "gone"), "old-key")

    result = plan_of(tmp_path, source, known)

    assert result.deleted_doc_ids == [] and result.counts["docs_deleted"] == 0
    (row,) = result.quarantined
    assert "invalid JSON" in row["reason"] and "deletions skipped" in row["reason"]
    assert reconciles(result.counts)


@pytest.mark.parametrize("kept, refused", [(1, True), (2, False)])
def test_deleting_more_than_the_allowed_share_is_refused_naming_the_option(tmp_path, kept, refused):
    known = dict.fromkeys(("a", "b", "c", "d"), "old-key")
    source = write_jsonl(tmp_path / "in.jsonl", *[doc(d) for d in "abcd"[:kept]])
    if refused:
        with pytest.raises(BadInput, match=r"would delete 3 of 4 documents .*max_delete_share"):
            plan_of(tmp_path, source, known)
    else:
        assert plan_of(tmp_path, source, known).deleted_doc_ids == ["c", "d"]
    assert plan_of(tmp_path, source, known, max_delete_share=1.0).counts["docs_deleted"] == 4 - kept


def test_an_empty_source_deletes_nothing_unless_allowed_and_never_starts_a_corpus(tmp_path):
    empty = write_jsonl(tmp_path / "empty.jsonl")
    with pytest.raises(BadInput, match=r"would delete 2 of 2 documents .*--max-delete-share 1"):
        plan_of(tmp_path, empty, {"a": "k", "b": "k"})
    assert plan_of(tmp_path, empty, {"a": "k", "b": "k"}, max_delete_share=1.0).deleted_doc_ids == ["a", "b"]
    with pytest.raises(BadInput, match="has no records"):
        plan_of(tmp_path, empty, {})
    assert plan_of(tmp_path, empty, {"a": "k"}, keep_deleted=True).deleted_doc_ids == []


def test_metadata_types_are_kept_coerced_where_lossless_and_misfits_quarantined(tmp_path):
    source = write_jsonl(
        tmp_path / "in.jsonl",
        doc("a", priority=1, section=5), doc("b", priority="unknown"), doc("c", priority="12", added=1),
        doc("d", priority=3.0, added=2.5), doc("e", priority=1.5), doc("f", flag=True, tags=["x"]))
    recorded = {"section": "string", "priority": "int64", "gone": "bool"}

    result = plan_of(tmp_path, source, {"b": "old-key"}, metadata_types=recorded)

    assert result.metadata_types == {
        "section": "string",
        "priority": "int64",
        "gone": "bool",
        "added": "double",
        "flag": "bool",
        "tags": "list<string>",
    }
    reasons = {row["doc_id"]: row["reason"] for row in result.quarantined}
    assert reasons == {
        "b": "metadata 'priority'='unknown' is not int64; the document's previous version keeps serving",
        "e": "metadata 'priority'=1.5 is not int64",
    }
    assert staged_ids(result) == ["a", "c", "d", "f"] and reconciles(result.counts)


@pytest.mark.parametrize(
    "value, kind, expected",
    [
        (1, "double", 1.0),
        ("12", "int64", 12),
        (3.0, "int64", 3),
        (5, "string", "5"),
        (["a", 1], "string", '["a", 1]'),
        ("x", "list<string>", ["x"]),
        ("true", "bool", True),
        ("2.5", "double", 2.5),
        (None, "int64", None),
    ],
)
def test_coerce_value_keeps_every_value_whole(value, kind, expected):
    assert coerce_value(value, kind) == expected


@pytest.mark.parametrize(
    "value, kind",
    [
        ("unknown", "int64"),
        (1.5, "int64"),
        ("01", "int64"),
        (True, "int64"),
        ("yes", "bool"),
        (1, "bool"),
        ("abc", "double"),
        ({"k": 1}, "list<string>"),
    ],
)
def test_coerce_value_refuses_what_it_would_change(value, kind):
    with pytest.raises(ValueError):
        coerce_value(value, kind)


def test_field_names_that_collide_with_chunk_or_view_columns_get_a_prefix():
    assert [column_name(n) for n in ("version", "model", "text", "Section", "2nd")] == [
        "meta_version", "meta_model", "meta_text", "section", "meta_2nd"]


def test_metadata_types_are_kept_per_column_so_a_renamed_field_shares_its_columns_type(tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", doc("a", version="2.1-1"), doc("b", version=3))

    result = plan_of(tmp_path, source, metadata_types={"meta_version": "string", "section": "string"})

    assert result.metadata_types == {"meta_version": "string", "section": "string"}
    assert staged_ids(result) == ["a", "b"] and result.quarantined == []  # 3 fits a string column as "3"


def test_two_metadata_fields_that_become_one_column_are_refused_naming_both():
    from embedline.tasks.changes import fit_metadata

    types: dict = {}
    reason = fit_metadata({"Due Date": "2026-01-01", "due_date": "2026-02-02"}, types, set())
    assert reason == "metadata fields 'Due Date' and 'due_date' both become column 'due_date'; rename one"
    assert types == {}  # a refused record leaves no trace in the schema
    assert fit_metadata({"Due Date": "2026-01-01"}, types, set()) is None and types == {"due_date": "string"}

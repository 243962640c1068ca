"""The diff in the database: for any sequence of source edits, the plan's counts reconcile and equal a plain
Python computation of new / changed / unchanged / quarantined / deleted; the catalog's streamed rows give
the same plan as a mapping, on both catalog backends."""

import json

import pyarrow as pa
from hypothesis import HealthCheck, given, settings, strategies as st

from embedline.storage import catalog
from embedline.tasks import changes
from embedline.tasks.changes import plan_changes, read_staged_documents
from embedline.tasks.sources import FieldMap
from tests.storage.test_catalog_backends import make_workspace

IDS = [f"d{i}" for i in range(10)]
TYPES = {"n": "int64"}
BROKEN = "broken"  # a line whose id cannot be read

versions = st.tuples(st.sampled_from(["alpha", "beta"]), st.sampled_from([1, 2]))
records = st.one_of(
    st.tuples(st.sampled_from(IDS), st.sampled_from(["alpha", "beta", " "]), st.sampled_from([1, 2, "bad"])),
    st.just(BROKEN),
)


def write_source(path, rows) -> str:
    lines = ['{"id": "x", "text": ' if row == BROKEN else json.dumps(dict(zip(("id", "text", "n"), row)))
             for row in rows]
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


def staged(plan) -> list[str]:
    return [d for batch in read_staged_documents(plan.docs_path) for d in batch.column("doc_id").to_pylist()]


def known_keys(tmp_path, base: dict) -> dict[str, str]:
    """doc_id → change key of `base` as a first run records it (a plan with nothing known stages each)."""
    source = write_source(tmp_path / "base.jsonl", [(d, text, n) for d, (text, n) in base.items()])
    plan = plan_changes(source, FieldMap(), {}, "mk", "ck", tmp_path / "base", metadata_types=TYPES)
    rows = [r for batch in read_staged_documents(plan.docs_path) for r in batch.to_pylist()]
    return {r["doc_id"]: r["change_key"] for r in rows}


def reference(base: dict, orphans: set, rows: list) -> dict:
    """What the plan must say, computed record by record in plain Python."""
    out = {"new": [], "changed": [], "staged": [], "unchanged": 0, "quarantined": [], "unreadable": False}
    documents, seen, accepted = set(), set(), set()
    for row in rows:
        if row == BROKEN:
            out["quarantined"].append(None)
            out["unreadable"] = True
            continue
        doc_id, text, n = row
        seen.add(doc_id)
        if not text.strip() or doc_id in documents:  # empty text; a duplicate of an earlier document
            out["quarantined"].append(doc_id)
            continue
        documents.add(doc_id)
        if doc_id in base and base[doc_id] == (text, n):
            out["unchanged"] += 1
            accepted.add(doc_id)
        elif n == "bad":  # not an int64: a misfit is quarantined
            out["quarantined"].append(doc_id)
        else:
            out["changed" if doc_id in base or doc_id in orphans else "new"].append(doc_id)
            out["staged"].append(doc_id)
            accepted.add(doc_id)
    absent = (set(base) | orphans) - seen
    out["deleted"] = [] if out["unreadable"] and absent else sorted(absent)
    out["keeps_serving"] = {d for d in out["quarantined"] if d in set(base) | orphans and d not in accepted}
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    base=st.dictionaries(st.sampled_from(IDS), versions, max_size=8),
    orphans=st.sets(st.sampled_from(IDS), max_size=2),
    rows=st.lists(records, max_size=14),
    batch=st.sampled_from([1, 3, 16_384]),
)
def test_the_database_diff_reconciles_and_matches_a_python_reference(tmp_path_factory, monkeypatch, base,
                                                                     orphans, rows, batch):
    tmp_path = tmp_path_factory.mktemp("diff")
    monkeypatch.setattr(changes, "DIFF_BATCH", batch)  # batches split anywhere give the same plan
    orphans = orphans - set(base)
    known = {**(known_keys(tmp_path, base) if base else {}), **dict.fromkeys(orphans, "orphan")}
    source = write_source(tmp_path / "edit.jsonl", rows)
    if not rows and not known:
        return  # a new corpus with an empty source is refused (tested in test_changes.py)

    plan = plan_changes(source, FieldMap(), known, "mk", "ck", tmp_path / "run", max_delete_share=1.0,
                        metadata_types=TYPES, scratch=tmp_path / "scratch")

    want, c = reference(base, orphans, rows), plan.counts
    assert c["docs_read"] == len(rows) == c["docs_new"] + c["docs_changed"] + c["docs_unchanged"] + c[
        "docs_quarantined"]
    assert (c["docs_new"], c["docs_changed"], c["docs_unchanged"], c["docs_quarantined"]) == (
        len(want["new"]), len(want["changed"]), want["unchanged"], len(want["quarantined"]))
    assert staged(plan) == want["staged"]  # in source order
    assert sorted(plan.changed_doc_ids) == sorted(want["changed"])
    assert plan.deleted_doc_ids == want["deleted"] and c["docs_deleted"] == len(want["deleted"])
    if not want["unreadable"]:  # deleted = known − seen
        assert set(plan.deleted_doc_ids) == set(known) - {row[0] for row in rows if row != BROKEN}
    assert [q["doc_id"] for q in plan.quarantined] == want["quarantined"]
    serving = {q["doc_id"] for q in plan.quarantined if q["reason"].endswith("version keeps serving")}
    assert serving == want["keeps_serving"]
    assert list((tmp_path / "scratch").iterdir()) == []  # the scratch tables go with the plan


def test_the_catalogs_streamed_documents_plan_as_a_mapping_does(tmp_path, catalog_url):
    ws = make_workspace(tmp_path, catalog_url)
    space = "debian__tiny"
    known = {f"d{i}": f"key-{i}" for i in range(5)}
    run_id = catalog.start_run(ws, "debian", "tiny", space, "src", {}, "mk", "ck", "cpu", "fp32")
    documents = pa.table({"doc_id": list(known), "content_hash": list(known.values()),
                          "change_key": list(known.values()), "chunk_count": [1] * len(known)})
    catalog.finish_run(ws, run_id, counts={}, seconds=0.1, documents_arrow=documents,
                       deleted_doc_ids=[], quarantined=[], version=None, promote_to=None)
    source = write_source(tmp_path / "in.jsonl", [("d0", "alpha", 1), ("d1", "beta", 2), ("d7", "alpha", 1)])

    streamed = plan_changes(source, FieldMap(), catalog.space_documents(ws, space), "mk", "ck",
                            tmp_path / "a", max_delete_share=1.0)
    mapped = plan_changes(source, FieldMap(), known, "mk", "ck", tmp_path / "b", max_delete_share=1.0)

    assert streamed.counts == mapped.counts and streamed.counts["docs_changed"] == 2
    assert streamed.deleted_doc_ids == mapped.deleted_doc_ids == ["d2", "d3", "d4"]
    assert streamed.changed_doc_ids == mapped.changed_doc_ids == ["d0", "d1"]


def test_a_killed_run_s_scratch_folder_is_swept_when_a_run_ends(workspace):
    from embedline.tasks.publishing import clear_staging, scratch_dir

    running = catalog.start_run(workspace, "debian", "tiny", "debian__tiny", "src", {}, "mk", "ck", "cpu",
                                "fp32")
    left, live = scratch_dir(workspace, running + 1000), scratch_dir(workspace, running)
    for folder in (left, live):  # a dead run's diff tables (kill -9), and those of a run still going
        (folder / "diff-x").mkdir(parents=True)
        (folder / "diff-x" / "diff.duckdb").write_bytes(b"scratch")
    clear_staging(workspace)
    assert not left.exists() and (live / "diff-x" / "diff.duckdb").exists()

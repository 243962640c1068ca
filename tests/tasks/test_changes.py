"""Capped runs: `defer_beyond` keeps the documents that come first and counts the rest as deferred."""

from embedline.tasks.changes import defer_beyond, plan_changes, read_staged_documents
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
    assert len(kept) == 50 and min(priority[d] for d in kept) >= max(priority[d] for d in set(ids) - set(kept))
    c = capped.counts
    assert (c["docs_new"], c["docs_deferred"]) == (50, 70)
    assert c["docs_read"] == c["docs_new"] + c["docs_changed"] + c["docs_unchanged"] + c["docs_quarantined"] + c["docs_deferred"]
    assert staged_ids(defer_beyond(plan, 30)) == ids[:30]  # no priority: source order
    assert defer_beyond(plan, 500) is plan

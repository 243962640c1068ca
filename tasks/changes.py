"""Diff a source against what the space already holds: new, changed, unchanged, deleted.

The change key of a document is its content hash + the model key + the chunking key, so a new
model (weights, pooling, Dense layers, prompts) or chunk size marks every document it affects as
changed; a precision change does not (precision is provenance, see `tasks/models.py`).
"""

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from embedline.tasks.documents import Document, Rejected
from embedline.tasks.sources import FieldMap, read_source

STAGED_DOCS = pa.schema([
    ("doc_id", pa.string()), ("title", pa.string()), ("text", pa.string()), ("metadata", pa.string()),
    ("content_hash", pa.string()), ("change_key", pa.string()),
])


@dataclass
class ChangePlan:
    """What a run must do. Small: documents to embed are staged on disk at `docs_path`."""

    docs_path: str
    counts: dict
    deleted_doc_ids: list[str]
    changed_doc_ids: list[str]
    quarantined: list[dict]
    metadata_types: dict[str, str] = field(default_factory=dict)

    @property
    def replace_doc_ids(self) -> list[str]:
        """Documents whose old chunks must go: changed (stale chunks) and deleted."""
        return self.changed_doc_ids + self.deleted_doc_ids


def change_key(content_hash: str, model_key: str, chunk_key: str) -> str:
    return hashlib.sha256(f"{content_hash}|{model_key}|{chunk_key}".encode()).hexdigest()[:32]


def plan_changes(
    source: str,
    fields: FieldMap,
    known: dict[str, str],
    model_key: str,
    chunk_key: str,
    staging_dir: Path,
    keep_deleted: bool = False,
) -> ChangePlan:
    """Stream `source`, stage the documents that need embedding, and count everything."""
    staging_dir.mkdir(parents=True, exist_ok=True)
    docs_path = staging_dir / "documents.arrow"
    counts = dict.fromkeys(("docs_read", "docs_new", "docs_changed", "docs_unchanged", "docs_quarantined"), 0)
    changed, quarantined, seen, types = [], [], set(), {}
    pending: list[dict] = []
    with pa.OSFile(str(docs_path), "wb") as sink, pa.ipc.new_stream(sink, STAGED_DOCS) as writer:
        for item in read_source(source, fields):
            counts["docs_read"] += 1
            if isinstance(item, Rejected):
                counts["docs_quarantined"] += 1
                quarantined.append(_quarantine_row(item))
                continue
            seen.add(item.doc_id)
            content = item.content_hash()
            key = change_key(content, model_key, chunk_key)
            previous = known.get(item.doc_id)
            if previous == key:
                counts["docs_unchanged"] += 1
                continue
            if previous is None:
                counts["docs_new"] += 1
            else:
                counts["docs_changed"] += 1
                changed.append(item.doc_id)
            _note_types(types, item)
            pending.append(_staged_row(item, content, key))
            if len(pending) >= 1024:
                writer.write_batch(pa.RecordBatch.from_pylist(pending, schema=STAGED_DOCS))
                pending = []
        if pending:
            writer.write_batch(pa.RecordBatch.from_pylist(pending, schema=STAGED_DOCS))
    deleted = [] if keep_deleted else sorted(set(known) - seen)
    counts["docs_deleted"] = len(deleted)
    return ChangePlan(str(docs_path), counts, deleted, changed, quarantined, types)


def defer_beyond(plan: ChangePlan, limit: int, priority: dict[str, float] | None = None) -> ChangePlan:
    """Keep `limit` of the staged documents — highest `priority` first (absent: lowest), else source
    order — and count the rest as deferred: a later run finds them still to embed. Their old chunks
    stay until then; deletions are not deferred."""
    ids = [doc_id for batch in read_staged_documents(plan.docs_path) for doc_id in batch.column("doc_id").to_pylist()]
    if len(ids) <= limit:
        return plan
    ranked = sorted(range(len(ids)), key=lambda i: -priority.get(ids[i], float("-inf"))) if priority else range(len(ids))
    keep = {ids[i] for i in list(ranked)[:limit]}
    path = Path(plan.docs_path).with_name("documents.selected.arrow")
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, STAGED_DOCS) as writer:
        for batch in read_staged_documents(plan.docs_path):
            mask = pa.array([doc_id in keep for doc_id in batch.column("doc_id").to_pylist()])
            writer.write_batch(batch.filter(mask))
    changed = set(plan.changed_doc_ids)
    kept_changed = [d for d in plan.changed_doc_ids if d in keep]
    counts = {**plan.counts, "docs_changed": len(kept_changed),
              "docs_new": sum(1 for d in keep if d not in changed), "docs_deferred": len(ids) - len(keep)}
    return ChangePlan(str(path), counts, plan.deleted_doc_ids, kept_changed, plan.quarantined, plan.metadata_types)


def split_plan(plan: ChangePlan, shards: int) -> list[ChangePlan]:
    """Split the staged documents into `shards` files of about equal text length (each document goes
    whole to the lightest shard so far); deletions and counts stay with the parent plan."""
    folder = Path(plan.docs_path).parent
    sizes, counts = [0] * shards, [0] * shards
    pending: list[list[dict]] = [[] for _ in range(shards)]
    paths = [folder / f"shard-{i}" / "documents.arrow" for i in range(shards)]
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
    sinks = [pa.OSFile(str(path), "wb") for path in paths]
    writers = [pa.ipc.new_stream(sink, STAGED_DOCS) for sink in sinks]
    try:
        for batch in read_staged_documents(plan.docs_path):
            for row in batch.to_pylist():
                lightest = sizes.index(min(sizes))
                sizes[lightest] += len(row["text"]) + 1
                counts[lightest] += 1
                pending[lightest].append(row)
                if len(pending[lightest]) >= 1024:
                    writers[lightest].write_batch(pa.RecordBatch.from_pylist(pending[lightest], schema=STAGED_DOCS))
                    pending[lightest] = []
        for writer, rows in zip(writers, pending):
            if rows:
                writer.write_batch(pa.RecordBatch.from_pylist(rows, schema=STAGED_DOCS))
    finally:
        for writer, sink in zip(writers, sinks):
            writer.close()
            sink.close()
    return [ChangePlan(str(path), {"docs_new": n, "docs_changed": 0}, [], [], [], plan.metadata_types)
            for path, n in zip(paths, counts)]


def read_staged_documents(path: str):
    """Batches of staged documents (pyarrow RecordBatch), in source order."""
    with pa.OSFile(path, "rb") as source:
        yield from pa.ipc.open_stream(source)


def _staged_row(doc: Document, content: str, key: str) -> dict:
    return {
        "doc_id": doc.doc_id, "title": doc.title, "text": doc.text,
        "metadata": json.dumps(doc.metadata, default=str, ensure_ascii=False),
        "content_hash": content, "change_key": key,
    }


def _quarantine_row(item: Rejected) -> dict:
    return {"source": item.source, "position": item.position, "reason": item.reason,
            "raw": item.raw, "doc_id": item.doc_id}


def _note_types(types: dict[str, str], doc: Document) -> None:
    """Remember each metadata field's type from its first value (later values are coerced)."""
    for name, value in doc.metadata.items():
        if name not in types:
            types[name] = _type_name(value)


def _type_name(value) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int64"
    if isinstance(value, float):
        return "double"
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "list<string>"
    return "string"

"""Diff a source against what the space already holds: new, changed, unchanged, deleted.

The change key of a document is its content hash + the model key + the chunking key, so a new
model (weights, pooling, Dense layers, prompts) or chunk size marks every document it affects as
changed; a precision change does not (precision is provenance, see `tasks/models.py`).
"""

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
import tempfile
from pathlib import Path

import pyarrow as pa

from embedline.errors import BadInput
from embedline.redaction import redact
from embedline.storage import files
from embedline.storage.document_diff import DocumentDiff, KnownRows, open_diff
from embedline.storage.embeddings import BASE_FIELDS
from embedline.tasks.documents import Document, Rejected
from embedline.tasks.sources import FieldMap, read_source

# Names a metadata field cannot take: the chunk columns, and `model` / `version`, which the SQL views add.
RESERVED_NAMES = frozenset(BASE_FIELDS) | {"model", "version"}
DIFF_BATCH = 16_384  # source records per join (each scans the known documents; 65,536: same time, +76 MB)
MAX_DIFF_BATCH = 131_072  # past 500k known documents batches grow so that a run makes ~32 scans, up to this

STAGED_DOCS = pa.schema([
    ("doc_id", pa.string()), ("title", pa.string()), ("text", pa.string()), ("metadata", pa.string()),
    ("content_hash", pa.string()), ("change_key", pa.string()),
])


@dataclass
class ChangePlan:
    """What a run must do. Small: documents to embed are staged in the file store at `docs_path` (a store
    URI: a local path, or s3://... that a shard on another machine reads too)."""

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
    known: Mapping[str, str] | KnownRows,
    model_key: str,
    chunk_key: str,
    staging: str,
    keep_deleted: bool = False,
    max_delete_share: float = 0.5,
    metadata_types: dict[str, str] | None = None,
    scratch: Path | None = None,
) -> ChangePlan:
    """Stream `source`, stage the documents that need embedding under `staging` (a store URI), and
    count everything.

    `known`: doc_id → change key of what the space holds (`catalog.space_documents`, or a mapping).
    The diff runs in DuckDB (`storage.document_diff`): each batch of the source is joined with the known
    documents, the absent ones are an anti-join at the end; Python holds a batch and what changed. Its
    scratch DuckDB file is local to this process, whatever the store is: a temporary folder under
    `scratch` (the run's, so a sweep finds what a killed run left), else the system's.

    A bad source never deletes good data: a rejected record of a known document keeps its old chunks
    serving, a record whose id cannot be read stops every deletion of the run, and deleting more than
    `max_delete_share` of the known documents is refused. `metadata_types` (column → type, as the
    catalog keeps them for the corpus) are kept; a value that does not fit losslessly quarantines its
    record, and columns new to the corpus get the narrowest type that holds all their values.
    """
    _check_share(max_delete_share)
    docs_path = files.join(str(staging), "documents.arrow")
    counts = dict.fromkeys(("docs_read", "docs_new", "docs_changed", "docs_unchanged", "docs_quarantined"), 0)
    changed, quarantined = [], []
    types, recorded = dict(metadata_types or {}), set(metadata_types or {})
    if scratch is not None:
        scratch.mkdir(parents=True, exist_ok=True)
    with (tempfile.TemporaryDirectory(prefix="diff-", dir=scratch) as folder,
          _StagedWriter(docs_path) as staged, open_diff(Path(folder) / "diff.duckdb", known) as diff):
        size = min(max(DIFF_BATCH, diff.known_count() // 32), MAX_DIFF_BATCH)  # each batch scans `known`
        for items in _batches(read_source(source, fields), size):
            keyed = [_keys(item, model_key, chunk_key) for item in items]
            previous = diff.previous_keys([item.doc_id for item in items if isinstance(item, Document)])
            seen = []  # (doc_id, accepted: the record is the document's current version)
            for item, (content, key) in zip(items, keyed):
                counts["docs_read"] += 1
                if isinstance(item, Document):
                    before = previous.get(item.doc_id)
                    if before == key:
                        counts["docs_unchanged"] += 1
                        seen.append((item.doc_id, True))
                        continue
                    misfit = fit_metadata(item.metadata, types, recorded)
                    if misfit is None:
                        counts["docs_new" if before is None else "docs_changed"] += 1
                        changed += [] if before is None else [item.doc_id]
                        seen.append((item.doc_id, True))
                        staged.add(_staged_row(item, content, key))
                        continue
                    raw = _raw_document(item, fields)
                    item = Rejected(item.source, item.position, misfit, raw, item.doc_id)
                counts["docs_quarantined"] += 1
                quarantined.append(_quarantine_row(item))
                if item.doc_id is not None:
                    seen.append((item.doc_id, False))
            diff.add_seen(seen)
        deleting = _deletion_count(diff, quarantined, keep_deleted)
        total = diff.known_count()
        try:
            _check_deletions(source, counts["docs_read"], deleting, total, max_delete_share)
        except BadInput:
            staged.discard()
            raise
        deleted = diff.absent_ids() if deleting else []
    counts["docs_deleted"] = len(deleted)
    return ChangePlan(docs_path, counts, deleted, changed, quarantined, types)


def _batches(items: Iterable, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _keys(item: Document | Rejected, model_key: str, chunk_key: str) -> tuple[str | None, str | None]:
    """A document's content hash and change key; (None, None) for a rejected record."""
    if not isinstance(item, Document):
        return None, None
    content = item.content_hash()
    return content, change_key(content, model_key, chunk_key)


def _deletion_count(diff: DocumentDiff, quarantined: list[dict], keep_deleted: bool) -> int:
    """How many documents the run deletes, and why a quarantined record deletes nothing, said on its row:
    a known document keeps serving its previous version; an unreadable id keeps every absent document."""
    unreadable = [row for row in quarantined if row["doc_id"] is None]
    kept = diff.kept_known([row["doc_id"] for row in quarantined if row["doc_id"] is not None])
    for row in quarantined:
        if row["doc_id"] in kept:
            row["reason"] += "; the document's previous version keeps serving"
    absent = 0 if keep_deleted else diff.absent_count()
    if unreadable and absent:
        for row in unreadable:
            row["reason"] += (f"; deletions skipped this run: {absent} documents absent from the source "
                              "are kept, since a record's id could not be read")
        return 0
    return absent


def _check_share(share: float) -> None:
    if not 0 <= share <= 1:
        raise BadInput(f"max_delete_share {share} must be between 0 and 1 (1 allows deleting every document)")


def _check_deletions(source: str, read: int, deleting: int, total: int, max_share: float) -> None:
    """Refuse a source with no records for a new corpus, and deletions over `max_share` of the known
    documents: an empty file or a query with no rows would otherwise publish an empty version."""
    source = redact(source)  # a query's connection string stays out of errors, logs and Prefect states
    if read == 0 and total == 0:
        raise BadInput(f"source {source} has no records: nothing to ingest; check the path or query")
    if total and deleting > max_share * total:
        raise BadInput(
            f"this run would delete {deleting} of {total} documents ({deleting / total:.0%}), over the "
            f"{max_share:.0%} allowed: check the source {source}; if the deletions are meant, re-run with "
            f"--max-delete-share 1 (Python: max_delete_share=1.0), or keep them with --keep-deleted")


def defer_beyond(plan: ChangePlan, limit: int, priority: dict[str, float] | None = None) -> ChangePlan:
    """Keep `limit` of the staged documents — highest `priority` first (absent: lowest), else source
    order — and count the rest as deferred: a later run finds them still to embed. Their old chunks
    stay until then; deletions are not deferred."""
    if limit < 1:  # a backfill deferring all but `limit` documents would loop forever
        raise BadInput(f"max_embed {limit}: embed at least 1 document per run")
    ids = [
        doc_id
        for batch in read_staged_documents(plan.docs_path)
        for doc_id in batch.column("doc_id").to_pylist()
    ]
    if len(ids) <= limit:
        return plan
    ranked = (
        sorted(range(len(ids)), key=lambda i: -priority.get(ids[i], float("-inf")))
        if priority
        else range(len(ids))
    )
    keep = {ids[i] for i in list(ranked)[:limit]}
    path = files.join(files.parent(plan.docs_path), "documents.selected.arrow")
    with files.write_arrow(path, STAGED_DOCS) as writer:
        for batch in read_staged_documents(plan.docs_path):
            mask = pa.array([doc_id in keep for doc_id in batch.column("doc_id").to_pylist()])
            writer.write_batch(batch.filter(mask))
    changed = set(plan.changed_doc_ids)
    kept_changed = [d for d in plan.changed_doc_ids if d in keep]
    counts = {**plan.counts, "docs_changed": len(kept_changed),
              "docs_new": sum(1 for d in keep if d not in changed), "docs_deferred": len(ids) - len(keep)}
    return ChangePlan(
        path, counts, plan.deleted_doc_ids, kept_changed, plan.quarantined, plan.metadata_types
    )


def split_plan(plan: ChangePlan, shards: int) -> list[ChangePlan]:
    """Split the staged documents into `shards` files of about equal text length (each document goes
    whole to the lightest shard so far); deletions and counts stay with the parent plan."""
    folder = files.parent(plan.docs_path)
    sizes, counts = [0] * shards, [0] * shards
    pending: list[list[dict]] = [[] for _ in range(shards)]
    paths = [files.join(folder, f"shard-{i}", "documents.arrow") for i in range(shards)]
    writers: list[files.ArrowWriter] = []
    try:
        for path in paths:
            writers.append(files.write_arrow(path, STAGED_DOCS))
        for batch in read_staged_documents(plan.docs_path):
            for row in batch.to_pylist():
                lightest = sizes.index(min(sizes))
                sizes[lightest] += len(row["text"]) + 1
                counts[lightest] += 1
                pending[lightest].append(row)
                if len(pending[lightest]) >= 1024:
                    writers[lightest].write_batch(
                        pa.RecordBatch.from_pylist(pending[lightest], schema=STAGED_DOCS)
                    )
                    pending[lightest] = []
        for writer, rows in zip(writers, pending):
            if rows:
                writer.write_batch(pa.RecordBatch.from_pylist(rows, schema=STAGED_DOCS))
    finally:
        for writer in writers:
            writer.close()
    return [ChangePlan(path, {"docs_new": n, "docs_changed": 0}, [], [], [], plan.metadata_types)
            for path, n in zip(paths, counts)]


class _StagedWriter:
    """Documents to embed, appended to an Arrow stream file in batches of 1,024."""

    def __init__(self, uri: str):
        self._uri, self._discarded = uri, False
        self._writer = files.write_arrow(uri, STAGED_DOCS)
        self._pending: list[dict] = []

    def add(self, row: dict) -> None:
        self._pending.append(row)
        if len(self._pending) >= 1024:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._writer.write_batch(pa.RecordBatch.from_pylist(self._pending, schema=STAGED_DOCS))
            self._pending = []

    def discard(self) -> None:
        """Nothing of this plan is kept: the file is removed once closed."""
        self._discarded = True

    def __enter__(self) -> "_StagedWriter":
        return self

    def __exit__(self, *exc) -> None:
        try:
            if exc[0] is None:
                self._flush()
        finally:
            self._writer.close()
            if self._discarded:
                files.delete_file(self._uri)


def read_staged_documents(uri: str):
    """Batches of staged documents (pyarrow RecordBatch), in source order, streamed from the store."""
    yield from files.read_arrow(uri)


def _staged_row(doc: Document, content: str, key: str) -> dict:
    return {
        "doc_id": doc.doc_id, "title": doc.title, "text": doc.text,
        "metadata": json.dumps(doc.metadata, default=str, ensure_ascii=False),
        "content_hash": content, "change_key": key,
    }


def _raw_document(doc: Document, fields: FieldMap) -> str:
    """The record a document came from, rebuilt for the quarantine (its metadata did not fit)."""
    record = {fields.id_field: doc.doc_id, fields.title_field: doc.title, fields.text_field: doc.text,
              **doc.metadata}
    return json.dumps(record, default=str, ensure_ascii=False)


def _quarantine_row(item: Rejected) -> dict:
    return {"source": item.source, "position": item.position, "reason": item.reason,
            "raw": item.raw, "doc_id": item.doc_id}


def column_name(field: str) -> str:
    """Metadata fields keep their names unless they collide with a chunk or view column (or start with
    a digit): those get a `meta_` prefix, so a field `version` is the column `meta_version`."""
    safe = "".join(c if c.isalnum() or c == "_" else "_" for c in field.lower()) or "field"
    return f"meta_{safe}" if safe in RESERVED_NAMES or safe[0].isdigit() else safe


def fit_metadata(metadata: dict, types: dict[str, str], recorded: set[str]) -> str | None:
    """Check a document's metadata against the corpus's column types; None when it fits.

    A recorded column takes a value only where `coerce_value` keeps it whole; otherwise the reason
    names the field. Only a fitting document widens the types of columns new to the corpus, so a
    quarantined record leaves no trace in the schema. Two fields that become one column (`Due Date`
    and `due_date`) are refused rather than one silently overwriting the other.
    """
    seen: dict[str, str] = {}
    for name in metadata:
        other = seen.setdefault(column_name(name), name)
        if other != name:
            return (
                f"metadata fields {other!r} and {name!r} both become column {column_name(name)!r}; rename one"
            )
    for name, value in metadata.items():
        column = column_name(name)
        if column in recorded:
            try:
                coerce_value(value, types[column])
            except ValueError:
                shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
                return f"metadata {name!r}={shown} is not {types[column]}"
    for name, value in metadata.items():
        column = column_name(name)
        if column not in recorded:
            types[column] = _widen(types.get(column), _type_name(value))
    return None


def coerce_value(value, kind: str):
    """`value` as a column of `kind` holds it, or ValueError where that would change it: ints widen to
    double, anything becomes its JSON text in a string column, "12" is 12 in an int64 column, but 1.5
    and "unknown" are not."""
    if value is None:
        return None
    if kind == "string":
        return value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    if kind == "list<string>":
        if isinstance(value, str):
            return [value]
        if isinstance(value, list):
            return [
                v if isinstance(v, str) else json.dumps(v, default=str, ensure_ascii=False) for v in value
            ]
        raise ValueError(f"{value!r} is not a list of strings")
    return _SCALARS[kind](value)


def _to_int(value) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    elif isinstance(value, str) and value.strip().lstrip("-").isdigit() and str(int(value)) == value.strip():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not -2**63 <= value < 2**63:
        raise ValueError(f"{value!r} is not an int64")
    return value


def _to_float(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{value!r} is not a number")
    return float(value)  # a str that is no number raises ValueError


def _to_bool(value) -> bool:
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if not isinstance(value, bool):
        raise ValueError(f"{value!r} is not a bool")
    return value


_SCALARS = {"int64": _to_int, "double": _to_float, "bool": _to_bool}


def _widen(current: str | None, seen: str) -> str:
    """The narrowest type holding values of both types: int64 and double make double, any other mix string."""
    if current is None or current == seen:
        return seen
    return "double" if {current, seen} == {"int64", "double"} else "string"


def _type_name(value) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int64" if -2**63 <= value < 2**63 else "string"
    if isinstance(value, float):
        return "double"
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "list<string>"
    return "string"

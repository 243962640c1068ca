"""Chunk and embed the documents a plan staged, writing chunk rows with vectors to staging.

Rows stream through in bounded memory: documents → chunks → engine windows → Arrow batches in the file
store (local disk, or an object store that the run's other machines read too).
"""

import json
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from embedline.storage import files
from embedline.storage.embeddings import chunk_schema
from embedline.errors import EmbedlineError
from embedline.tasks.changes import ChangePlan, coerce_value, column_name, read_staged_documents
from embedline.tasks.chunking import ChunkParams, chunk_documents
from embedline.tasks.documents import Document
from embedline.tasks.embedding import Engine

DOC_SCHEMA = pa.schema([("doc_id", pa.string()), ("content_hash", pa.string()),
                        ("change_key", pa.string()), ("chunk_count", pa.int32())])
ARROW_TYPES = {"bool": pa.bool_(), "int64": pa.int64(), "double": pa.float64(),
               "list<string>": pa.list_(pa.string()), "string": pa.string()}


@dataclass
class EmbeddedBatch:
    """Staged output of one run (or of its shards): chunk rows with vectors, per-document chunk counts,
    as store URIs (never a machine's local path unless the store is that machine's folder)."""

    chunks_uris: list[str]
    documents_uris: list[str]
    chunk_count: int
    tokens: int
    seconds: float
    dim: int
    metadata_types: dict
    model_key: str = ""
    precisions: list[str] = field(default_factory=list)  # what each part ran under (provenance, not key)
    runtimes: list[str] = field(default_factory=list)  # what ran each part's forward passes (likewise)

    @property
    def precision(self) -> str:
        """The precisions its parts used, joined: "bf16", or "bf16+fp32" from a mixed pool."""
        return "+".join(self.precisions)

    @property
    def runtime(self) -> str:
        """The runtimes its parts used, joined: "openvino", or "openvino+torch" from a mixed pool."""
        return "+".join(self.runtimes)

    def schema(self) -> pa.Schema:
        return chunk_schema(self.dim, metadata_schema(self.metadata_types))

    def read_chunks(self) -> Iterator[pa.RecordBatch]:
        for uri in self.chunks_uris:
            yield from files.read_arrow(uri)

    def read_documents(self) -> pa.Table:
        return pa.concat_tables(
            [pa.Table.from_batches(list(files.read_arrow(uri)), DOC_SCHEMA) for uri in self.documents_uris])

    @classmethod
    def combine(cls, parts: list["EmbeddedBatch"], parallel: bool) -> "EmbeddedBatch":
        """One batch from shards embedded apart; refuses shards made under different model keys.
        Shards may differ in precision (each worker's own policy): the batch lists each one used.
        Its seconds: the longest shard's where they ran side by side (`parallel`), else their sum."""
        keys = {p.model_key for p in parts}
        if len(keys) != 1:
            raise EmbedlineError(
                f"shards were embedded under different model keys {sorted(keys)}: give every "
                "worker of the pool the same model files"
            )
        return cls(
            [c for p in parts for c in p.chunks_uris],
            [d for p in parts for d in p.documents_uris],
            sum(p.chunk_count for p in parts),
            sum(p.tokens for p in parts),
            (max if parallel else sum)(p.seconds for p in parts),
            parts[0].dim,
            parts[0].metadata_types,
            parts[0].model_key,
            sorted({precision for p in parts for precision in p.precisions}),
            sorted({runtime for p in parts for runtime in p.runtimes}),
        )


def metadata_schema(types: dict[str, str]) -> pa.Schema:
    """The metadata columns (column name → type name, as a plan keeps them) as Arrow fields."""
    return pa.schema([(column, ARROW_TYPES[kind]) for column, kind in types.items()])


def embed_documents(
    plan: ChangePlan,
    engine: Engine,
    params: ChunkParams,
    run_id: int,
    staging: str,
    on_progress: Callable[[int, int], None] | None = None,
) -> EmbeddedBatch:
    """Chunk + embed every staged document into `staging` (a store URI); `on_progress(docs_done,
    chunks_done)` after each window."""
    started = time.perf_counter()
    tokens_before = engine.tokens_embedded
    schema = chunk_schema(engine.spec.out_dim, metadata_schema(plan.metadata_types))
    chunks_path, docs_path = files.join(staging, "chunks.arrow"), files.join(staging, "chunk_counts.arrow")
    in_flight: deque[dict] = deque()
    chunk_counts: dict[str, int] = {}
    doc_rows: list[dict] = []
    total, docs_done = 0, 0

    templates: dict[str, dict] = {}

    def documents() -> Iterator[Document]:
        for doc, template in _documents(plan, doc_rows):
            templates[doc.doc_id] = template
            yield doc

    def rows() -> Iterator[str]:  # runs on the engine's helper thread, up to one window ahead of this one
        previous = None
        for chunk in chunk_documents(documents(), engine.tokenizer, params):
            if chunk.doc_id != previous:
                templates.pop(previous, None)  # its chunks are done: keep memory bounded
                previous = chunk.doc_id
            chunk_counts[chunk.doc_id] = chunk_counts.get(chunk.doc_id, 0) + 1
            template = templates[chunk.doc_id]
            in_flight.append({**template, "chunk_id": chunk.chunk_id, "chunk_index": chunk.chunk_index,
                              "text": chunk.text})
            yield chunk.text

    with files.write_arrow(chunks_path, schema) as writer:
        for vectors in engine.embed_stream(rows(), kind="document"):
            window = [in_flight.popleft() for _ in range(len(vectors))]
            writer.write_batch(_chunk_batch(window, vectors, schema, engine.spec.key(), run_id))
            total += len(window)
            docs_done = len(doc_rows)
            if on_progress:
                on_progress(docs_done, total)
    with files.write_arrow(docs_path, DOC_SCHEMA) as writer:
        for row in doc_rows:
            row["chunk_count"] = chunk_counts.get(row["doc_id"], 0)
        writer.write_table(pa.Table.from_pylist(doc_rows, schema=DOC_SCHEMA))
    return EmbeddedBatch(
        [chunks_path],
        [docs_path],
        total,
        engine.tokens_embedded - tokens_before,
        time.perf_counter() - started,
        engine.spec.out_dim,
        plan.metadata_types,
        engine.spec.key(),
        [engine.spec.precision],
        [engine.runtime],
    )


def _documents(plan: ChangePlan, doc_rows: list[dict]) -> Iterator[tuple[Document, dict]]:
    """Staged documents one at a time, each with the row fields its chunks share."""
    for batch in read_staged_documents(plan.docs_path):
        for staged in batch.to_pylist():
            metadata = json.loads(staged["metadata"])
            doc = Document(staged["doc_id"], staged["text"], staged["title"], metadata)
            by_column = {column_name(name): value for name, value in metadata.items()}
            doc_rows.append({"doc_id": doc.doc_id, "content_hash": staged["content_hash"],
                             "change_key": staged["change_key"]})
            template = {"doc_id": doc.doc_id, "title": doc.title}
            for column, kind in plan.metadata_types.items():
                template[column] = coerce_value(by_column.get(column), kind)  # the plan checked that it fits
            yield doc, template


def _chunk_batch(
    rows: list[dict], vectors: np.ndarray, schema: pa.Schema, model_key: str, run_id: int
) -> pa.RecordBatch:
    columns = {}
    for field in schema:
        if field.name == "vector":
            flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
            columns["vector"] = pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])
        elif field.name == "model_key":
            columns["model_key"] = pa.array([model_key] * len(rows), pa.string())
        elif field.name == "run_id":
            columns["run_id"] = pa.array([run_id] * len(rows), pa.int64())
        else:
            columns[field.name] = pa.array([r.get(field.name) for r in rows], field.type)
    return pa.RecordBatch.from_pydict(columns, schema=schema)

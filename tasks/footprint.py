"""What each storage option costs and gives on a corpus, measured on its own queries.

For every option (float32 exact search as the baseline, float16, Matryoshka-style truncation, and each
of Lance's vector index kinds) a copy of the prod version's vectors is laid out that way in a scratch
table, then searched with the corpus's golden queries (`golden/<corpus>.jsonl` in the file store), or, without
any, with the titles of its documents, each expected to find its own document. Per option: bytes per
stored vector, the index's bytes on disk, recall@10 against full-precision exact search (tie-aware: a
hit counts when its exact similarity reaches the exact 10th) searched as a space serves (nprobes,
ef, and re-ranking 4×k candidates on the stored vectors, `storage.index`) and without the re-ranking
(what the index alone finds), the share of queries whose expected document is among the hits, and
the p50 latency of a served search on an open dataset. The serving space is
only read; the scratch tables are removed after.
"""

import shutil
import tempfile
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from embedline.errors import BadInput, NotFound
from embedline.names import check_name
from embedline.storage import catalog, embeddings, store_identity
from embedline.storage.files import golden_key
from embedline.storage.index import INDEX_TYPES
from embedline.storage.scratch import build_scratch_space
from embedline.storage.vectors import bytes_per_vector
from embedline.tasks.embedding import get_engine
from embedline.tasks.evaluation import read_golden
from embedline.tasks.models import serving_spec
from embedline.workspace import Workspace

COLUMNS = ["option", "vectors", "dim", "index", "bytes_per_vector", "index_bytes", "index_bytes_per_vector",
           "recall_at_10", "recall_unrefined", "expected_doc_at_10", "p50_ms", "build_s"]
MIN_TRUNCATED_DIM = 8
TIE = 1e-5  # similarities within this of the exact 10th count as ties


@dataclass(frozen=True)
class Option:
    vectors: str
    dim: int
    index_type: str | None
    truncated: bool = False

    @property
    def name(self) -> str:
        """e.g. "float32 exact", "float32 exact 192d" (truncated), "float16 ivf_hnsw_sq"."""
        return f"{self.vectors} {self.index_type or 'exact'}" + (f" {self.dim}d" if self.truncated else "")


def footprint_options(dim: int) -> list[Option]:
    """Exact float32 (the baseline), exact float16, truncation to half and a quarter of the dimensions
    (while at least MIN_TRUNCATED_DIM), every index kind over float32, and SQ kinds over float16."""
    options = [Option("float32", dim, None), Option("float16", dim, None)]
    options += [Option("float32", d, None, True) for d in (dim // 2, dim // 4) if d >= MIN_TRUNCATED_DIM]
    options += [Option("float32", dim, kind) for kind in INDEX_TYPES]
    options += [Option("float16", dim, kind) for kind in ("ivf_sq", "ivf_hnsw_sq")]
    return options


def measure_footprint(ws: Workspace, corpus: str, queries: int = 200, k: int = 10, rounds: int = 3,
                      only: list[str] | None = None) -> list[dict]:
    """One row per storage option (see the module doc); `only` keeps the options whose name contains
    one of its strings (the exact float32 baseline is always measured)."""
    if queries < 1 or k < 1 or rounds < 1:
        raise BadInput("queries, k and rounds must be at least 1")
    alias = catalog.get_alias(ws, check_name(corpus, "corpus name"))
    if alias is None:
        raise catalog.no_alias(ws, corpus)
    store_identity.require_readable_store(ws)  # figures of another catalog's vectors would pass for these
    stored = embeddings.dataset_at(ws, alias["space"], alias["version"]).to_table(
        columns=["chunk_id", "doc_id", "chunk_index", "title", "vector"])
    matrix = embeddings.vector_matrix(stored.column("vector"))
    pairs = query_pairs(ws, corpus, stored, queries)
    vectors = get_engine(serving_spec(ws, alias)).embed([p["query"] for p in pairs], kind="query")
    truth = exact_kth(matrix, vectors, k)
    options = [o for i, o in enumerate(footprint_options(matrix.shape[1]))
               if i == 0 or not only or any(word in o.name for word in only)]
    root = ws.home / "scratch"
    root.mkdir(parents=True, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix="footprint-", dir=root)
    try:
        return [measure_option(scratch, n, option, stored, matrix, vectors, pairs, truth, k, rounds)
                for n, option in enumerate(options)]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def query_pairs(ws: Workspace, corpus: str, stored: pa.Table, limit: int) -> list[dict]:
    """The corpus's golden queries, else (title → its document) pairs drawn from the version itself."""
    pairs = read_golden(ws, corpus)
    if pairs:
        return pairs[:limit]
    first = stored.filter(pa.compute.equal(stored.column("chunk_index"), 0))
    seen, pairs = set(), []
    for doc_id, title in sorted(zip(first.column("doc_id").to_pylist(), first.column("title").to_pylist()),
                                key=lambda pair: hash_text(pair[0])):
        if title and title.strip() and title not in seen:
            seen.add(title)
            pairs.append({"query": title, "doc_id": doc_id})
        if len(pairs) == limit:
            break
    if not pairs:
        raise NotFound(f"corpus {corpus!r} has no golden queries and no titles to query with: write "
                       f"{golden_key(corpus)} in the file store "
                       '(JSONL of {"query": ..., "doc_id": ...})')
    return pairs


def hash_text(text: str) -> str:
    """A stable order of documents (Python's own hash of a str changes per process)."""
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()


def exact_kth(matrix: np.ndarray, queries: np.ndarray, k: int, block: int = 32) -> dict:
    """Unit chunk and query vectors (full precision), and each query's k-th best exact similarity;
    queries are scored a block at a time, so memory stays at the corpus's own size."""
    unit = matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    unit_queries = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    rank = min(k, len(unit)) - 1
    kth = np.concatenate([-np.partition(-(unit_queries[i:i + block] @ unit.T), rank, axis=1)[:, rank]
                          for i in range(0, len(unit_queries), block)])
    return {"unit": unit, "queries": unit_queries, "kth": kth}


def measure_option(scratch: str, number: int, option: Option, stored: pa.Table, matrix: np.ndarray,
                   queries: np.ndarray, pairs: list[dict], truth: dict, k: int, rounds: int) -> dict:
    """Lay the vectors out as `option`, search them with every query `rounds` times, and score the hits."""
    from pathlib import Path

    built = build_scratch_space(
        Path(scratch),
        f"option_{number}",
        stored.column("chunk_id"),
        stored.column("doc_id"),
        matrix[:, : option.dim],
        option.vectors,
        option.index_type,
    )
    dataset, position = built["dataset"], {c: i for i, c in enumerate(stored.column("chunk_id").to_pylist())}
    truncated = queries[:, : option.dim]
    embeddings.nearest_chunks(dataset, truncated[0], k, columns=["chunk_id"])  # warm-up: opens the files
    found, unrefined, hits_share, seconds = 0, 0, 0, []

    def correct(i: int, hits: list[dict]) -> int:
        exact = truth["unit"][[position[h["chunk_id"]] for h in hits]] @ truth["queries"][i]
        return int(np.sum(exact >= truth["kth"][i] - TIE))

    for round_ in range(rounds):
        for i, vector in enumerate(truncated):
            started = time.perf_counter()
            hits = embeddings.nearest_chunks(dataset, vector, k, columns=["chunk_id", "doc_id"])
            seconds.append(time.perf_counter() - started)
            if round_ == 0:
                found += correct(i, hits)
                hits_share += pairs[i]["doc_id"] in {h["doc_id"] for h in hits}
    for i, vector in enumerate(truncated):  # the index alone: no re-ranking on the stored vectors
        hits = embeddings.nearest_chunks(dataset, vector, k, columns=["chunk_id"], refine=False)
        unrefined += correct(i, hits)
    rows = len(matrix)
    shutil.rmtree(dataset.uri, ignore_errors=True)  # one scratch copy on disk at a time
    return {
        "option": option.name, "vectors": option.vectors, "dim": option.dim,
        "index": option.index_type or "exact",
        "bytes_per_vector": bytes_per_vector(option.dim, option.vectors), "index_bytes": built["index_bytes"],
        "index_bytes_per_vector": round(built["index_bytes"] / rows, 1),
        "recall_at_10": round(found / (k * len(queries)), 4),
        "recall_unrefined": round(unrefined / (k * len(queries)), 4),
        "expected_doc_at_10": round(hits_share / len(queries), 4),
        "p50_ms": round(float(np.percentile(seconds, 50)) * 1000, 3),
        "build_s": round(built["build_seconds"], 2),
    }

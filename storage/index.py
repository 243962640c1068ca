"""Indexes of a space: an IVF_HNSW_SQ vector index with measured recall, full-text on `text`, B-tree on `doc_id`.

The vector index is built once a space passes a row threshold (`EMBEDLINE_INDEX_MIN_ROWS`, default
20,000) and new rows are folded in after every write; each build or fold measures recall@10 against
exact search, so the fast path's quality is a recorded number, not an assumption.
"""

import math

import numpy as np

# Tuned on MiniLM chunks of the Debian corpus (bench/search.py, 200 synopsis queries, tie-aware
# recall@10): HNSW over scalar-quantized vectors, re-ranking 4×k candidates on the exact vectors.
# Through Lance's own scanner, each path in its own loop: 65,612 chunks → p50 3.6 ms at recall 0.983
# (4.8 ms right after a full-table DuckDB scan); 20,574 chunks → 2.6 ms at 0.979. Without the re-rank
# it is ~0.8 ms faster at recall ~0.97; ef 50 loses ~0.03 recall; LanceDB's query builder adds ~3 ms.
# IVF_PQ needed 3× the latency for the same recall and 10× the build time; IVF_FLAT (256 lists) reached
# only 0.92 at 32 probes.
NPROBES = 20  # partitions searched per query (one partition per million rows)
EF = 100  # HNSW candidate list size
REFINE_FACTOR = 4  # candidates re-ranked with exact vectors, as a multiple of k


def index_min_rows() -> int:
    from embedline.settings import load

    return load().index_min_rows


def refresh_indexes(table, min_rows: int | None = None) -> dict:
    """Create missing indexes or fold new rows into existing ones; returns what the version has."""
    min_rows = index_min_rows() if min_rows is None else min_rows
    existing = {idx.name for idx in table.list_indices()}
    first_write = "doc_id_idx" not in existing
    if first_write:
        table.create_scalar_index("doc_id", index_type="BTREE")
    if "text_idx" not in existing:
        table.create_fts_index("text")
    has_vector = "vector_idx" in existing
    if not has_vector and table.count_rows() >= min_rows:
        build_vector_index(table)
        has_vector = True
    elif not first_write:
        table.optimize(cleanup_older_than=forever())  # fold new rows into the indexes, prune nothing
    if not has_vector:
        return {"index_type": None, "index_recall": None}
    return {"index_type": "IVF_HNSW_SQ", "index_recall": measure_recall(table)}


def forever():
    from datetime import timedelta

    return timedelta(days=36500)  # tags older than the cleanup window would break optimize()


def build_vector_index(table) -> None:
    """(Re)build the vector index: IVF_HNSW_SQ, one partition per million rows."""
    from lancedb.index import HnswSq

    partitions = max(1, table.count_rows() // 1_000_000)
    table.create_index("vector", config=HnswSq(distance_type="cosine", num_partitions=partitions), replace=True)


def tuned(query):
    """Apply the index's search parameters to a LanceDB vector query."""
    return query.nprobes(NPROBES).ef(EF).refine_factor(REFINE_FACTOR)


def nearest(vector, k: int) -> dict:
    """The same parameters as a Lance `nearest` argument (the faster path: no LanceDB query builder).
    Without a vector index Lance searches exactly."""
    return {"column": "vector", "q": vector, "k": k, "metric": "cosine", "nprobes": NPROBES, "ef": EF,
            "refine_factor": REFINE_FACTOR}


def measure_recall(table, queries: int = 100, k: int = 10, seed: int = 0) -> float:
    """recall@k of the indexed search against exact search, for perturbed stored vectors as queries.

    Tie-aware: a hit counts when its (exact, re-ranked) distance is within the exact k-th distance,
    since corpora hold duplicate texts whose vectors tie and either of them is a right answer.
    """
    sample = table.to_lance().sample(min(queries, table.count_rows()), columns=["vector"])
    vectors = np.stack(sample.column("vector").to_numpy(zero_copy_only=False)).astype(np.float32)
    rng = np.random.default_rng(seed)
    noisy = vectors + 0.1 * rng.standard_normal(vectors.shape).astype(np.float32) / math.sqrt(vectors.shape[1])
    hits = 0
    for query in noisy:
        exact = table.search(query).distance_type("cosine").limit(k).select(["chunk_id"]).bypass_vector_index()
        kth = max(r["_distance"] for r in exact.to_list())
        ann = table.to_lance().to_table(nearest=nearest(query, k), columns=["_distance"],
                                        disable_scoring_autoprojection=True).to_pylist()
        hits += sum(r["_distance"] <= kth + 1e-6 for r in ann)
    return round(hits / (k * len(noisy)), 4)

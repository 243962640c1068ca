"""Indexes of a space: a vector index with measured recall, full-text on `text`, B-tree on `doc_id`.

The vector index is built once a space passes a row threshold (`EMBEDLINE_INDEX_MIN_ROWS`, default
20,000) and new rows are folded in after every write; each build or fold measures recall@10 against
exact search, so the fast path's quality is a recorded number, not an assumption. Its kind is the
space's storage choice (`embedline storage`): IVF_HNSW_SQ by default, or another of `INDEX_TYPES`;
`embedline footprint` measures what each costs and gives on a corpus.
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


# Lance's vector index kinds a space may use: name → (lancedb config class, whether it is HNSW-based).
# SQ keeps one byte per dimension; PQ one byte per sub-vector of 16 dimensions; RQ (RaBitQ) one bit per
# dimension; FLAT the vectors themselves. HNSW variants add a graph over each partition.
INDEX_TYPES = {
    "ivf_hnsw_sq": ("IvfHnswSq", True),
    "ivf_hnsw_pq": ("IvfHnswPq", True),
    "ivf_pq": ("IvfPq", False),
    "ivf_sq": ("IvfSq", False),
    "ivf_rq": ("IvfRq", False),
    "ivf_flat": ("IvfFlat", False),
}
DEFAULT_INDEX = "ivf_hnsw_sq"
ROWS_PER_PARTITION = {True: 1_000_000, False: 8192}  # HNSW searches a partition fast; IVF scans it


def refresh_indexes(table, min_rows: int | None = None, index_type: str = DEFAULT_INDEX) -> dict:
    """Create missing indexes or fold new rows into existing ones; returns what the version has.
    A vector index of another kind than `index_type` (the space's storage choice changed) is rebuilt."""
    min_rows = index_min_rows() if min_rows is None else min_rows
    existing = {idx.name: idx.index_type for idx in table.list_indices()}
    first_write = "doc_id_idx" not in existing
    if first_write:
        table.create_scalar_index("doc_id", index_type="BTREE")
    if "text_idx" not in existing:
        table.create_fts_index("text")
    has_vector = "vector_idx" in existing
    other_kind = has_vector and existing["vector_idx"] != INDEX_TYPES[index_type][0]
    if other_kind or (not has_vector and table.count_rows() >= min_rows):
        build_vector_index(table, index_type)
        has_vector = True
    elif not first_write:
        table.optimize(cleanup_older_than=forever())  # fold new rows into the indexes, prune nothing
    if not has_vector:
        return {"index_type": None, "index_recall": None}
    return {"index_type": index_type.upper(), "index_recall": measure_recall(table)}


def vector_index_type(table) -> str | None:
    """The kind (a key of INDEX_TYPES) of the table's vector index; None without one."""
    names = {config: name for name, (config, _) in INDEX_TYPES.items()}
    for idx in table.list_indices():
        if idx.name == "vector_idx":
            return names.get(idx.index_type, idx.index_type.lower())
    return None


def forever():
    from datetime import timedelta

    return timedelta(days=36500)  # tags older than the cleanup window would break optimize()


def build_vector_index(table, index_type: str = DEFAULT_INDEX) -> None:
    """(Re)build the vector index as `index_type`."""
    table.create_index("vector", config=index_config(index_type, table.count_rows()), replace=True)


def index_config(index_type: str, rows: int):
    """The lancedb config of `index_type` for `rows` vectors: HNSW kinds get one partition per million
    rows, IVF kinds one per 8,192 (NPROBES of them are searched); PQ trains 4-bit codebooks below 256
    rows, where 8-bit ones cannot be trained."""
    import lancedb.index

    config, hnsw = INDEX_TYPES[index_type]
    options = {"distance_type": "cosine", "num_partitions": max(1, rows // ROWS_PER_PARTITION[hnsw])}
    if index_type.endswith("_pq") and rows < 256:
        options["num_bits"] = 4
    return getattr(lancedb.index, config)(**options)


def tuned(query):
    """Apply the index's search parameters to a LanceDB vector query."""
    return query.nprobes(NPROBES).ef(EF).refine_factor(REFINE_FACTOR)


def nearest(vector, k: int, refine: bool = True) -> dict:
    """The same parameters as a Lance `nearest` argument (the faster path: no LanceDB query builder).
    Without a vector index Lance searches exactly; without `refine`, candidates are not re-ranked on
    the stored vectors (what the index alone finds)."""
    options = {"column": "vector", "q": vector, "k": k, "metric": "cosine", "nprobes": NPROBES, "ef": EF}
    return {**options, "refine_factor": REFINE_FACTOR} if refine else options


def measure_recall(table, queries: int = 100, k: int = 10, seed: int = 0) -> float:
    """recall@k of the indexed search against exact search, for perturbed stored vectors as queries.

    Tie-aware: a hit counts when its (exact, re-ranked) distance is within the exact k-th distance,
    since corpora hold duplicate texts whose vectors tie and either of them is a right answer.
    """
    sample = table.to_lance().sample(min(queries, table.count_rows()), columns=["vector"])
    vectors = np.stack(sample.column("vector").to_numpy(zero_copy_only=False)).astype(np.float32)
    rng = np.random.default_rng(seed)
    noisy = vectors + 0.1 * rng.standard_normal(vectors.shape).astype(np.float32) / math.sqrt(
        vectors.shape[1]
    )
    hits = 0
    for query in noisy:
        exact = (
            table.search(query).distance_type("cosine").limit(k).select(["chunk_id"]).bypass_vector_index()
        )
        kth = max(r["_distance"] for r in exact.to_list())
        ann = table.to_lance().to_table(nearest=nearest(query, k), columns=["_distance"],
                                        disable_scoring_autoprojection=True).to_pylist()
        hits += sum(r["_distance"] <= kth + 1e-6 for r in ann)
    return round(hits / (k * len(noisy)), 4)

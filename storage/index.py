"""Indexes of a space: a vector index with measured recall, full-text on `text`, B-tree on `doc_id`.

The vector index is built once a space passes a row threshold (`EMBEDLINE_INDEX_MIN_ROWS`, default
20,000) and new rows are folded in after every write; each build or fold measures recall@10 against
exact search, so the fast path's quality is a recorded number, not an assumption. Its kind is the
space's storage choice (`embedline storage`): IVF_HNSW_SQ by default, or another of `INDEX_TYPES`;
`embedline footprint` measures what each costs and gives on a corpus.
"""

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa

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
    A vector index of another kind than `index_type` (the space's storage choice changed), or one the
    table has outgrown (`outgrown`), is rebuilt."""
    min_rows = index_min_rows() if min_rows is None else min_rows
    existing = {idx.name: idx.index_type for idx in table.list_indices()}
    first_write = "doc_id_idx" not in existing
    if first_write:
        table.create_scalar_index("doc_id", index_type="BTREE")
    if "text_idx" not in existing:
        table.create_fts_index("text")
    has_vector = "vector_idx" in existing
    other_kind = has_vector and existing["vector_idx"] != INDEX_TYPES[index_type][0]
    rebuild = other_kind or (has_vector and outgrown(table, index_type))
    if rebuild or (not has_vector and table.count_rows() >= min_rows):
        build_vector_index(table, index_type)  # the text and id indexes fold this write's rows in next time
        has_vector = True  # (an optimize right after a build left Lance 14 reporting one partition)
    elif not first_write:
        table.optimize(cleanup_older_than=forever())  # fold new rows into the indexes, prune nothing
    if not has_vector or table.count_rows() == 0:
        return {"index_type": None if not has_vector else index_type.upper(), "index_recall": None}
    return {"index_type": index_type.upper(), "index_recall": measure_recall(table)}


def outgrown(table, index_type: str) -> bool:
    """Whether the table now wants at least twice the partitions its vector index was trained with:
    rows folded in since land in partitions trained on fewer, so they grow and each probe scans more.
    Rebuilding at every doubling keeps the training cost proportional to the table's growth."""
    os.environ.setdefault("LANCE_INCLUDE_VECTOR_CENTROIDS", "false")  # statistics without the centroids
    built = table.to_lance().stats.index_stats("vector_idx")["indices"][0]["num_partitions"]
    return partitions(index_type, table.count_rows()) >= 2 * built


def partitions(index_type: str, rows: int) -> int:
    """IVF partitions for `rows` vectors: one per million for HNSW kinds (a graph searches a partition
    fast), one per 8,192 for the others (a probe scans its partition)."""
    return max(1, rows // ROWS_PER_PARTITION[INDEX_TYPES[index_type][1]])


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
    """The lancedb config of `index_type` for `rows` vectors (`partitions` of them; NPROBES are searched);
    PQ trains 4-bit codebooks below 256 rows, where 8-bit ones cannot be trained."""
    import lancedb.index

    options = {"distance_type": "cosine", "num_partitions": partitions(index_type, rows)}
    if index_type.endswith("_pq") and rows < 256:
        options["num_bits"] = 4
    return getattr(lancedb.index, INDEX_TYPES[index_type][0])(**options)


def tuned(query, k: int):
    """Apply the index's search parameters to a LanceDB vector query for the top `k`: HNSW refuses a
    candidate list (`ef`) shorter than the k·refine candidates it is asked for."""
    return query.nprobes(NPROBES).ef(max(EF, k * REFINE_FACTOR)).refine_factor(REFINE_FACTOR)


def nearest(vector, k: int, refine: bool = True) -> dict:
    """The same parameters as a Lance `nearest` argument (the faster path: no LanceDB query builder).
    Without a vector index Lance searches exactly; without `refine`, candidates are not re-ranked on
    the stored vectors (what the index alone finds)."""
    wanted = k * REFINE_FACTOR if refine else k  # HNSW refuses an `ef` below the candidates asked for
    options = {"column": "vector", "q": vector, "k": k, "metric": "cosine", "nprobes": NPROBES,
               "ef": max(EF, wanted)}
    return {**options, "refine_factor": REFINE_FACTOR} if refine else options


def measure_recall(table, queries: int = 100, k: int = 10, seed: int = 0) -> float:
    """recall@k of the indexed search against exact search, for perturbed stored vectors as queries.

    Tie-aware: a hit counts when its distance is within the exact k-th distance, since corpora hold
    duplicate texts whose vectors tie and either of them is a right answer. Both sides' distances come
    from one kernel (`cosine_distances`, in float32 whatever the stored type), so ties compare exactly;
    the exact side is one streamed pass over the vectors for all queries (`exact_kth_distances`), not a
    scan per query, so the cost after a write is one read of the column.
    """
    dataset = table.to_lance()  # opened once: opening it costs more than an indexed search
    rng = np.random.default_rng(seed)
    rows = dataset.count_rows()
    picked = np.sort(rng.choice(rows, size=min(queries, rows), replace=False))  # the same rows every time
    vectors = as_matrix(dataset.take(picked.tolist(), columns=["vector"]).column("vector"))
    noisy = vectors + 0.1 * rng.standard_normal(vectors.shape).astype(np.float32) / math.sqrt(
        vectors.shape[1]
    )
    kth = exact_kth_distances(dataset, noisy, k)
    tolerance = TIE_TOLERANCE[str(dataset.schema.field("vector").type.value_type)]

    def hits(query: np.ndarray, limit: float) -> int:
        found = dataset.to_table(nearest=nearest(query, k), columns=["vector"],
                                 disable_scoring_autoprojection=True).column("vector")
        return int((cosine_distances(query[None], as_matrix(found))[0] <= limit + tolerance).sum())

    with ThreadPoolExecutor(max_workers=len(os.sched_getaffinity(0))) as pool:  # Lance frees the GIL
        return round(sum(pool.map(hits, noisy, kth)) / (k * len(noisy)), 4)


# Distances within this of the k-th tie with it. float32: rounding alone. float16: Lance ranks stored
# halves in their own precision (a unit in the last place of a half is ~1e-3), so its k nearest may hold
# a vector NumPy's float32 ranks 11th by less than that.
TIE_TOLERANCE = {"float": 1e-6, "halffloat": 2e-3}


def exact_kth_distances(dataset, queries: np.ndarray, k: int, batch_rows: int = 16_384) -> np.ndarray:
    """Each query's exact k-th smallest cosine distance over the dataset's vectors, in one streamed pass
    (memory: one batch of vectors and a k-wide running best per query)."""
    best = np.full((len(queries), 0), np.inf, dtype=np.float32)
    for batch in dataset.to_batches(columns=["vector"], batch_size=batch_rows):
        distances = cosine_distances(queries, as_matrix(batch.column("vector")))
        candidates = np.concatenate([best, distances], axis=1)
        keep = min(k, candidates.shape[1])
        best = np.partition(candidates, keep - 1, axis=1)[:, :keep]
    return best.max(axis=1)


def as_matrix(column) -> np.ndarray:
    """A fixed-size-list vector column (float32 or float16; an array or a chunked one) as an (n, d) float32
    matrix."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), -1).astype(np.float32)


def cosine_distances(queries: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """1 − cos for every (query, vector) pair; a zero vector is at distance 1 from everything."""
    def unit(m):
        return m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)

    return 1.0 - unit(queries) @ unit(vectors).T

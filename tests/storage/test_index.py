"""The vector index: recall measured against an exact pass, and retrained when the table outgrows it."""

import lancedb
import numpy as np
import pyarrow as pa

from embedline.storage import index


def table_of(path, vectors: np.ndarray, name: str = "t"):
    rows = pa.table({"chunk_id": [f"c{i}" for i in range(len(vectors))], "doc_id": [f"d{i}" for i in
                     range(len(vectors))], "text": ["x"] * len(vectors),
                     "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), vectors.shape[1])})
    return lancedb.connect(path).create_table(name, rows)


def test_the_streamed_exact_pass_finds_each_querys_kth_distance_as_a_scan_does(tmp_path):
    rng = np.random.default_rng(1)
    table = table_of(tmp_path, rng.standard_normal((1500, 24)).astype(np.float32))
    queries = rng.standard_normal((7, 24)).astype(np.float32)
    streamed = index.exact_kth_distances(table.to_lance(), queries, k=10, batch_rows=256)
    for query, kth in zip(queries, streamed):
        scan = table.search(query).distance_type("cosine").limit(10).bypass_vector_index().to_list()
        assert abs(max(r["_distance"] for r in scan) - kth) < index.TIE_TOLERANCE


def test_an_index_is_retrained_once_the_table_wants_twice_its_partitions(tmp_path, monkeypatch):
    monkeypatch.setitem(index.ROWS_PER_PARTITION, False, 500)  # IVF: one partition per 500 rows here
    rng = np.random.default_rng(2)
    table = table_of(tmp_path, rng.standard_normal((900, 16)).astype(np.float32))
    first = index.refresh_indexes(table, min_rows=1, index_type="ivf_flat")
    built = lambda: table.to_lance().stats.index_stats("vector_idx")["indices"][0]["num_partitions"]  # noqa: E731
    assert (first["index_type"], built()) == ("IVF_FLAT", 1)
    more = rng.standard_normal((151, 16)).astype(np.float32)
    add_rows(table, more[:50], "n")
    assert index.refresh_indexes(table, min_rows=1, index_type="ivf_flat")["index_recall"] > 0.9
    assert built() == 1  # 950 rows want one partition: the new rows are folded in
    add_rows(table, more[50:], "m")
    again = index.refresh_indexes(table, min_rows=1, index_type="ivf_flat")
    assert built() == 2 and again["index_recall"] > 0.9  # 1,051 rows want two
    assert table.search(more[60]).limit(1).to_list()[0]["chunk_id"] == "m10"


def add_rows(table, vectors: np.ndarray, prefix: str) -> None:
    ids = [f"{prefix}{i}" for i in range(len(vectors))]
    table.add(pa.table({"chunk_id": ids, "doc_id": ids, "text": ["y"] * len(ids),
                        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), 16)}))

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
        assert abs(max(r["_distance"] for r in scan) - kth) < 1e-5  # Lance's kernel rounds otherwise


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


def test_recall_on_float16_vectors_counts_ties_as_hits(tmp_path):
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((600, 32)).astype(np.float16)
    ids = [f"c{i}" for i in range(600)]
    table = lancedb.connect(tmp_path).create_table("h", pa.table({
        "chunk_id": ids, "doc_id": ids, "text": ["x"] * 600,
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel(), pa.float16()), 32)}))
    assert index.refresh_indexes(table, min_rows=1, index_type="ivf_flat")["index_recall"] == 1.0  # flat: exact


def test_an_index_whose_rows_were_all_deleted_reports_no_recall(tmp_path):
    table = table_of(tmp_path, np.random.default_rng(4).standard_normal((300, 8)).astype(np.float32))
    index.refresh_indexes(table, min_rows=1, index_type="ivf_flat")
    table.delete("true")
    assert index.refresh_indexes(table, min_rows=1, index_type="ivf_flat") == {
        "index_type": "IVF_FLAT", "index_recall": None}

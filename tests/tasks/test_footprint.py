"""`footprint`: every storage option measured on scratch copies of a corpus's vectors."""

import json

import pyarrow as pa
import pytest

from embedline.errors import NotFound
from embedline.storage import catalog, embeddings
from embedline.tasks.evaluation import save_golden
from embedline.tasks.footprint import COLUMNS, footprint_options, measure_footprint, query_pairs
from tests.conftest import ingest, run_cli


def test_one_row_per_option_with_sane_values_and_the_space_untouched(workspace, debian_case):
    ingest(workspace, debian_case)
    alias = catalog.get_alias(workspace, "debian")
    versions_before = len(embeddings.open_space(workspace, alias["space"]).list_versions())

    rows = measure_footprint(workspace, "debian", queries=20, rounds=1)

    assert [r["option"] for r in rows] == [o.name for o in footprint_options(32)]
    assert all(set(r) == set(COLUMNS) for r in rows)
    by_name = {r["option"]: r for r in rows}
    baseline, half = by_name["float32 exact"], by_name["float16 exact"]
    assert baseline["recall_at_10"] == 1.0 and baseline["index_bytes"] == 0
    assert baseline["bytes_per_vector"] == 128 and half["bytes_per_vector"] == 64
    assert half["recall_at_10"] >= 0.9  # float16 rounding moves only near-ties
    truncated = by_name["float32 exact 16d"]
    assert truncated["bytes_per_vector"] == 64 and truncated["dim"] == 16
    assert baseline["recall_unrefined"] == 1.0
    for row in rows:
        assert 0.0 <= row["recall_at_10"] <= 1.0 and 0.0 <= row["recall_unrefined"] <= 1.0
        assert row["p50_ms"] > 0
        assert (row["index_bytes"] > 0) == (row["index"] != "exact"), row
    assert len(embeddings.open_space(workspace, alias["space"]).list_versions()) == versions_before
    assert not any((workspace.home / "scratch").iterdir())  # scratch tables are gone


def test_golden_queries_are_used_when_the_corpus_has_them(workspace, debian_case):
    ingest(workspace, debian_case)
    alias = catalog.get_alias(workspace, "debian")
    first_chunks = embeddings.dataset_at(workspace, alias["space"], alias["version"]).to_table(
        columns=["doc_id", "text"], filter="chunk_index = 0").slice(0, 8).to_pylist()
    save_golden(workspace, "debian", [{"query": r["text"], "doc_id": r["doc_id"]} for r in first_chunks])

    rows = measure_footprint(workspace, "debian", queries=50, rounds=1, only=["float16 exact"])

    assert [r["option"] for r in rows] == ["float32 exact", "float16 exact"]
    assert rows[0]["expected_doc_at_10"] == 1.0  # a chunk's own text finds its document


def test_cli_prints_json_rows(workspace, debian_case):
    ingest(workspace, debian_case)
    out = run_cli("footprint", "debian", "--queries", "5", "--rounds", "1", "--only", "ivf_sq", "--json",
                  home=workspace.home, check=True).stdout
    rows = json.loads(out)
    assert [r["option"] for r in rows] == ["float32 exact", "float32 ivf_sq", "float16 ivf_sq"]
    assert rows[2]["bytes_per_vector"] * 2 == rows[1]["bytes_per_vector"]


def test_a_corpus_without_golden_queries_or_titles_is_told_where_to_write_them(workspace):
    untitled = pa.table({"doc_id": ["a", "b"], "chunk_index": [0, 0], "title": ["", None]})
    with pytest.raises(NotFound, match="no golden queries and no titles to query with: write golden/debian"):
        query_pairs(workspace, "debian", untitled, limit=10)

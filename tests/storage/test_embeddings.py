"""Searching a space: filters as users type them, and hybrid ties in a stable order."""

import numpy as np
import pyarrow as pa
import pytest

from embedline.errors import BadInput
from embedline.storage import embeddings
from embedline.workspace import Workspace

DIM = 8
TEXT = "identical duplicate text about printers and offline queues"
SPACE = "dups__tiny"


@pytest.fixture
def space(tmp_path):
    """A space with six chunks of one text and one vector (ids not in row order) among 30 others."""
    ws = Workspace.from_env(tmp_path / "home").ensure()
    rng = np.random.default_rng(0)
    dup_ids = ["d3", "d0", "d5", "d1", "d4", "d2"]
    other_ids = [f"o{i:02d}" for i in range(30)]
    vectors = np.vstack([np.tile(rng.standard_normal(DIM), (6, 1)), rng.standard_normal((30, DIM))])
    texts = [TEXT] * 6 + [f"package {i} about printers" if i % 3 == 0 else f"package {i}" for i in range(30)]
    rows = pa.table({
        "chunk_id": dup_ids + other_ids, "doc_id": dup_ids + other_ids, "chunk_index": [0] * 36,
        "text": texts, "title": dup_ids + other_ids,
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.astype(np.float32).ravel()), DIM),
        "model_key": ["k"] * 36, "run_id": [1] * 36, "section": ["dups"] * 6 + ["other"] * 30,
    })
    schema = embeddings.chunk_schema(DIM, pa.schema([pa.field("section", pa.string())]))
    written = embeddings.write_version(ws, SPACE, schema, rows.cast(schema).to_batches(), [], "run-1")
    return ws, written["version"], vectors[0]


def _hybrid(space, k: int, where: str | None = None) -> list[str]:
    ws, version, vector = space
    hits = embeddings.search(ws, SPACE, version, vector, k, where, ["chunk_id", "doc_id"], text=TEXT)
    return [h["chunk_id"] for h in hits]


def test_hybrid_ties_are_ordered_by_chunk_id_so_a_larger_k_keeps_the_first_k(space):
    longest = _hybrid(space, 10)
    assert longest[:6] == ["d0", "d1", "d2", "d3", "d4", "d5"]
    for k in range(1, 10):
        assert _hybrid(space, k) == longest[:k], k


def test_hybrid_search_prints_no_scoring_projection_warning(space, capfd):
    _hybrid(space, 3)
    assert "disable_scoring_autoprojection" not in capfd.readouterr().err


@pytest.mark.parametrize("blank", ["", "   ", "\n"])
def test_a_blank_filter_is_no_filter(space, blank):
    ws, version, vector = space
    unfiltered = embeddings.search(ws, SPACE, version, vector, 5, None, ["chunk_id"])
    assert embeddings.search(ws, SPACE, version, vector, 5, blank, ["chunk_id"]) == unfiltered
    assert _hybrid(space, 5, blank) == _hybrid(space, 5)


@pytest.mark.parametrize("text", [False, True])
def test_a_filter_with_a_statement_separator_is_refused(space, text):
    ws, version, vector = space
    with pytest.raises(BadInput, match="without ';'"):
        embeddings.search(ws, SPACE, version, vector, 5, "section = 'dups'; DROP TABLE x", ["chunk_id"],
                          text=TEXT if text else None)
    quoted = embeddings.search(ws, SPACE, version, vector, 5, "title = 'a;b' OR section = 'dups'",
                               ["chunk_id"], text=TEXT if text else None)
    assert {h["chunk_id"] for h in quoted} <= {"d0", "d1", "d2", "d3", "d4", "d5"} and quoted


@pytest.mark.parametrize("where", ["section = ", "nosuchcol = 1", "doc_id IN (SELECT doc_id FROM runs)"])
def test_filter_errors_carry_no_rust_source_path(space, where):
    ws, version, vector = space
    with pytest.raises(BadInput) as refused:
        embeddings.search(ws, SPACE, version, vector, 5, where, ["chunk_id"])
    message = str(refused.value)
    assert message.startswith("search failed: ") and ".rs:" not in message and "/home/" not in message

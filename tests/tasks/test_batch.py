"""Chunk rows and their vectors stay paired when the chunker runs a window ahead, on the engine's helper
thread, across many windows."""

import json

import numpy as np

from embedline.tasks.batch import embed_documents
from embedline.tasks.changes import plan_changes
from embedline.tasks.chunking import params_for
from embedline.tasks.embedding import Engine
from embedline.tasks.models import resolve_model
from embedline.tasks.sources import FieldMap


def test_every_staged_row_holds_its_own_texts_vector_across_windows(workspace, debian_case, tmp_path):
    spec = resolve_model(workspace, "tiny")
    engine = Engine(spec, device="cpu", precision="fp32", window=7)  # 120 documents: many windows
    params = params_for(engine.spec, overlap=4, max_tokens=24)  # long documents: several chunks each
    plan = plan_changes(str(debian_case), FieldMap("id", "text", "title"), {}, engine.spec.key(),
                        params.key(), str(tmp_path / "staging"), scratch=tmp_path / "scratch")
    batch = embed_documents(plan, engine, params, run_id=1, staging=str(tmp_path / "out"))

    rows = [row for part in batch.read_chunks() for row in part.to_pylist()]
    assert len(rows) == batch.chunk_count > 2 * engine.window * 10
    vectors = np.array([row["vector"] for row in rows], dtype=np.float32)
    np.testing.assert_allclose(vectors, engine.embed([row["text"] for row in rows]), atol=1e-5)
    source_order = [json.loads(line)["id"] for line in debian_case.read_text().splitlines()]
    assert list(dict.fromkeys(row["doc_id"] for row in rows)) == source_order
    counts = batch.read_documents().to_pydict()
    assert sum(counts["chunk_count"]) == len(rows)
    assert all(counts["chunk_count"][i] == sum(r["doc_id"] == doc for r in rows)
               for i, doc in enumerate(counts["doc_id"]))

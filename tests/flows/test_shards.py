"""Scale-out: a run over the shard size is embedded in shards and committed once, with the same rows
as a run that embeds everything in one place."""

import numpy as np

from embedline.storage import catalog, embeddings
from embedline.workspace import Workspace
from embedline.tasks.models import add_model
from tests.conftest import ingest


def table_content(ws, space: str) -> dict:
    table = embeddings.dataset_at(ws, space).to_table(columns=["chunk_id", "doc_id", "text", "vector"])
    rows = sorted(zip(table.column("chunk_id").to_pylist(), table.column("doc_id").to_pylist(),
                      table.column("text").to_pylist(), embeddings.vector_matrix(table.column("vector"))))
    return {"keys": [r[:3] for r in rows], "vectors": np.stack([r[3] for r in rows])}


def test_sharded_run_commits_the_same_table_as_one_unsharded_run(workspace, debian_case, tiny_model_dir, tmp_path):
    sharded = ingest(workspace, debian_case, shard_size=50)  # 120 documents → 3 shards
    single_ws = Workspace.from_env(tmp_path / "single").ensure()
    add_model(single_ws, "tiny", str(tiny_model_dir))
    single = ingest(single_ws, debian_case, shard_size=0)

    assert sharded.status == single.status == "succeeded"
    assert (sharded.docs_new, sharded.chunks_embedded, sharded.tokens_embedded) == (
        single.docs_new, single.chunks_embedded, single.tokens_embedded)
    a, b = table_content(workspace, "debian__tiny"), table_content(single_ws, "debian__tiny")
    assert a["keys"] == b["keys"]
    np.testing.assert_allclose(a["vectors"], b["vectors"], atol=1e-5)
    tags = [t for t in embeddings.open_space(workspace, "debian__tiny").tags.list()]
    assert tags == [f"run-{sharded.run_id}"]  # one version for the whole sharded run
    documents = catalog.known_documents(workspace, "debian__tiny")
    assert len(documents) == sharded.docs_new

"""Per-space storage choices: float16 vectors and the vector index kind, applied by runs, read by SQL."""

from datetime import timedelta

import numpy as np
import pyarrow as pa
import pytest

import embedline
from embedline.errors import BadInput, NotFound
from embedline.storage import catalog, embeddings
from embedline.storage.maintenance import maintain_space
from embedline.tasks.search import search_corpus
from embedline.tasks.storage import set_storage, storage_choice
from tests.conftest import ingest, run_cli


def served(ws) -> dict:
    alias = catalog.get_alias(ws, "debian")
    return embeddings.layout(ws, alias["space"], alias["version"])


def test_float16_space_ingests_searches_and_sql_reads_float32(workspace, debian_case):
    set_storage(workspace, "debian", "tiny", vectors="float16")
    ingest(workspace, debian_case)
    alias = catalog.get_alias(workspace, "debian")
    stored = embeddings.dataset_at(workspace, alias["space"], alias["version"])
    assert stored.schema.field("vector").type == pa.list_(pa.float16(), 32)

    db = embedline.connect(workspace.home)
    hits = search_corpus(workspace, "debian", "tiling window manager", k=5)
    assert len(hits) == 5 and all(-1.0 <= h["score"] <= 1.0 for h in hits)
    assert db.search("debian", "window manager", k=3, hybrid=True)[0]["doc_id"]

    first = hits[0]["chunk_id"]
    kind, vector = db.sql(f"SELECT typeof(vector), vector FROM debian WHERE chunk_id = '{first}'").fetchone()
    assert kind == "FLOAT[32]"
    assert np.allclose(vector, embeddings.vector_matrix(stored.to_table(
        columns=["vector"], filter=f"chunk_id = '{first}'").column("vector"))[0])
    best = db.sql("SELECT chunk_id FROM debian ORDER BY array_cosine_similarity(vector, "
                  "query_vector('debian', 'tiling window manager')) DESC LIMIT 1").fetchone()[0]
    assert best == first  # SQL's exact ranking over the widened vectors agrees with Lance's over float16
    assert db.sql("SELECT count(*) FROM debian__tiny").fetchone()[0] == stored.count_rows()


def test_choice_persists_and_the_next_run_applies_it_even_with_nothing_to_embed(workspace, debian_case,
                                                                                 monkeypatch):
    monkeypatch.setenv("EMBEDLINE_INDEX_MIN_ROWS", "50")
    first = ingest(workspace, debian_case)
    assert served(workspace) == {"vectors": "float32", "index_type": "ivf_hnsw_sq"}

    shown = run_cli("storage", "debian", "--vectors", "float16", "--index", "ivf_pq", "--json",
                    home=workspace.home, check=True).stdout
    assert '"pending": true' in shown and '"serving_vectors": "float32"' in shown
    assert storage_choice(workspace, "debian__tiny").index_type == "ivf_pq"  # kept in the catalog

    second = ingest(workspace, debian_case)
    assert second.chunks_embedded == 0 and second.version > first.version and second.promoted
    assert served(workspace) == {"vectors": "float16", "index_type": "ivf_pq"}
    assert catalog.get_version(workspace, "debian__tiny", second.version)["index_type"] == "IVF_PQ"
    assert set_storage(workspace, "debian")["pending"] is False

    third = ingest(workspace, debian_case)  # the choice outlives the run that applied it
    assert third.version is None and served(workspace)["vectors"] == "float16"


def test_maintain_lays_out_the_head_and_prod_follows_with_the_next_run(workspace, debian_case):
    ingest(workspace, debian_case)
    set_storage(workspace, "debian", vectors="float16")
    choice = storage_choice(workspace, "debian__tiny")
    done = maintain_space(workspace, "debian__tiny", timedelta(days=7), choice)
    assert done["relaid"]
    assert embeddings.layout(workspace, "debian__tiny", None)["vectors"] == "float16"
    assert served(workspace)["vectors"] == "float32"  # prod moves only with a validated run
    assert ingest(workspace, debian_case).promoted
    assert served(workspace)["vectors"] == "float16"


def test_a_choice_is_checked_and_needs_a_model_before_the_first_run(workspace):
    with pytest.raises(NotFound, match="--model"):
        set_storage(workspace, "debian", vectors="float16")
    with pytest.raises(BadInput, match="float32, float16"):
        set_storage(workspace, "debian", "tiny", vectors="int8")
    with pytest.raises(BadInput, match="ivf_pq"):
        set_storage(workspace, "debian", "tiny", index_type="diskann")
    assert catalog.get_storage(workspace, "debian__tiny") is None


def test_a_new_models_space_keeps_the_index_kind_prod_chose_after_it_takes_over(workspace, debian_case,
                                                                               tiny_model_dir):
    """Below EMBEDLINE_INDEX_MIN_ROWS no version has an index, so the layout alone cannot carry the kind:
    the new space records the choice it inherited at its first write, and keeps it once it serves."""
    from embedline.flows.refresh import backfill_corpus
    from embedline.tasks.models import add_model

    add_model(workspace, "small", str(tiny_model_dir), truncate_dim=16)
    set_storage(workspace, "debian", "tiny", vectors="float16", index_type="ivf_sq")
    ingest(workspace, debian_case)
    swapped = backfill_corpus("debian", "small", home=str(workspace.home))
    assert swapped["space"] == catalog.get_alias(workspace, "debian")["space"] == "debian__small"
    shown = set_storage(workspace, "debian")  # what `embedline storage debian` prints: prod's space now
    assert (shown["space"], shown["vectors"], shown["index"]) == ("debian__small", "float16", "ivf_sq")

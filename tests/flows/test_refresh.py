"""The whole model-change path on tiny models: adapters, adapted search, backfill (killed and
resumed), gated swap, old→new adapter, status, rollback."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from embedline.storage import catalog, embeddings
from embedline.tasks.models import add_model
from embedline.tasks.passages import passage_texts
from embedline.tasks.embedding import get_engine
from embedline.tasks.models import resolve_model
from embedline.tasks.refresh import (
    embed_once, fit_refresh_adapters, query_vector, refresh_status, sample_documents, sample_passages,
)
from embedline.storage import sql
from embedline.tasks.search import make_embedder, make_query_embedder, search_corpus
from tests.conftest import ingest


@pytest.fixture
def two_models(workspace, tiny_model_dir, debian_case):
    """`tiny` (32-d) serves the corpus; `small` is the same encoder truncated to 16 dims (a new model)."""
    add_model(workspace, "small", str(tiny_model_dir), truncate_dim=16)
    ingest(workspace, debian_case)
    return workspace


def test_adapter_serves_new_model_queries_over_the_old_index_at_once(two_models, debian_case):
    ws = two_models
    fitted = fit_refresh_adapters(ws, "debian", "small", sample=80)
    assert (fitted.old_model, fitted.new_model, fitted.sample_size, fitted.query_texts) == (
        "tiny",
        "small",
        80,
        40,
    )
    assert (
        fitted.backward["kind"] in ("procrustes", "ridge", "residual_mlp")
        and 0 < fitted.backward["retention"]
    )
    assert fitted.recalls["raw_mismatch"] == 0.0  # 16-d queries cannot search a 32-d index at all
    assert fitted.recalls[fitted.kind] > 0 and fitted.retention >= 0.5
    assert fitted.served_kind in ("procrustes", "ridge")  # served before the MLP's race, never on it
    newest = catalog.get_adapter(ws, "debian", "small", "tiny")  # what serves now: the race's winner
    assert newest["kind"] == fitted.kind and newest["retention"] == pytest.approx(fitted.retention)
    vector = query_vector(ws, "debian", "window manager", "small")
    assert vector.shape == (32,) and np.isclose(np.linalg.norm(vector), 1.0, atol=1e-5)
    hits = search_corpus(ws, "debian", "window manager", k=5, model="small")
    assert len(hits) == 5
    (status,) = refresh_status(ws, "debian")
    assert (status["model"], status["serving_via"], status["backfill_docs"]) == ("small", "adapter", 0)
    con = sql.connect(ws, make_embedder(ws), query_embedder=make_query_embedder(ws))
    native, adapted = con.execute(
        "SELECT typeof(query_vector('debian', 'window manager')), typeof(query_vector('debian', 'window manager', 'small'))"
    ).fetchone()
    assert native == adapted == "FLOAT[32]"
    top = con.execute(
        "SELECT array_cosine_similarity(vector, query_vector('debian', 'window manager', 'small')) AS s"
        " FROM debian ORDER BY s DESC LIMIT 5"
    ).fetchall()
    assert [s for (s,) in top] == pytest.approx([h["score"] for h in hits], abs=1e-4)  # SQL and search agree
    listed = {name for name, kind, _ in sql.describe(con) if kind.startswith("macro") or kind == "scalar"}
    assert {"query_vector", "query_vector_debian", "embed"} <= listed  # `embedline sql --schema`


def test_a_tiny_corpus_fills_its_fit_with_general_text_only_when_in_domain_pairs_are_short(two_models):
    ws = two_models
    short = fit_refresh_adapters(ws, "debian", "small", sample=80, passage_sample=300, min_pairs=1000)
    assert (short.sample_size, short.query_texts, short.passages) == (80, 40, 300)
    assert short.general_texts == 1000 - 2 * 80 - 40 - 300  # exactly the gap, no more
    recorded = json.loads(catalog.get_adapter(ws, "debian", "small", "tiny")["recalls"])
    assert (recorded["folds"], recorded["pairs_documents"], recorded["pairs_passages"]) == (5, 80, 300)
    assert recorded["pairs_extra"] == 40 + short.general_texts  # general text only ever enters fits
    ran_all = [k for k in ("procrustes", "ridge", "residual_mlp") if recorded[f"{k}_folds"] == 5]
    assert recorded[short.kind] == max(recorded[k] for k in ran_all)
    enough = fit_refresh_adapters(ws, "debian", "small", sample=80, passage_sample=300, min_pairs=500)
    assert enough.general_texts == 0 and enough.passages == 300


def test_sentences_fill_the_fit_up_to_the_pair_target_and_no_further(two_models):
    """Each sentence costs a new-model forward pass before serving starts: only the gap is cut."""
    capped = fit_refresh_adapters(two_models, "debian", "small", sample=80, passage_sample=300, min_pairs=260)
    assert (capped.passages, capped.general_texts) == (260 - 2 * 80 - 40, 0)
    assert set(capped.seconds) == {"load_models", "read", "embed_short_old", "embed_short_new",
                                   "embed_docs_new", "choose", "record"}
    assert sum(capped.seconds.values()) <= capped.serve_seconds + 0.01


def test_texts_that_repeat_are_embedded_once(two_models):
    engine = get_engine(resolve_model(two_models, "tiny"))
    texts = ["tiling window manager", "a mail client", "tiling window manager"]
    before = engine.tokens_embedded
    vectors = embed_once(engine, texts)
    once = engine.tokens_embedded - before
    assert np.allclose(vectors, engine.embed(texts, kind="query"), atol=1e-2)
    assert engine.tokens_embedded - before - once > once  # three texts cost more than their two distinct ones


def test_the_sample_is_the_same_whatever_order_lance_returns_rows(two_models, debian_case, tmp_path,
                                                                  tiny_model_dir):
    """Rows come from Lance in write order: the same corpus ingested in reverse gives the same sample."""
    from embedline.workspace import Workspace

    reversed_case = tmp_path / "reversed.jsonl"
    reversed_case.write_text("".join(reversed(debian_case.read_text().splitlines(keepends=True))))
    other = Workspace.from_env(tmp_path / "other").ensure()
    add_model(other, "tiny", str(tiny_model_dir))
    ingest(other, reversed_case)
    samples = []
    for ws in (two_models, other):
        prod = catalog.get_alias(ws, "debian")
        order = embeddings.dataset_at(ws, prod["space"], prod["version"]).to_table(columns=["doc_id"])
        samples.append((order.column("doc_id").to_pylist(), *sample_documents(ws, prod["space"],
                                                                             prod["version"], 50, 30)))
    (written, docs, extra), (written_back, docs_back, extra_back) = samples
    assert written != written_back  # the two tables really hold their rows in different orders
    assert [d["doc_id"] for d in docs] == [d["doc_id"] for d in docs_back] and extra == extra_back
    assert [d["text"] for d in docs] == [d["text"] for d in docs_back]


def test_passages_are_cut_from_every_chunk_and_owned_by_their_sampled_document(workspace, debian_case):
    ws = workspace
    ingest(ws, debian_case, corpus="short", chunk_tokens=24)
    prod = catalog.get_alias(ws, "short")
    chunks = embeddings.dataset_at(ws, prod["space"], prod["version"]).to_table(
        columns=["doc_id", "chunk_index", "text"]).to_pylist()
    assert max(c["chunk_index"] for c in chunks) >= 2  # documents of several chunks
    docs = [{"doc_id": "aspell-en"}, {"doc_id": "celery"}]
    passages = sample_passages(ws, prod["space"], prod["version"], docs, limit=None)
    later = {s for c in chunks if c["chunk_index"] > 0 for s in passage_texts(c["text"])}
    assert later & {p.text for p in passages}  # not only first chunks
    owned = {s for c in chunks if c["doc_id"] in ("aspell-en", "celery") for s in passage_texts(c["text"])}
    assert {p.text for p in passages if p.owner >= 0} <= owned and any(p.owner == 0 for p in passages)
    assert passages == sample_passages(ws, prod["space"], prod["version"], docs, limit=None)  # deterministic
    assert len(sample_passages(ws, prod["space"], prod["version"], docs, limit=50)) == 50


@pytest.mark.slow
def test_backfill_killed_then_resumed_swaps_after_its_gates_and_rolls_back(two_models, debian_case):
    from prefect.settings import PREFECT_API_URL

    from embedline.flows.refresh import backfill_corpus
    from embedline.tasks.refresh import embed_priority

    ws = two_models
    old = catalog.get_alias(ws, "debian")
    fit_refresh_adapters(ws, "debian", "small", sample=120)
    env = {**os.environ, "EMBEDLINE_HOME": str(ws.home), "PREFECT_API_URL": PREFECT_API_URL.value()}
    exe = Path(sys.executable).with_name("embedline")
    proc = subprocess.Popen(
        [str(exe), "backfill", "debian", "--model", "small", "--batch-docs", "40", "--order", "residual"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 180
    while proc.poll() is None and time.monotonic() < deadline:  # kill it once its first batch is committed
        if catalog.space_progress(ws, "debian__small")["documents"] >= 40:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert catalog.get_alias(ws, "debian")["space"] == "debian__tiny"  # a dead backfill never swaps
    with catalog.reading(ws) as con:
        first_batch = {
            d for (d,) in con.execute("SELECT doc_id FROM documents WHERE space = 'debian__small'").fetchall()
        }
    assert len(first_batch) in (40, 80)  # a loaded machine's poll may see the second batch committed too
    priority = embed_priority(ws, "debian", "small", "residual")
    worst_first = sorted(priority, key=priority.get, reverse=True)
    assert first_batch == set(worst_first[:len(first_batch)])  # worst-served first

    swapped = backfill_corpus("debian", "small", batch_docs=40, order="residual", home=str(ws.home))
    with catalog.reading(ws) as con:
        embedded = con.execute("SELECT sum(docs_new + docs_changed), count(*) FROM runs"
                               " WHERE space = 'debian__small' AND status = 'succeeded'").fetchone()
    assert embedded == (120, 3)  # the resumed backfill embedded only what the first batch had not

    assert swapped["space"] == "debian__small"
    prod = catalog.get_alias(ws, "debian")
    assert (prod["space"], prod["model"]) == ("debian__small", "small")
    assert query_vector(ws, "debian", "window manager").shape == (16,)
    assert query_vector(ws, "debian", "window manager", "tiny").shape == (16,)  # old clients, via old→new
    (status,) = refresh_status(ws, "debian")
    assert status["model"] == "tiny" and status["prod"] == "debian__small"
    catalog.rollback(ws, "debian")
    assert catalog.get_alias(ws, "debian")["version"] == old["version"]


def test_bad_backfill_arguments_are_refused_before_anything_runs(two_models, debian_case):
    import embedline
    from embedline.flows.refresh import backfill_corpus

    db = embedline.connect(two_models.home)
    for batch_docs, order, message in [
        (0, "source", r"batch_docs 0: .* at least 1 \(--batch-docs N"),
        (-1, "source", "batch_docs -1"),  # a backfill deferring all but -1 documents never ended
        (40, "newest", "order 'newest': use one of source, recent, residual"),
    ]:
        with pytest.raises(embedline.BadInput, match=message):
            db.backfill("debian", "small", batch_docs=batch_docs, order=order)
        with pytest.raises(embedline.BadInput, match=message):  # its backfill would detach and fail unseen
            db.refresh("debian", "small", batch_docs=batch_docs, order=order)
        with pytest.raises(embedline.BadInput, match=message):  # a deployment's run: the flow checks too
            backfill_corpus("debian", "small", batch_docs, order, home=str(two_models.home))
    with pytest.raises(embedline.BadInput, match="max_embed -1"):
        db.ingest(debian_case, corpus="debian", max_embed=-1)
    with catalog.reading(two_models) as con:
        assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 1  # the fixture's ingest alone
        assert con.execute("SELECT count(*) FROM adapters").fetchone()[0] == 0
    assert not (two_models.home / "logs").exists()  # no backfill started in the background

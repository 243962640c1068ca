"""Backward-compatible model change: fit adapters between the prod model and a new one, serve
new-model queries over the old index through them, and swap once the new space is proven."""

from dataclasses import dataclass

import numpy as np

from storage import catalog, embeddings
from storage.errors import BadInput, NotFound
from storage.names import check_name, space_name
from storage.workspace import Workspace
from tasks.adapters import Adapter, choose_adapter
from tasks.embedding import get_engine
from tasks.models import resolve_model

QUERY_WEIGHT = 4  # each (query, query) pair counts this many times in the adapter fit


@dataclass
class RefreshFit:
    corpus: str
    old_model: str
    new_model: str
    kind: str
    retention: float
    recalls: dict
    sample_size: int


def adapter_path(ws: Workspace, corpus: str, from_model: str, to_model: str):
    return ws.home / "adapters" / f"{corpus}__{from_model}__to__{to_model}.npz"


def residual_path(ws: Workspace, corpus: str, new_model: str):
    return ws.home / "adapters" / f"{corpus}__{new_model}__residual.npz"


def sample_documents(ws: Workspace, space: str, version: int, limit: int, seed: int = 0) -> list[dict]:
    """Up to `limit` documents of a version: each document's first chunk, its title and its stored vector."""
    table = embeddings.dataset_at(ws, space, version).to_table(
        columns=["doc_id", "title", "text", "vector"], filter="chunk_index = 0")
    if table.num_rows > limit:
        table = table.take(np.sort(np.random.default_rng(seed).choice(table.num_rows, limit, replace=False)))
    vectors = embeddings.vector_matrix(table.column("vector"))
    return [{**row, "vector": vector} for row, vector in zip(table.drop_columns(["vector"]).to_pylist(), vectors)]


def fit_refresh_adapters(ws: Workspace, corpus: str, new_model: str, sample: int = 5000,
                         holdout: float = 0.2) -> RefreshFit:
    """Pair a sample's stored old vectors with new-model ones, fit new→old and old→new adapters, and
    keep the best of each by retention.

    Retention is measured on held-out documents: their titles (or opening words) embedded by the new
    model must retrieve them from the old index through the adapter, compared with the new index.
    """
    check_name(corpus, "corpus name")
    prod = catalog.get_alias(ws, corpus)
    if prod is None:
        raise NotFound(f"corpus {corpus!r} has no prod version to refresh: ingest it first")
    if prod["model"] == new_model:
        raise BadInput(f"corpus {corpus!r} already serves model {new_model!r}")
    old_engine = get_engine(resolve_model(ws, prod["model"]))
    new_engine = get_engine(resolve_model(ws, new_model))
    docs = sample_documents(ws, prod["space"], prod["version"], sample)
    if len(docs) < 20:
        raise BadInput(f"corpus {corpus!r} has {len(docs)} documents; an adapter needs at least 20")
    texts = [d["text"] for d in docs]
    queries = [d["title"] or " ".join(d["text"].split()[:12]) for d in docs]
    # The old model's document vectors are already in the index: only the new model embeds them.
    old_docs, new_docs = np.stack([d["vector"] for d in docs]), new_engine.embed(texts)
    # Queries are short and documents long: the map is fitted on both, weighted toward what it will
    # be applied to. MiniLM→MPNet, 1,000 Debian docs: description pairs only 87.1% retention,
    # + query pairs 92.5%, query pairs weighted 4× 94.1% (bench/model_change.py).
    old_queries, new_queries = old_engine.embed(queries), new_engine.embed(queries)
    held = np.arange(len(docs)) >= int(len(docs) * (1 - holdout))
    relevant = np.flatnonzero(held)
    fit_new = np.vstack([new_docs[~held]] + [new_queries[~held]] * QUERY_WEIGHT)
    fit_old = np.vstack([old_docs[~held]] + [old_queries[~held]] * QUERY_WEIGHT)
    forward = choose_adapter(fit_new, fit_old, new_queries[held], old_docs, new_docs, relevant)
    forward.adapter.save(adapter_path(ws, corpus, new_model, prod["model"]))
    save_residual_model(residual_path(ws, corpus, new_model), old_docs, new_docs, forward.adapter)
    catalog.record_adapter(ws, corpus, new_model, prod["model"], forward.adapter.kind, forward.retention,
                           str(adapter_path(ws, corpus, new_model, prod["model"])), forward.recalls, len(docs))
    backward = choose_adapter(fit_old, fit_new, old_queries[held], new_docs, old_docs, relevant)
    backward.adapter.save(adapter_path(ws, corpus, prod["model"], new_model))
    catalog.record_adapter(ws, corpus, prod["model"], new_model, backward.adapter.kind, backward.retention,
                           str(adapter_path(ws, corpus, prod["model"], new_model)), backward.recalls, len(docs))
    return RefreshFit(corpus, prod["model"], new_model, forward.adapter.kind, forward.retention,
                      forward.recalls, len(docs))


def save_residual_model(path, old_docs: np.ndarray, new_docs: np.ndarray, adapter: Adapter, alpha: float = 1.0):
    """Fit, on the sample, a ridge predictor of the adapter's residual (1 − cos between a document's
    adapted new vector and its old vector) from the old vector alone — which every document already
    has — so a backfill can embed first the documents the adapter serves worst."""
    residual = 1.0 - np.sum(adapter(new_docs) * old_docs, axis=1)
    x = np.hstack([old_docs, np.ones((len(old_docs), 1), np.float32)]).astype(np.float64)
    w = np.linalg.solve(x.T @ x + alpha * np.eye(x.shape[1]), x.T @ residual)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, weight=w[:-1].astype(np.float32), bias=np.float32(w[-1]))


BACKFILL_ORDERS = ("source", "recent", "residual")


def embed_priority(ws: Workspace, corpus: str, model: str, order: str) -> dict[str, float] | None:
    """Which documents a capped run embeds first: `source` (None: source order), `recent` (most
    recently changed in prod first), `residual` (largest predicted adapter residual first)."""
    if order not in BACKFILL_ORDERS:
        raise BadInput(f"order {order!r}: use one of {', '.join(BACKFILL_ORDERS)}")
    prod = catalog.get_alias(ws, corpus)
    if order == "source" or prod is None:
        return None
    if order == "recent":
        with catalog.reading(ws) as con:
            rows = con.execute("SELECT doc_id, epoch(updated_at) FROM documents WHERE space = ?",
                               [prod["space"]]).fetchall()
        return {doc_id: float(t) for doc_id, t in rows}
    path = residual_path(ws, corpus, model)
    if not path.exists():
        raise NotFound(f"no residual model for {corpus!r} → {model!r}: run `embedline refresh {corpus} --model {model}`")
    fitted = np.load(path)
    table = embeddings.dataset_at(ws, prod["space"], prod["version"]).to_table(
        columns=["doc_id", "vector"], filter="chunk_index = 0")
    scores = embeddings.vector_matrix(table.column("vector")) @ fitted["weight"] + fitted["bias"]
    return dict(zip(table.column("doc_id").to_pylist(), scores.astype(float).tolist()))


def query_vector(ws: Workspace, corpus: str, text: str, model: str | None = None) -> np.ndarray:
    """A query vector in the space the corpus's prod alias serves; through an adapter when `model`
    is not the prod model (zero-downtime upgrades, and old clients after a swap)."""
    prod = catalog.get_alias(ws, corpus)
    if prod is None:
        raise NotFound(f"corpus {corpus!r} has no prod version: run `embedline ingest SOURCE --corpus {corpus}` first")
    model = model or prod["model"]
    vector = get_engine(resolve_model(ws, model)).embed([text])
    if model == prod["model"]:
        return vector[0]
    row = catalog.get_adapter(ws, corpus, model, prod["model"])
    if row is None:
        raise NotFound(f"no adapter maps {model!r} into {corpus!r}'s prod model {prod['model']!r}: "
                       f"run `embedline refresh {corpus} --model {model}` first")
    return Adapter.load(row["path"])(vector)[0]


def swap_if_proven(ws: Workspace, corpus: str, new_model: str, version: int | None) -> dict | None:
    """Point prod at the new space's version if it passed its gates; None (and no move) otherwise."""
    space = space_name(corpus, new_model)
    if version is None:
        version = catalog.latest_passed_version(ws, space)
    if version is None:
        return None
    recorded = catalog.get_version(ws, space, version)
    if recorded is None or recorded["validation"] != "passed":
        return None
    return catalog.promote(ws, corpus, version, space=space)


def refresh_status(ws: Workspace, corpus: str) -> list[dict]:
    """Per registered target model: adapter retention, backfill progress, whether prod serves it."""
    prod = catalog.get_alias(ws, corpus)
    if prod is None:
        raise NotFound(f"corpus {corpus!r} has no prod version")
    with catalog.reading(ws) as con:
        targets = [r[0] for r in con.execute(
            "SELECT DISTINCT from_model FROM adapters WHERE corpus = ? AND from_model <> ?", [corpus, prod["model"]]
        ).fetchall()]
        prod_docs = con.execute("SELECT count(*) FROM documents WHERE space = ?", [prod["space"]]).fetchone()[0]
    rows = []
    for model in sorted(targets):
        adapter = catalog.get_adapter(ws, corpus, model, prod["model"])
        progress = catalog.space_progress(ws, space_name(corpus, model))
        rows.append({
            "model": model, "serving_via": "adapter" if adapter else "native",
            "adapter": adapter["kind"] if adapter else None,
            "retention": adapter["retention"] if adapter else None,
            "backfill_docs": progress["documents"], "corpus_docs": prod_docs,
            "backfill_pct": round(100 * progress["documents"] / prod_docs, 1) if prod_docs else None,
            "backfill_run": progress["last_run"]["status"] if progress["last_run"] else None,
            "prod": prod["space"],
        })
    return rows

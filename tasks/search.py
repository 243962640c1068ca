"""Nearest chunks of a corpus for a text query, over the version its `prod` alias serves."""

from embedline.storage import catalog, embeddings, store_identity
from embedline.errors import BadInput
from embedline.names import check_name
from embedline.workspace import Workspace
from embedline.tasks.embedding import get_engine
from embedline.tasks.models import require_made, serving_spec

RESULT_COLUMNS = ["chunk_id", "doc_id", "chunk_index", "title", "text"]
MAX_K = 10_000  # more hits than a reader can use; SQL over the corpus's view returns any number of rows


def search_corpus(ws: Workspace, corpus: str, query: str, k: int = 10, where: str | None = None,
                  alias: str = "prod", hybrid: bool = False, model: str | None = None) -> list[dict]:
    """Top-`k` chunks by cosine similarity (or hybrid with full text); each hit has doc_id, title, text,
    score."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise BadInput(f"-k must be a whole number from 1 to {MAX_K:,}, got {k!r} (SQL returns any number)")
    if not isinstance(query, str) or not query.strip():
        raise BadInput(f"the query must be text that is not blank, got {query!r}")
    if model is not None:  # refused as a name before any lookup suggests registering it under that name
        check_name(model, "model name")
    target = catalog.get_alias(ws, check_name(corpus, "corpus name"), alias)
    if target is None:
        raise catalog.no_alias(ws, corpus, alias)
    store_identity.require_readable_store(ws)  # rows from another catalog's store would serve unseen
    if model is not None and alias == "prod":
        from embedline.tasks.refresh import query_vector

        vector = query_vector(ws, corpus, query, model)
    else:
        vector = get_engine(serving_spec(ws, target)).embed([query], kind="query")[0]
    hits = embeddings.search(ws, target["space"], target["version"], vector, k, where, RESULT_COLUMNS,
                             text=query if hybrid else None)
    return [{**{c: hit.get(c) for c in RESULT_COLUMNS}, "score": hit["score"]} for hit in hits]


def make_embedder(ws: Workspace):
    """The embedding function handed to the SQL session: (model, texts) -> vectors.

    Specs and what each corpus's prod vectors were made with are read from the catalog now, before the
    session attaches it; models load on first use. A model some corpus's prod vectors did not come from
    (registered again over them) refuses to embed: its vectors would be compared with those.
    """
    from embedline.tasks.models import ModelSpec

    specs = {row["name"]: ModelSpec.from_json(row["spec"]) for row in catalog.list_models(ws)}
    served = catalog.prod_models(ws)

    def embed(model: str, texts: list[str]):
        for corpus, (served_model, stored_key) in served.items():
            if served_model == model:
                require_made(specs[model], stored_key, corpus)
        return get_engine(specs[model]).embed(texts, kind="query")

    return embed


def make_query_embedder(ws: Workspace):
    """For SQL's query_vector(): a query vector in the corpus's prod space (adapted if need be).

    Prod aliases, specs and adapters are read now, before the session attaches the catalog (a write
    session holds it for the session's life), like the snapshot the session's views are built on.
    """
    from embedline.tasks.refresh import QueryRoutes

    return QueryRoutes.read(ws).vector

"""Backward-compatible model change: fit adapters between the prod model and a new one, serve
new-model queries over the old index through them, and swap once the new space is proven."""

import io
import time
from dataclasses import dataclass, field

import numpy as np

from embedline.storage import catalog, embeddings, files, store_identity
from embedline.defaults import PASSAGE_SAMPLE, QUERY_SAMPLE, SAMPLE
from embedline.errors import BadInput, NotFound, SwapRefused
from embedline.names import check_name, space_name
from embedline.workspace import Workspace
from embedline.tasks.adapter_files import load_adapter, save_adapter
from embedline.tasks.adapters import LINEAR, Adapter, AdapterChoice, Pairs, choose_adapter
from embedline.tasks.embedding import get_engine
from embedline.tasks.evaluation import kept_files, require_golden_queries
from embedline.tasks.gates import corpus_gates
from embedline.tasks.models import ModelSpec, require_made, resolve_model, serving_spec
from embedline.tasks.passages import Passage, cut_passages, general_passages


# The fit's pair target: sentences fill up to it, general text only where they run out. 4,000 kept
# retention within noise of 5,000 on both bench corpora (bench/model_change.py) at ~10% less time to serve.
MIN_PAIRS = 4000


@dataclass
class RefreshFit:
    corpus: str
    old_model: str
    new_model: str
    kind: str
    retention: float
    recalls: dict
    sample_size: int
    query_texts: int = 0  # query-like texts of documents outside the sample, in the fit
    serve_seconds: float = 0.0  # from the start of the fit until new-model queries are served
    backward: dict = field(default_factory=dict)  # the old→new adapter: kind, retention, recalls
    passages: int = 0  # sentences cut from the corpus's chunks, in the fit
    general_texts: int = 0  # sentences of the package's general text, only when in-domain pairs were few
    seconds: dict = field(default_factory=dict)  # time to serve, split by stage (load, read, embed, choose)
    served_kind: str = ""  # what served first: the best linear family (the MLP, racing after, may replace it)
    served_retention: float = 0.0


def residual_key(corpus: str, new_model: str) -> str:
    """The residual predictor's place in the file store: a backfill on any worker ranks by it."""
    return f"adapters/{corpus}__{new_model}__residual.npz"


def sample_documents(ws: Workspace, space: str, version: int, limit: int, extra: int = 0,
                     seed: int = 0) -> tuple[list[dict], list[str]]:
    """Up to `limit` documents of a version (each document's first chunk, its title and its stored
    vector), and the query texts of up to `extra` other documents. Rows are sorted by doc_id before the
    seeded shuffle (Lance returns them in no set order), so one corpus gives one sample run after run."""
    table = embeddings.dataset_at(ws, space, version).to_table(
        columns=["doc_id", "title", "text", "vector"], filter="chunk_index = 0")
    table = table.sort_by([("doc_id", "ascending")])
    order = np.random.default_rng(seed).permutation(table.num_rows)
    others = table.select(["title", "text"]).take(order[limit:limit + extra]).to_pylist()
    if table.num_rows > limit:
        table = table.take(np.sort(order[:limit]))
    vectors = embeddings.vector_matrix(table.column("vector"))
    docs = [
        {**row, "vector": vector} for row, vector in zip(table.drop_columns(["vector"]).to_pylist(), vectors)
    ]
    return docs, [query_text(row) for row in others]


def sample_passages(ws: Workspace, space: str, version: int, docs: list[dict], limit: int,
                    seed: int = 0) -> list[Passage]:
    """Up to `limit` sentences cut from every chunk of a version, each owned by its document's index in
    `docs` (-1 for documents outside the sample); chunks are read in (doc_id, chunk_index) order."""
    table = embeddings.dataset_at(ws, space, version).to_table(columns=["doc_id", "chunk_index", "text"])
    table = table.sort_by([("doc_id", "ascending"), ("chunk_index", "ascending")])
    owner = {doc["doc_id"]: i for i, doc in enumerate(docs)}
    owners = [owner.get(doc_id, -1) for doc_id in table.column("doc_id").to_pylist()]
    return cut_passages(table.column("text").to_pylist(), owners, limit, seed)


def query_text(doc: dict) -> str:
    """What stands in for a user's query about a document: its title, or its opening words."""
    return doc["title"] or " ".join(doc["text"].split()[:12])


def fit_refresh_adapters(ws: Workspace, corpus: str, new_model: str, sample: int = SAMPLE,
                         query_sample: int = QUERY_SAMPLE, passage_sample: int = PASSAGE_SAMPLE,
                         min_pairs: int = MIN_PAIRS) -> RefreshFit:
    """Pair a sample's stored old vectors with new-model ones and fit the new→old adapter (serving
    starts the moment it is recorded), then the old→new one; each the best family by retention.
    New-model queries are served as soon as the best linear family is chosen; the residual MLP, which
    costs far more to fit, races after that on the same folds and replaces it only where it wins.

    The fit pairs the sample's documents, their query texts (titles, or opening words), the query texts
    of `query_sample` further documents, and sentences cut from every chunk of the corpus (at most
    `passage_sample`, and only as many as bring the fit to `min_pairs` pairs: each costs a new-model
    forward pass, and time to serve is what a refresh promises to keep short): queries are what an
    adapter maps, and short texts are cheap to embed (MPNet on CPU: a title costs ~1/7 of a description).
    Only when all of these make fewer than `min_pairs` pairs (a corpus of a few hundred documents) do
    sentences of general text shipped with the package fill the gap.
    """
    started = time.perf_counter()
    clock = Stopwatch()
    check_name(corpus, "corpus name")
    prod = catalog.get_alias(ws, corpus)
    if prod is None:
        raise catalog.no_alias(ws, corpus)
    if prod["model"] == new_model:
        raise BadInput(f"corpus {corpus!r} already serves model {new_model!r}")
    store_identity.require_readable_store(ws)  # an adapter fitted on another catalog's vectors would serve
    store_identity.bind_file_store(ws, kept_files)  # the adapter goes where every host's search reads it
    require_golden_queries(ws, corpus, corpus_gates(ws, corpus)["min_golden_recall"] > 0)  # the backfill's
    old_engine = get_engine(serving_spec(ws, prod))  # the model that made prod's vectors, or refused
    new_engine = get_engine(resolve_model(ws, new_model))
    clock.lap("load_models")
    docs, extra = sample_documents(ws, prod["space"], prod["version"], sample, query_sample)
    if len(docs) < 20:
        raise BadInput(f"corpus {corpus!r} has {len(docs)} documents; an adapter needs at least 20")
    # Sentences fill the fit up to `min_pairs` pairs, no further: each costs a new-model forward pass.
    wanted = min(passage_sample, max(0, min_pairs - 2 * len(docs) - len(extra)))
    passages = sample_passages(ws, prod["space"], prod["version"], docs, wanted)
    general = general_passages(min_pairs - 2 * len(docs) - len(extra) - len(passages))
    short = [query_text(d) for d in docs] + extra + general + [p.text for p in passages]
    clock.lap("read")
    # The old model's document vectors are already in the index: only the new model embeds documents.
    old_short = embed_once(old_engine, short)
    clock.lap("embed_short_old")
    new_short = embed_once(new_engine, short)
    clock.lap("embed_short_new")
    new_docs = new_engine.embed([d["text"] for d in docs])
    clock.lap("embed_docs_new")
    n, m = len(docs), len(docs) + len(extra) + len(general)
    pairs = Pairs(new_docs, np.stack([d["vector"] for d in docs]),
                  new_short[:n], old_short[:n], new_short[n:m], old_short[n:m], new_short[m:], old_short[m:],
                  np.array([p.owner for p in passages], dtype=np.int64))
    first = choose_adapter(pairs, families=LINEAR)  # closed forms: a second or so for all five folds
    clock.lap("choose")
    record(ws, corpus, new_model, prod["model"], first, len(docs))
    clock.lap("record")
    serve_seconds = time.perf_counter() - started  # `--model NEW` queries are served from here on
    forward = choose_adapter(pairs)  # the residual MLP races the linear families (the same folds)
    # recorded again: the MLP if it won (it serves from now on), else the same adapter with every
    # family's figures, so the catalog shows the whole race
    record(ws, corpus, new_model, prod["model"], forward, len(docs))
    save_residual_model(ws, residual_key(corpus, new_model), pairs.docs_y, pairs.docs_x, forward.adapter)
    backward = choose_adapter(pairs.reversed())
    record(ws, corpus, prod["model"], new_model, backward, len(docs))
    back = {"kind": backward.adapter.kind, "retention": backward.retention, "recalls": backward.recalls}
    return RefreshFit(
        corpus,
        prod["model"],
        new_model,
        forward.adapter.kind,
        forward.retention,
        forward.recalls,
        len(docs),
        len(extra),
        serve_seconds,
        back,
        len(passages),
        len(general),
        clock.seconds,
        first.adapter.kind,
        first.retention,
    )


class Stopwatch:
    """Seconds per named stage, each from the end of the previous one: where time to serve goes."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = round(self.seconds.get(stage, 0.0) + now - self._last, 3)
        self._last = now


def embed_once(engine, texts: list[str], kind: str = "query") -> np.ndarray:
    """Vectors for `texts` in order, each distinct text embedded once (titles and sentences repeat)."""
    distinct = list(dict.fromkeys(texts))
    row = {text: i for i, text in enumerate(distinct)}
    return engine.embed(distinct, kind=kind)[[row[text] for text in texts]]


def record(
    ws: Workspace, corpus: str, from_model: str, to_model: str, choice: AdapterChoice, sample: int
) -> None:
    """Save an adapter's weights to the file store and record it (store key + sha256) with its figures;
    queries use it from then on, on any machine sharing the catalog and the store."""
    key, digest = save_adapter(ws, choice.adapter, corpus, from_model, to_model)
    catalog.record_adapter(ws, corpus, from_model, to_model, choice.adapter.kind, choice.retention, key,
                           choice.recalls, sample, digest)


def save_residual_model(
    ws: Workspace, key: str, old_docs: np.ndarray, new_docs: np.ndarray, adapter: Adapter, alpha: float = 1.0
) -> None:
    """Fit, on the sample, a ridge predictor of the adapter's residual (1 − cos between a document's
    adapted new vector and its old vector) from the old vector alone — which every document already
    has — so a backfill can embed first the documents the adapter serves worst."""
    residual = 1.0 - np.sum(adapter(new_docs) * old_docs, axis=1)
    x = np.hstack([old_docs, np.ones((len(old_docs), 1), np.float32)]).astype(np.float64)
    w = np.linalg.solve(x.T @ x + alpha * np.eye(x.shape[1]), x.T @ residual)
    buffer = io.BytesIO()
    np.savez(buffer, weight=w[:-1].astype(np.float32), bias=np.float32(w[-1]))
    files.open_store(ws).write_bytes(key, buffer.getvalue())


BACKFILL_ORDERS = ("source", "recent", "residual")


def check_backfill(batch_docs: int, order: str, what: str = "batch_docs") -> None:
    """Refuse a batch size below 1 (a backfill would never finish) and an unknown order before anything
    runs: found later, they cost a source diff, a failed run, or a background backfill failing unseen."""
    if isinstance(batch_docs, bool) or not isinstance(batch_docs, int) or batch_docs < 1:
        flag = what.replace("_", "-")
        raise BadInput(f"{what} {batch_docs!r}: give the documents each committed run embeds, a whole "
                       f"number of at least 1 (--{flag} N, or {what}=N from Python)")
    check_order(order)


def check_order(order: str) -> None:
    if order not in BACKFILL_ORDERS:
        raise BadInput(f"order {order!r}: use one of {', '.join(BACKFILL_ORDERS)}")


def embed_priority(ws: Workspace, corpus: str, model: str, order: str) -> dict[str, float] | None:
    """Which documents a capped run embeds first: `source` (None: source order), `recent` (most
    recently changed in prod first), `residual` (largest predicted adapter residual first)."""
    check_order(order)
    prod = catalog.get_alias(ws, corpus)
    if order == "source" or prod is None:
        return None
    if order == "recent":
        with catalog.reading(ws) as con:
            rows = con.execute("SELECT doc_id, epoch(updated_at) FROM documents WHERE space = ?",
                               [prod["space"]]).fetchall()
        return {doc_id: float(t) for doc_id, t in rows}
    store = files.open_store(ws)
    if not store.exists(residual_key(corpus, model)):
        raise NotFound(
            f"no residual model for {corpus!r} → {model!r}: "
            f"run `embedline refresh {corpus} --model {model}`"
        )
    fitted = np.load(io.BytesIO(store.read_bytes(residual_key(corpus, model))))
    table = embeddings.dataset_at(ws, prod["space"], prod["version"]).to_table(
        columns=["doc_id", "vector"], filter="chunk_index = 0")
    scores = embeddings.vector_matrix(table.column("vector")) @ fitted["weight"] + fitted["bias"]
    return dict(zip(table.column("doc_id").to_pylist(), scores.astype(float).tolist()))


@dataclass
class QueryRoutes:
    """What a query vector needs from the catalog, read in one go: each corpus's prod model (and the key
    its vectors were made with), the model specs and the newest adapters. A SQL session reads it before
    it attaches the catalog for writing, since DuckDB refuses a second handle on the same file in one
    process."""

    prod_models: dict[str, tuple[str, str | None]]  # corpus → (model, key of the vectors) prod serves
    specs: dict[str, ModelSpec]
    adapters: dict[tuple[str, str, str], tuple[str, str | None]]  # (corpus, from, to) → (key, sha256)
    workspace: Workspace | None = None  # where adapter files are fetched to (its cache)

    @classmethod
    def read(cls, ws: Workspace) -> "QueryRoutes":
        specs = {row["name"]: ModelSpec.from_json(row["spec"]) for row in catalog.list_models(ws)}
        return cls(catalog.prod_models(ws), specs, catalog.latest_adapters(ws), ws)

    def vector(self, corpus: str, text: str, model: str | None = None) -> np.ndarray:
        """A query vector in the space the corpus's prod alias serves; through an adapter when `model`
        is not the prod model (zero-downtime upgrades, and old clients after a swap)."""
        if corpus not in self.prod_models:
            raise NotFound(f"corpus {corpus!r} has no prod version here (`embedline versions {corpus}` says "
                           "why)")
        served, stored_key = self.prod_models[corpus]
        model = check_name(model, "model name") if model else served
        if model not in self.specs:
            raise NotFound(
                f"model {model!r} is not registered: run `embedline models add {model} PATH` first"
            )
        if model == served:
            spec = require_made(self.specs[model], stored_key, corpus)
            return get_engine(spec).embed([text], kind="query")[0]
        vector = get_engine(self.specs[model]).embed([text], kind="query")
        found = self.adapters.get((corpus, model, served))
        if found is None:
            raise NotFound(f"no adapter maps {model!r} into {corpus!r}'s prod model {served!r}: "
                           f"run `embedline refresh {corpus} --model {model}` first")
        return load_adapter(self.workspace, *found)(vector)[0]


def query_vector(ws: Workspace, corpus: str, text: str, model: str | None = None) -> np.ndarray:
    """A query vector in the space the corpus's prod alias serves (see `QueryRoutes.vector`)."""
    return QueryRoutes.read(ws).vector(corpus, text, model)


def swap_if_proven(ws: Workspace, corpus: str, new_model: str, version: int | None) -> dict | None:
    """Point prod at the new space's version if it passed its gates; None (and no move) otherwise.

    Refused (`SwapRefused`) while a rollback holds prod and when the version lacks documents prod serves:
    a swap must never shrink what prod serves (a corpus built from several sources, a source that shrank
    since). Refused (`SwapStale`, checked in the swap's own transaction) when prod's space changed after
    the new space last read the source: the swap must not bring back text a scheduled ingest has since
    changed or deleted in prod. A new space fresher than prod (the source changed since prod's last run)
    swaps: it serves the newer text.
    """
    space = space_name(corpus, new_model)
    if version is None:
        version = catalog.latest_passed_version(ws, space)
    if version is None:
        return None
    recorded = catalog.get_version(ws, space, version)
    if recorded is None or recorded["validation"] != "passed":
        return None
    prod = catalog.get_alias(ws, corpus)
    if prod is not None and prod["held"]:
        raise SwapRefused(f"prod of {corpus!r} is held (rolled back): {space} version {version} passed and "
                          f"waits; `embedline promote {corpus} {version} --space {space}` swaps to it")
    if prod is not None:
        require_coverage(ws, prod, new_model, version)
    expect = (prod["space"], prod["version"]) if prod else ()  # a rollback meanwhile wins over this swap
    return catalog.promote(ws, corpus, version, space=space, expect=expect, fresh=True)


def require_coverage(ws: Workspace, prod: dict, model: str, version: int) -> None:
    """Raise `SwapRefused` naming how many of the documents prod serves `model`'s space lacks at `version`
    (read from Lance, outside the catalog's write turn; a document prod gains meanwhile fails the swap's
    freshness check instead)."""
    space = space_name(prod["corpus"], model)
    served = embeddings.doc_ids(ws, prod["space"], prod["version"])
    missing = sorted(served - embeddings.doc_ids(ws, space, version))
    if missing:
        raise SwapRefused(
            f"{space} version {version} lacks {len(missing)} of the {len(served)} documents prod serves "
            f"(e.g. {', '.join(missing[:3])}): ingest their sources with `--model {model}`, or let an "
            f"ingest of {prod['space']} drop those gone from its source; "
            f"`embedline promote {prod['corpus']} {version} --space {space}` swaps anyway")


def refresh_status(ws: Workspace, corpus: str) -> list[dict]:
    """Per registered target model: adapter retention, backfill progress, whether prod serves it."""
    prod = catalog.get_alias(ws, corpus)
    if prod is None:
        raise catalog.no_alias(ws, corpus)
    with catalog.reading(ws) as con:
        targets = [
            r[0]
            for r in con.execute(
                "SELECT DISTINCT from_model FROM adapters WHERE corpus = ? AND from_model <> ?",
                [corpus, prod["model"]],
            ).fetchall()
        ]
        prod_docs = con.execute("SELECT count(*) FROM documents WHERE space = ?", [prod["space"]]).fetchone()[
            0
        ]
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

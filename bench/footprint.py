"""Storage options on a Debian slice: bytes per vector, index size, recall@10 against exact float32, p50.

    python bench/footprint.py [--docs 2000] [--queries 200] [--rounds 3]
    python bench/footprint.py --home WORKSPACE --corpus NAME     # an already ingested corpus

Ingests the first `--docs` packages of the shared Debian corpus (the bundled 2,000-document slice when
the shared one is absent) with the default model (MiniLM, 384-d), then runs `embedline footprint` on it:
each option is laid out in a scratch copy of prod's vectors and searched with package synopses (titles),
each expected to find its own package. Prints the CPU, the table, and writes bench/out/footprint.json.
About 3 minutes on 2 cores with the defaults; the index kinds only partition past 8,192 rows (IVF) and
1M rows (HNSW), so larger `--docs` show more of their cost.
"""

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def cpu_description() -> dict:
    """The CPU the figures come from: model, cores, and the flags that decide bf16 and SIMD paths."""
    import os

    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    fields = [line.split(":", 1) for line in text.splitlines() if ":" in line]
    model = next(
        (value.strip() for name, value in fields if name.strip() == "model name"), platform.processor()
    )
    flags = next((value.split() for name, value in fields if name.strip() == "flags"), [])
    wanted = ["avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "f16c"]
    return {"model": model, "cores": os.cpu_count(), "flags": [f for f in wanted if f in flags]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", help="workspace holding an ingested corpus")
    parser.add_argument("--corpus", default="debian")
    parser.add_argument("--docs", type=int, default=2000, help="with no --home: documents to ingest first")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "footprint.json"))
    args = parser.parse_args()

    from embedline.flows.output import render
    from embedline.storage import catalog
    from embedline.tasks.footprint import COLUMNS, measure_footprint
    from embedline.workspace import Workspace

    started = time.perf_counter()
    if args.home:
        ws = Workspace.from_env(args.home)
    else:
        from bench.incremental import write_slice
        from embedline.flows.ingest import ingest_corpus

        ws = Workspace.from_env(tempfile.mkdtemp(prefix="embedline-footprint-")).ensure()
        source = ws.home / "corpus.jsonl"
        write_slice(source, args.docs)
        ingest_corpus(str(source), args.corpus, home=str(ws.home))
    ingested = time.perf_counter() - started
    alias = catalog.get_alias(ws, args.corpus)
    rows = measure_footprint(ws, args.corpus, args.queries, rounds=args.rounds)
    measured = time.perf_counter() - started - ingested
    cpu = cpu_description()
    chunks = catalog.get_version(ws, alias["space"], alias["version"])["row_count"]

    flags = " ".join(cpu["flags"]) or "(none of interest)"
    print(f"CPU: {cpu['model']} · {cpu['cores']} cores · flags {flags}")
    print(f"{args.corpus}: {chunks} chunks of model {alias['model']} · up to {args.queries} title queries "
          f"· {args.rounds} timed rounds · ingest {ingested:.0f} s, footprint {measured:.0f} s")
    print(render(COLUMNS, [tuple(r[c] for c in COLUMNS) for r in rows]))
    result = {"cpu": cpu, "corpus": args.corpus, "model": alias["model"], "chunks": chunks,
              "queries": args.queries, "rounds": args.rounds, "ingest_seconds": round(ingested, 1),
              "footprint_seconds": round(measured, 1), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

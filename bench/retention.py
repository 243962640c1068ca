"""Disk use of a space over nightly cycles (a 1%-changed ingest, then `maintain`), pruning against
keeping every run's tagged version, both in this process.

    python bench/retention.py [--docs 2000] [--cycles 12] [--changed 0.01] [--keep 3] [--model minilm]

Every run's Lance version is tagged (`run-<n>`); before `maintain --keep-versions` a tag was never
dropped, so the space grew with every run's changes however short the retention. Each cycle counts as a
day gone by: both arms run maintain with retention 0 (what a nightly maintain does to last week's
versions). The baseline keeps every version (`keep_versions` above the number of runs); the pruning arm
keeps the newest `--keep` passed versions and prod's. Prints the space's bytes on disk after each cycle.
"""

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.incremental import write_slice  # noqa: E402
from bench.pipeline import cpu_flags  # noqa: E402


def disk_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def run_arm(home: Path, records: list[dict], cycles: int, changed: float, keep: int, model: str) -> list[int]:
    """Ingest, then per cycle edit `changed` of the documents, ingest and maintain; bytes after each."""
    from embedline.flows.ingest import ingest_corpus
    from embedline.flows.maintain import maintain_corpus

    records = [dict(r) for r in records]
    home.mkdir(parents=True)
    source = home / "corpus.jsonl"
    rng = random.Random(0)  # both arms edit the same documents
    sizes = []
    for cycle in range(cycles + 1):
        if cycle:
            for record in rng.sample(records, max(1, int(len(records) * changed))):
                record["text"] += f"\n\nEdited on day {cycle}."
        source.write_text("".join(json.dumps(r) + "\n" for r in records))
        ingest_corpus(str(source), "bench", model, home=str(home / "ws"))
        maintain_corpus("bench", retention_days=0, keep_versions=keep, home=str(home / "ws"))
        sizes.append(disk_bytes(home / "ws" / "lance"))
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--cycles", type=int, default=12)
    parser.add_argument("--changed", type=float, default=0.01)
    parser.add_argument("--keep", type=int, default=3)
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "retention.json"))
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="embedline-retention-"))
    records = write_slice(base / "slice.jsonl", args.docs)
    keep_all = run_arm(base / "keep-all", records, args.cycles, args.changed, 1_000_000, args.model)
    pruned = run_arm(base / "pruned", records, args.cycles, args.changed, args.keep, args.model)

    print(f"{args.docs} docs · {args.changed:.0%} changed per cycle · model {args.model} · "
          f"cpu flags: {cpu_flags()}")
    print(f"{'cycle':>5} {'keep all (bytes)':>17} {f'keep {args.keep} (bytes)':>17} {'÷ keep all':>11}")
    for cycle, (full, kept) in enumerate(zip(keep_all, pruned)):
        print(f"{cycle:5d} {full:17,} {kept:17,} {kept / full:11.3f}")
    growth_all = (keep_all[-1] - keep_all[0]) / args.cycles
    growth_kept = (pruned[-1] - pruned[args.keep]) / max(1, args.cycles - args.keep)
    print(f"growth per cycle: keep all {growth_all:,.0f} bytes; keep {args.keep} (after cycle {args.keep}) "
          f"{growth_kept:,.0f} bytes")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({
        "docs": args.docs, "cycles": args.cycles, "changed": args.changed, "keep": args.keep,
        "model": args.model, "cpu_flags": cpu_flags(), "keep_all_bytes": keep_all, "pruned_bytes": pruned,
        "growth_per_cycle": {"keep_all": growth_all, "pruned": growth_kept}}, indent=2))


if __name__ == "__main__":
    main()

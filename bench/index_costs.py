"""What keeping a space's vector index honest costs after a write, as the table grows.

    python bench/index_costs.py [--rows 100000] [--dim 384]

After every write embedline measures recall@10 of the index against exact search on 100 queries. 0.2.0
ran one exact scan of the table per query; now one streamed pass serves every query
(`storage.index.exact_kth_distances`). Both run here on the same table, in alternating rounds, and must
give the same recall. Vectors are clustered random ones (no model), so only the index's cost is
measured. Prints the CPU, seconds per measurement, the ratio and peak RSS; writes bench/out/index_costs.json.
"""

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.footprint import cpu_description  # noqa: E402
from embedline.storage import index  # noqa: E402


def clustered_vectors(rows: int, dim: int, seed: int = 0) -> np.ndarray:
    """Rows around 256 random centres: an index sees structure, as with text embeddings."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((256, dim)).astype(np.float32)
    return centres[rng.integers(0, 256, rows)] + 0.5 * rng.standard_normal((rows, dim)).astype(np.float32)


def per_query_scans_recall(table, queries: int = 100, k: int = 10, seed: int = 0) -> float:
    """0.2.0's measurement: an exact scan of the whole table for each query (and the dataset opened again)."""
    sample = table.to_lance().sample(min(queries, table.count_rows()), columns=["vector"])
    vectors = np.stack(sample.column("vector").to_numpy(zero_copy_only=False)).astype(np.float32)
    noisy = vectors + 0.1 * np.random.default_rng(seed).standard_normal(vectors.shape).astype(np.float32) / (
        vectors.shape[1] ** 0.5)
    hits = 0
    for query in noisy:
        exact = table.search(query).distance_type("cosine").limit(k).select(["chunk_id"])
        kth = max(r["_distance"] for r in exact.bypass_vector_index().to_list())
        ann = table.to_lance().to_table(nearest=index.nearest(query, k), columns=["_distance"],
                                        disable_scoring_autoprojection=True).to_pylist()
        hits += sum(r["_distance"] <= kth + 1e-6 for r in ann)  # one kernel (Lance) on both sides
    return round(hits / (k * len(noisy)), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "index_costs.json"))
    args = parser.parse_args()

    import lancedb
    import pyarrow as pa

    vectors = clustered_vectors(args.rows, args.dim)
    ids = [f"c{i}" for i in range(args.rows)]
    rows = pa.table({"chunk_id": ids, "doc_id": ids,
                     "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), args.dim)})
    del vectors
    with tempfile.TemporaryDirectory() as home:
        table = lancedb.connect(home).create_table("space", rows)
        started = time.perf_counter()
        index.build_vector_index(table)
        build = time.perf_counter() - started
        timings = {"per-query scans (0.2.0)": [], "one streamed pass": []}
        recalls = {}
        for _ in range(args.rounds):
            for name, measure in (("per-query scans (0.2.0)", per_query_scans_recall),
                                  ("one streamed pass", index.measure_recall)):
                started = time.perf_counter()
                recalls[name] = measure(table)
                timings[name].append(time.perf_counter() - started)
    median = {name: statistics.median(values) for name, values in timings.items()}
    baseline = median["per-query scans (0.2.0)"]
    report = {
        "cpu": cpu_description(), "rows": args.rows, "dim": args.dim, "index_build_s": round(build, 2),
        "rows_out": [{"name": name, "seconds": round(median[name], 3),
                      "speedup": round(baseline / median[name], 2), "recall@10": recalls[name]}
                     for name in timings],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    cpu = report["cpu"]
    print(f"CPU: {cpu['model']}, {cpu['cores']} cores, flags {' '.join(cpu['flags'])}")
    print(f"{args.rows:,} vectors of {args.dim} dims; IVF_HNSW_SQ built in {build:.1f} s")
    print(f"{'recall measurement after a write':<34} {'seconds':>8} {'× 0.2.0':>8} {'recall@10':>10}")
    for row in report["rows_out"]:
        print(f"{row['name']:<34} {row['seconds']:>8.3f} {row['speedup']:>8.2f} {row['recall@10']:>10.4f}")
    print(f"peak RSS {report['peak_rss_mb']} MB")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

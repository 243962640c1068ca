"""Validation cost against embedding cost, for a 64k-chunk batch.

    python bench/validation_cost.py [--chunks 64000] [--sample-docs 400]

Validation (GX suites + RankMe, isotropy, near-duplicates) runs on a synthetic batch of `--chunks`
normalized 384-d vectors. Embedding time for the same batch is measured, not assumed: MiniLM embeds
`--sample-docs` real Debian descriptions in this process, and the tokens/s it reaches is applied to
`--chunks` chunks of the sample's mean length. Goal (issue 5): validation ≤5% of embedding time.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.embed_throughput import load_texts  # noqa: E402
from embedline.storage.embeddings import chunk_schema  # noqa: E402
from embedline.tasks.embedding import Engine  # noqa: E402
from embedline.tasks.models import default_model_path, read_model_dir  # noqa: E402
from embedline.validation.suite import Expectations, validate_batch  # noqa: E402


def synthetic_batches(n: int, dim: int, per_batch: int = 4096):
    rng = np.random.default_rng(0)
    for start in range(0, n, per_batch):
        size = min(per_batch, n - start)
        v = rng.standard_normal((size, dim)).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        yield pa.RecordBatch.from_pydict({
            "chunk_id": [f"c{i}" for i in range(start, start + size)],
            "doc_id": [f"d{i}" for i in range(start, start + size)],
            "chunk_index": [0] * size, "text": ["some chunk text"] * size, "title": ["t"] * size,
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1)), dim),
            "model_key": ["k"] * size, "run_id": [1] * size,
        }, schema=chunk_schema(dim))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=64000)
    parser.add_argument("--sample-docs", type=int, default=400)
    args = parser.parse_args()

    spec = read_model_dir("minilm", default_model_path())
    engine = Engine(spec, device="cpu")
    texts = load_texts(args.sample_docs)
    engine.embed(texts[:32])
    tokens_before = engine.tokens_embedded
    started = time.perf_counter()
    engine.embed(texts)
    embed_seconds = time.perf_counter() - started
    tokens = engine.tokens_embedded - tokens_before
    tokens_per_s = tokens / embed_seconds
    est_embed = args.chunks * (tokens / len(texts)) / tokens_per_s

    batches = list(synthetic_batches(args.chunks, spec.out_dim))
    counts = {"docs_read": args.chunks, "docs_new": args.chunks}
    report_dir = Path(tempfile.mkdtemp()) / "gx"
    validate_batch("warm__up", batches[:1], {"docs_read": 4096, "docs_new": 4096}, 4096,
                   Expectations(spec.out_dim, "k"), report_dir=report_dir)  # imports GX
    started = time.perf_counter()
    report = validate_batch("bench__space", batches, counts, args.chunks, Expectations(spec.out_dim, "k"),
                            report_dir=report_dir)
    validate_seconds = time.perf_counter() - started
    print(
        f"embedding: {tokens} tokens of {len(texts)} docs in {embed_seconds:.1f} s = {tokens_per_s:,.0f} tokens/s "
        f"({engine.spec.precision}); {args.chunks:,} chunks ≈ {est_embed:,.0f} s"
    )
    print(
        f"validation of {args.chunks:,} chunks (GX file context + Data Docs + metrics): {validate_seconds:.1f} s, "
        f"passed={report.passed}"
    )
    print(f"validation / embedding: {100 * validate_seconds / est_embed:.2f}%")


if __name__ == "__main__":
    main()

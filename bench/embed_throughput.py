"""Embedding throughput: sentence-transformers `encode` vs embedline's engine, same model, same machine.

Runs both interleaved in one process for several rounds (machines here are shared and noisy), then
prints docs/s and tokens/s per contender (median round), the ratio against sentence-transformers, and
the minimum cosine between each contender's vectors and sentence-transformers' fp32 vectors.

    python bench/embed_throughput.py [--docs 600] [--rounds 3] [--model-path DIR] [--device cpu|cuda]
"""

import argparse
import gzip
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from embedline.tasks.embedding import Engine, choose_device, choose_precision  # noqa: E402
from embedline.tasks.models import default_model_path, read_model_dir  # noqa: E402

SHARED = ROOT.parent / "shared" / "corpora" / "debian-packages.jsonl.gz"
BUNDLED = ROOT / "embedline" / "data" / "debian-2k.jsonl.gz"


def load_texts(n: int) -> list[str]:
    """The first n descriptions of the shared Debian corpus (or the bundled slice on a bare clone)."""
    path = SHARED if SHARED.exists() else BUNDLED
    texts = []
    with gzip.open(path, "rt") as fh:
        for line in fh:
            text = json.loads(line)["text"]
            if text.strip():
                texts.append(text)
            if len(texts) == n:
                break
    return texts


def timed(fn, texts):
    started = time.perf_counter()
    out = fn(texts)
    return out, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--model-path", default=None, help="local sentence-transformers model (default: bundled MiniLM)"
    )
    parser.add_argument("--device", default=None)
    parser.add_argument(
        "--token-budget", type=int, default=None, help="default: the engine's per-device budget"
    )
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "embed_throughput.json"))
    args = parser.parse_args()

    from sentence_transformers import SentenceTransformer

    path = args.model_path or default_model_path()
    device = choose_device(args.device)
    spec = read_model_dir("bench", path)
    texts = load_texts(args.docs)
    auto_precision = choose_precision(device)

    st = SentenceTransformer(path, device=device, local_files_only=True)
    st.max_seq_length = spec.max_tokens
    engines = {f"embedline {auto_precision} (auto)": Engine(spec, device=device, precision=auto_precision,
                                                             token_budget=args.token_budget)}
    if auto_precision != "fp32":
        engines["embedline fp32"] = Engine(
            spec, device=device, precision="fp32", token_budget=args.token_budget
        )
    tokens = sum(len(ids) for ids in next(iter(engines.values())).tokenize(texts))

    contenders = {
        "sentence-transformers fp32 batch 32": lambda batch: st.encode(
            batch, batch_size=32, normalize_embeddings=True, convert_to_numpy=True
        )
    }
    contenders.update({name: engine.embed for name, engine in engines.items()})
    for fn in contenders.values():  # warm-up: first calls pay allocator and kernel set-up
        fn(texts[:64])
    seconds = {name: [] for name in contenders}
    outputs = {}
    for _ in range(args.rounds):
        for name, fn in contenders.items():
            outputs[name], took = timed(fn, texts)
            seconds[name].append(took)

    reference = outputs["sentence-transformers fp32 batch 32"]
    baseline = statistics.median(seconds["sentence-transformers fp32 batch 32"])
    rows = []
    print(f"model {Path(path).name} · device {device} · {len(texts)} docs · {tokens} tokens "
          f"(≤{spec.max_tokens}/doc) · {args.rounds} interleaved rounds · torch threads "
          f"{__import__('torch').get_num_threads()}")
    print(
        f"{'contender':40} {'median s':>9} {'docs/s':>9} {'tokens/s':>10} {'× ST':>6} {'min cos vs ST':>14}"
    )
    for name, took in seconds.items():
        median = statistics.median(took)
        cosine = float((np.asarray(outputs[name]) * reference).sum(axis=1).min())
        row = {
            "contender": name,
            "median_seconds": round(median, 3),
            "docs_per_s": round(len(texts) / median, 1),
            "tokens_per_s": round(tokens / median),
            "ratio_vs_st": round(baseline / median, 2),
            "min_cosine_vs_st": round(cosine, 6),
            "rounds": [round(t, 3) for t in took],
        }
        rows.append(row)
        print(f"{name:40} {median:9.2f} {row['docs_per_s']:9.1f} {row['tokens_per_s']:10d} "
              f"{row['ratio_vs_st']:6.2f} {cosine:14.6f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps({"device": device, "docs": len(texts), "tokens": tokens, "rows": rows}, indent=2)
    )


if __name__ == "__main__":
    main()

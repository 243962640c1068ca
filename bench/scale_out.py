"""Scale-out on one machine: the same ingest deployment run with one gpu-pool worker, then split into
shards over two workers (each `make serve`-started, against a real Prefect server).

    python bench/scale_out.py [--docs 2000] [--model minilm] [--threads-per-worker N]

Prints each run's wall time (flow run start → end, from the Prefect API), its embedding span (first
shard start → last shard end), the speedup of two workers over one, and whether both runs wrote the
same table (same chunk ids and text; max |Δ| of the vectors).
On a machine without GPUs the two workers split the CPU cores (OMP_NUM_THREADS = cores / workers)
while the single worker has them all, so the speedup here is what parallel shards add beyond torch's
own threading; on a machine with one GPU per worker it is the GPUs'. `--threads-per-worker 1` gives
every worker the same resources in both setups (as one GPU per worker would), which measures how the
fan-out itself scales.
"""

import argparse
import os
import socket
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.incremental import write_slice  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def seconds(run: dict) -> tuple[datetime, datetime]:
    return datetime.fromisoformat(run["start_time"]), datetime.fromisoformat(run["end_time"])


def serve_and_run(tmp: Path, name: str, workers: int, corpus: str, source: Path, model: str, shard_size: int,
                  threads: int | None) -> dict:
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(EMBEDLINE_SERVE_DIR=str(tmp / name), EMBEDLINE_HOME=str(tmp / "home"), PREFECT_PORT=str(port),
               GPU_WORKERS=str(workers), PREFECT_WORKER_QUERY_SECONDS="2", VENV=sys.prefix)
    if threads:
        env["WORKER_THREADS"] = str(threads)
    subprocess.run(
        [str(ROOT / "deploy/local/serve.sh")], env=env, check=True, capture_output=True, timeout=300
    )
    try:
        params = {"source": str(source), "corpus": corpus, "model": model, "shard_size": shard_size}
        result = subprocess.run(
            [
                str(Path(sys.prefix) / "bin" / "prefect"),
                "deployment",
                "run",
                "ingest-corpus/ingest-debian",
                "--watch",
                "--watch-timeout",
                "3600",
                *[a for k, v in params.items() for a in ("--param", f"{k}={v}")],
            ],
            env={**env, "PREFECT_API_URL": api},
            capture_output=True,
            text=True,
            timeout=3700,
        )
        if result.returncode != 0:
            raise SystemExit(f"the {name} run failed:\n{result.stdout[-4000:]}\nworker logs: {tmp / name}")

        def runs(flow: str) -> list[dict]:
            body = {"flows": {"name": {"any_": [flow]}}}
            return httpx.post(f"{api}/flow_runs/filter", json=body, timeout=30).raise_for_status().json()

        (parent,) = runs("ingest-corpus")
        shards = runs("embed-shard")
        assert parent["state_type"] == "COMPLETED" and all(s["state_type"] == "COMPLETED" for s in shards)
        start, end = seconds(parent)
        spans = [seconds(s) for s in shards]
        return {"wall": (end - start).total_seconds(), "shards": len(shards),
                "embed": (max(e for _, e in spans) - min(s for s, _ in spans)).total_seconds()}
    finally:
        subprocess.run([str(ROOT / "deploy/local/stop.sh")], env=env, capture_output=True, timeout=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--threads-per-worker", type=int, default=None)
    args = parser.parse_args()

    from embedline.storage import embeddings
    from embedline.workspace import Workspace

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        source = tmp / "slice.jsonl"
        write_slice(source, args.docs)
        threads = args.threads_per_worker
        one = serve_and_run(tmp, "one", 1, "debian", source, args.model, args.docs, threads)
        two = serve_and_run(tmp, "two", 2, "debian_two", source, args.model, (args.docs + 1) // 2, threads)

        ws = Workspace.from_env(tmp / "home")
        tables = [
            embeddings.dataset_at(ws, f"{c}__{args.model}")
            .to_table(columns=["chunk_id", "text", "vector"])
            .sort_by("chunk_id")
            for c in ("debian", "debian_two")
        ]
        same_rows = all(tables[0].column(c).equals(tables[1].column(c)) for c in ("chunk_id", "text"))
        delta = float(np.abs(embeddings.vector_matrix(tables[0].column("vector"))
                             - embeddings.vector_matrix(tables[1].column("vector"))).max())

    print(f"scale-out: {args.docs} Debian docs, model {args.model}, {os.cpu_count()} cores, "
          f"{'GPU' if _has_gpu() else 'no GPU'}, torch threads per worker: "
          f"{args.threads_per_worker or 'cores / workers'}")
    print(f"{'setup':<26} {'shards':>6} {'run wall s':>11} {'embed span s':>13}")
    print(f"{'1 gpu-pool worker':<26} {one['shards']:>6} {one['wall']:>11.1f} {one['embed']:>13.1f}")
    print(f"{'2 gpu-pool workers':<26} {two['shards']:>6} {two['wall']:>11.1f} {two['embed']:>13.1f}")
    print(
        f"speedup (2 workers / 1): run {one['wall'] / two['wall']:.2f}x, embedding {one['embed'] / two['embed']:.2f}x"
    )
    print(f"same table content: chunk ids and text {'identical' if same_rows else 'DIFFER'}; "
          f"max |vector difference| {delta:.2e}")


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    main()

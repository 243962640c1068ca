"""What the file store costs a run's hand-off: stage the bundled Debian documents (`plan_changes`), split
them into shards (`split_plan`) and read every shard back, once on local disk (the home) and once
through a local S3-compatible server (moto), as a shard on another machine would.

    python bench/store_handoff.py [--shards 4] [--rounds 3]

Prints, per store, the median seconds of each step, the staged bytes, and the S3/local ratio.
Moto runs in this process on loopback: the figures are the store's own overhead (pyarrow.fs, Arrow IPC,
HTTP), not a real network's.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def measure(ws, source: str, shards: int) -> dict:
    from embedline.storage import files
    from embedline.tasks.changes import plan_changes, read_staged_documents, split_plan
    from embedline.tasks.sources import FieldMap

    staging = files.open_store(ws).uri_of(f"staging/run-{time.monotonic_ns()}")
    started = time.perf_counter()
    plan = plan_changes(source, FieldMap(), {}, "m", "c", staging)
    staged = time.perf_counter()
    parts = split_plan(plan, shards)
    split = time.perf_counter()
    rows = sum(b.num_rows for part in parts for b in read_staged_documents(part.docs_path))
    read = time.perf_counter()
    store = files.open_store(ws)
    size = sum(store.fs.get_file_info(files.locate(part.docs_path, ws.lance_storage_options)[1]).size
               for part in parts)
    store.delete(store.key_of(staging))
    assert rows == plan.counts["docs_new"]
    return {"stage": staged - started, "split": split - staged, "read": read - split, "docs": rows,
            "bytes": size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import boto3
    from moto.server import ThreadedMotoServer

    from embedline.workspace import Workspace

    source = str(ROOT / "embedline" / "data" / "debian-2k.jsonl.gz")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    keys = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench"}
    boto3.client("s3", endpoint_url=f"http://{host}:{port}", region_name="us-east-1", **keys).create_bucket(
        Bucket="bench")
    options = {"aws_endpoint": f"http://{host}:{port}", "aws_region": "us-east-1", "allow_http": "true",
               **keys}
    os.environ["EMBEDLINE_LANCE_STORAGE_OPTIONS"] = json.dumps(options)  # as a worker's environment has it
    with tempfile.TemporaryDirectory() as tmp:
        from embedline.settings import load

        stores = {
            "local": Workspace(Path(tmp) / "local", load(home=Path(tmp) / "local")),
            "s3": Workspace(Path(tmp) / "s3", load(home=Path(tmp) / "s3", lance_uri="s3://bench/lance")),
        }
        results = {name: [] for name in stores}
        for _ in range(args.rounds):  # interleaved
            for name, ws in stores.items():
                results[name].append(measure(ws, source, args.shards))
    server.stop()
    medians = {name: {k: statistics.median(r[k] for r in runs) for k in runs[0]}
               for name, runs in results.items()}
    for name, m in medians.items():
        print(f"{name:6s} docs {m['docs']:.0f}  staged {m['bytes'] / 1e6:.2f} MB in {args.shards} shards  "
              f"stage {m['stage']:.3f} s  split {m['split']:.3f} s  read back {m['read']:.3f} s")
    for step in ("stage", "split", "read"):
        print(f"s3/local {step}: {medians['s3'][step] / medians['local'][step]:.2f}x")


if __name__ == "__main__":
    main()

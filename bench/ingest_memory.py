"""Peak memory of a one-shot `embedline ingest` of the whole Debian corpus, as a user runs it.

    python bench/ingest_memory.py [--docs 64000] [--model minilm]

Runs the CLI in a child process on a fresh workspace (the model, the diff, the embedding, Lance's write
and index build, GX: everything the command's process holds) and reports that process's peak resident
set size from the kernel (`getrusage(RUSAGE_CHILDREN)`: the largest finished child), with its wall time
and the CPU flags; Prefect's temporary server is a process of its own, sampled with it and printed apart.
A sampler of /proc/<pid>/status (every 0.2 s) names the phase of the peak from the log line printed last
before it. Goal (issue 17): ≤2 GB for the 64k-document corpus.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.incremental import write_slice  # noqa: E402
from bench.pipeline import cpu_flags  # noqa: E402


def rss_mb(pid: int) -> float | None:
    """The process's resident set size now (VmRSS), or None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    line = next((line for line in status.splitlines() if line.startswith("VmRSS:")), None)
    return int(line.split()[1]) / 1024 if line else None


def descendants(pid: int) -> list[int]:
    """The process's children, theirs, and so on (Prefect's temporary server is one)."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                children = [int(c) for c in task.read_text().split()]
            except OSError:
                continue
            found += children
            queue += children
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=64000)
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "ingest_memory.json"))
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="embedline-memory-"))
    source = home / "corpus.jsonl"
    docs = len(write_slice(source, args.docs))
    if docs < args.docs:
        print(f"only {docs} documents here (no ../shared/corpora): the goal is for the 64k corpus")
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # the command's own server
    env.update(EMBEDLINE_HOME=str(home / "ws"), PYTHONUNBUFFERED="1",  # log lines as they happen
               EMBEDLINE_LOCAL_PREFECT_URL="")  # not a `make serve` of this machine
    command = [sys.executable, "-m", "embedline.flows.cli", "ingest", "debian", str(source),
               "--model", args.model]
    started = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    samples: list[tuple[float, str]] = []  # (RSS MB, the last log line before the sample)
    tree: list[float] = []  # the command and every process it started (the temporary Prefect server)

    def sample() -> None:
        while child.poll() is None:
            now = rss_mb(child.pid)
            if now is not None:
                samples.append((now, lines[-1][:120] if lines else "start-up"))
                tree.append(now + sum(rss_mb(pid) or 0.0 for pid in descendants(child.pid)))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    for line in child.stdout:
        lines.append(line.rstrip())
    child.wait()
    sampler.join()
    wall = time.perf_counter() - started
    peak_kernel = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    peak_sampled, phase = max(samples, default=(0.0, ""))
    result = {"docs": docs, "model": args.model, "cpu_flags": cpu_flags(), "exit_code": child.returncode,
              "wall_seconds": round(wall, 1), "peak_rss_mb": round(peak_kernel),
              "peak_rss_sampled_mb": round(peak_sampled), "peak_after": phase,
              "peak_rss_with_children_mb": round(max(tree, default=0.0)),
              "summary": [line for line in lines if line.startswith(("ingested", "run "))][-3:]}
    print(f"{docs} docs · {args.model} · CPU flags: {result['cpu_flags']} · exit {child.returncode}")
    print("\n".join(result["summary"]) or "\n".join(lines[-5:]))
    print(f"peak RSS of the `embedline ingest` process: {result['peak_rss_mb']} MB (goal ≤2,048 MB) in "
          f"{wall:.0f} s; sampled peak {result['peak_rss_sampled_mb']} MB, after: {phase}")
    print(f"with the processes it started (Prefect's temporary server), sampled: "
          f"{result['peak_rss_with_children_mb']} MB")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    if child.returncode:
        print("\n".join(lines[-20:]))
        sys.exit(child.returncode)


if __name__ == "__main__":
    main()

"""Does the pipeline keep up with the engine? Raw embedding tokens/s vs end-to-end ingest tokens/s.

    python bench/pipeline.py [--docs 20000] [--model minilm]

In ONE process, on the same Debian documents (the shared corpus, else the bundled 2k slice):
1. raw: the engine embeds the very chunks the ingest will make (`Engine.embed_stream`, nothing else);
2. pipeline: `ingest_corpus` runs the real flow (read → diff → chunk → embed → write → index →
   evaluate → validate → record) into a fresh workspace;
3. raw again (interleaved, so drift in the machine's load reaches both alike; the mean is used).
Prints each stage's share of the flow's wall time (from Prefect's own task runs), peak RSS per stage
(sampled from /proc every 50 ms) and overall, and pipeline / raw tokens/s. Nothing timed pays a cost
that a process pays once: Prefect's temporary server is started, the engine embeds 64 chunks, and a
50-document ingest into another workspace imports what a run uses first (Lance, GX, matplotlib) and
prints what that cost; `bench/cli_startup.py` measures a whole one-shot command. Goals (issue 17):
pipeline ≥90% of raw; peak RSS of a 64k ingest ≤2 GB. Per-CPU-second figures are printed too: on a
shared machine they drift less than wall time.
"""

import argparse
import json
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.incremental import write_slice  # noqa: E402

FLOW_STAGES = "flow (resolve, lock, catalog, artifacts)"


class RssSampler:
    """Resident set size every `interval` seconds on a daemon thread: (monotonic time, bytes)."""

    def __init__(self, interval: float = 0.05):
        self.interval, self.samples = interval, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        page = resource.getpagesize()
        with open("/proc/self/statm") as fh:
            while not self._stop.is_set():
                fh.seek(0)
                self.samples.append((time.time(), int(fh.read().split()[1]) * page))
                self._stop.wait(self.interval)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        self._thread.join()

    def peak(self, start: float = 0.0, end: float = float("inf")) -> int | None:
        """The highest sample in [start, end]; None when the span fell between two samples."""
        return max((rss for t, rss in self.samples if start <= t <= end), default=None)


def cpu_flags() -> str:
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
    with open("/proc/cpuinfo") as fh:
        flags = next((line for line in fh if line.startswith("flags")), "").split()
    return " ".join(f for f in wanted if f in flags) or "none of " + " ".join(wanted)


def chunk_texts(source: Path, engine, params) -> list[str]:
    """The chunks the ingest will embed, cut by the same chunker and tokenizer."""
    from embedline.tasks.chunking import chunk_documents
    from embedline.tasks.documents import Document

    docs = (Document(r["id"], r["text"], r.get("title", "")) for r in map(json.loads, source.open()))
    return [c.text for c in chunk_documents((d for d in docs if d.text.strip()), engine.tokenizer, params)]


def embed_raw(engine, texts: list[str]) -> tuple[int, float, float]:
    """Tokens, wall seconds and this process's CPU seconds of the embedding call alone over `texts`."""
    before, started, cpu = engine.tokens_embedded, time.perf_counter(), time.process_time()
    for _ in engine.embed_stream(texts, kind="document"):
        pass
    return engine.tokens_embedded - before, time.perf_counter() - started, time.process_time() - cpu


def stage_times(flow_run_id) -> list[tuple[str, float, float]]:
    """(task name, start, end) of each task run of the flow run, as Prefect recorded them."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return sorted(
        (run.name.rsplit("-", 1)[0], run.start_time.timestamp(), run.end_time.timestamp())
        for run in runs if run.start_time and run.end_time
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=20000)
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "pipeline.json"))
    args = parser.parse_args()

    from prefect import flow

    from embedline.flows.ingest import ingest_corpus
    from embedline.tasks.chunking import params_for
    from embedline.tasks.embedding import get_engine
    from embedline.tasks.models import resolve_model
    from embedline.workspace import Workspace

    @flow
    def warm_up() -> None:
        """Start Prefect's temporary server before anything is timed."""

    warm_up()
    home = Path(tempfile.mkdtemp(prefix="embedline-pipeline-"))
    source = home / "corpus.jsonl"
    docs = len(write_slice(source, args.docs))
    ws = Workspace.from_env(str(home / "ws")).ensure()
    engine = get_engine(resolve_model(ws, args.model))
    texts = chunk_texts(source, engine, params_for(engine.spec))
    engine.embed(texts[:64])  # warm-up: first calls allocate
    warm_source = home / "warm-up.jsonl"
    write_slice(warm_source, 50)
    warm_started = time.perf_counter()
    ingest_corpus(str(warm_source), "warmup", args.model, home=str(home / "warm-up"))
    first_run = time.perf_counter() - warm_started

    with RssSampler() as rss:
        raw = [embed_raw(engine, texts)]
        started, cpu = time.time(), time.process_time()
        state = ingest_corpus(str(source), "bench", args.model, home=str(ws.home), return_state=True)
        ended, cpu = time.time(), time.process_time() - cpu
        summary = state.result()
        raw.append(embed_raw(engine, texts))
    stages = stage_times(state.state_details.flow_run_id)

    wall = ended - started
    raw_tokens = sum(r[0] for r in raw) / len(raw)
    raw_tps = raw_tokens / (sum(r[1] for r in raw) / len(raw))
    raw_cpu_tps = raw_tokens / (sum(r[2] for r in raw) / len(raw))
    pipe_tps = summary.tokens_embedded / wall
    rows = []
    for name, begin, end in stages:
        peak = rss.peak(begin, end)
        rows.append({"stage": name, "seconds": round(end - begin, 2), "share": round((end - begin) / wall, 4),
                     "peak_rss_mb": None if peak is None else round(peak / 2**20)})
    rest = wall - sum(r["seconds"] for r in rows)
    rows.append({"stage": FLOW_STAGES, "seconds": round(rest, 2), "share": round(rest / wall, 4),
                 "peak_rss_mb": None})
    result = {
        "docs": docs, "chunks": summary.chunks_embedded, "model": args.model, "cpu_flags": cpu_flags(),
        "runtime": getattr(engine, "runtime", "torch"), "precision": engine.spec.precision,
        "raw_tokens": int(raw_tokens), "raw_tokens_per_s": round(raw_tps),
        "raw_rounds_s": [round(r[1], 2) for r in raw],
        "pipeline_tokens": summary.tokens_embedded, "pipeline_seconds": round(wall, 2),
        "pipeline_tokens_per_s": round(pipe_tps), "pipeline_over_raw": round(pipe_tps / raw_tps, 4),
        # per CPU second of this process: steadier than wall time on a shared machine (the temporary
        # Prefect server's own process is left out)
        "raw_tokens_per_cpu_s": round(raw_cpu_tps),
        "pipeline_tokens_per_cpu_s": round(summary.tokens_embedded / cpu),
        "pipeline_over_raw_cpu": round(summary.tokens_embedded / cpu / raw_cpu_tps, 4),
        "warm_up_ingest_s": round(first_run, 2),
        "peak_rss_ingest_mb": round(rss.peak(started, ended) / 2**20),
        "peak_rss_process_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "stages": rows,
    }
    print(f"{docs} docs → {result['chunks']} chunks · {args.model} {result['runtime']} "
          f"{result['precision']} · CPU flags: {result['cpu_flags']}")
    print(f"warm-up: a 50-document ingest into another workspace took {first_run:.1f} s (first imports)")
    print(f"raw engine:   {result['raw_tokens_per_s']:>8,} tok/s  (rounds {result['raw_rounds_s']} s)")
    print(f"ingest flow:  {result['pipeline_tokens_per_s']:>8,} tok/s  ({wall:.1f} s end to end)")
    print(f"pipeline / raw: {result['pipeline_over_raw']:.1%}  (goal ≥90%); per CPU second of this "
          f"process {result['pipeline_over_raw_cpu']:.1%} (raw {result['raw_tokens_per_cpu_s']:,} tok/cpu-s)")
    print(f"{'stage':42} {'seconds':>8} {'share':>7} {'peak RSS':>9}")
    for row in rows:
        peak = f"{row['peak_rss_mb']} MB" if row["peak_rss_mb"] is not None else ""
        print(f"{row['stage']:42} {row['seconds']:8.2f} {row['share']:7.1%} {peak:>9}")
    print(f"peak RSS during the ingest: {result['peak_rss_ingest_mb']} MB (whole process "
          f"{result['peak_rss_process_mb']} MB)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""The cost of one run at a million documents: planning and catalog, not the model (issue 16 item 5).

    python bench/scale_plan.py [--docs 1000000] [--backends local,postgres] [--changed 0.001]

A synthetic corpus of short texts, ingested with a tiny random BERT (built from a config, offline):
the first ingest, an unchanged re-run and a re-run with `--changed` of the documents edited, on the
local DuckDB catalog and on PostgreSQL (a private server started as the tests start theirs); then the
plan alone (`plan_changes` outside Prefect, without the model) and a SQL session on the result. Each
phase runs in its own process, so its peak RSS (ru_maxrss) is its own. Per phase it prints the flow's
wall time (Prefect's temporary server is started before the clock), the process's wall time, peak RSS,
catalog time (inside `storage.catalog` calls, the diff's stream of the known documents included) and
the time of each step of the run.
Writes bench/out/scale_plan.json. Goal: an unchanged re-run of 1M documents in ≤60 s with peak RSS
≤1 GB on a 2-core machine.
"""

import argparse
import contextlib
import functools
import inspect
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CORPUS = "scale"
WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa "
         "quebec romeo sierra tango uniform victor whiskey xray yankee zulu package library server client "
         "driver kernel module window manager terminal editor network archive compiler debugger").split()
STEPS = (  # (module, function): the run's steps, timed in the child (patched before the flow imports them)
    ("embedline.tasks.changes", "plan_changes"),
    ("embedline.storage.maintenance", "restore_clean_head"),
    ("embedline.flows.embed", "embed_plan"),
    ("embedline.tasks.publishing", "publish_batch"),
    ("embedline.storage.embeddings", "refresh_indexes"),  # inside publish_batch: index builds and folds
    ("embedline.tasks.evaluation", "evaluate_version"),
    ("embedline.validation.suite", "validate_batch"),
    ("embedline.tasks.publishing", "record_run"),
    ("embedline.flows.reports", "publish_version_artifacts"),
)


def cpu_info() -> dict:
    text = Path("/proc/cpuinfo").read_text()
    names = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")]
    model = names[0] if names else "unknown"
    return {"model": model, "cores": os.cpu_count(), "avx512_bf16": "avx512_bf16" in text}


def write_corpus(path: Path, docs: int, edited: set[int] | None = None) -> None:
    """`docs` short documents (~10 words); those in `edited` carry an extra sentence."""
    rng = random.Random(0)
    with path.open("w") as fh:
        for i in range(docs):
            text = " ".join(rng.choices(WORDS, k=8))
            if edited and i in edited:
                text += " Edited for the scale benchmark."
            record = {"id": f"doc-{i:07d}", "title": f"Item {i}", "text": text, "group": i % 16}
            fh.write(json.dumps(record) + "\n")


# -- in the child process ----------------------------------------------------------------------
class Timers:
    """Seconds spent inside wrapped functions; nested calls of one group count once."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._depth: dict[str, int] = {}

    def wrap(self, group: str, fn):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            with self.timing(group):
                return fn(*args, **kwargs)
        return timed

    @contextlib.contextmanager
    def timing(self, group: str):
        depth = self._depth.get(group, 0)
        self._depth[group] = depth + 1
        started = time.perf_counter()
        try:
            yield
        finally:
            self._depth[group] = depth
            if depth == 0:
                self.seconds[group] = self.seconds.get(group, 0.0) + time.perf_counter() - started


def install_timers() -> Timers:
    """Time every public call into `storage.catalog` (and the diff's stream of known documents), and each
    step of the run. Must run before `flows.ingest` is imported (it binds the steps at import)."""
    import importlib

    from embedline.storage import catalog

    timers = Timers()
    for name, fn in list(vars(catalog).items()):
        if inspect.isfunction(fn) and fn.__module__ == catalog.__name__ and not name.startswith("_") \
                and name not in ("reading", "writing"):  # context managers: their callers are timed
            setattr(catalog, name, timers.wrap("catalog", fn))
    reader = catalog.SpaceDocuments.reader

    @contextlib.contextmanager
    def timed_reader(self, *args, **kwargs):
        with timers.timing("catalog"), reader(self, *args, **kwargs) as rows:
            yield rows

    catalog.SpaceDocuments.reader = timed_reader
    for module_name, name in STEPS:
        module = importlib.import_module(module_name)
        setattr(module, name, timers.wrap(name, getattr(module, name)))
    return timers


def run_phase(params: dict) -> dict:
    started = time.perf_counter()
    timers = install_timers()
    from prefect import flow

    from embedline.flows.ingest import ingest_corpus
    from embedline.tasks import changes
    from embedline.tasks.models import add_model
    from embedline.workspace import Workspace

    @flow
    def warm_up() -> None:
        """Start Prefect's temporary server before anything is timed."""

    warm_up()
    if params["register"]:
        add_model(Workspace.from_env(params["home"]).ensure(), "tiny", params["model_dir"])
    timers.seconds.clear()
    flow_started = time.perf_counter()
    summary = ingest_corpus(params["source"], CORPUS, "tiny", home=params["home"], shard_size=0,
                            max_delete_share=1.0)
    flow_seconds = time.perf_counter() - flow_started
    return {
        "phase": params["phase"], "flow_seconds": round(flow_seconds, 2),
        "process_seconds": round(time.perf_counter() - started, 2), "peak_rss_mb": peak_rss_mb(),
        "catalog_seconds": round(timers.seconds.get("catalog", 0.0), 2), "diff_batch": changes.DIFF_BATCH,
        "steps": {name: round(timers.seconds.get(name, 0.0), 2) for _, name in STEPS},
        **{k: getattr(summary, k) for k in ("docs_read", "docs_new", "docs_changed", "docs_unchanged",
                                            "docs_deleted", "chunks_embedded", "version")},
    }


def plan_phase(params: dict) -> dict:
    """The diff alone, outside Prefect and without the model: `plan_changes` against the space's catalog rows,
    in a process that imports only what planning needs (its peak RSS is the plan's)."""
    started = time.perf_counter()
    from embedline.storage import catalog
    from embedline.tasks import changes
    from embedline.tasks.sources import FieldMap
    from embedline.workspace import Workspace

    ws = Workspace.from_env(params["home"])
    with catalog.reading(ws) as con:
        space, model_key, chunk_key = con.execute(
            "SELECT space, model_key, chunk_key FROM runs WHERE status = 'succeeded'"
            " ORDER BY run_id DESC LIMIT 1").fetchone()
    known = catalog.space_documents(ws, space)
    plan_started = time.perf_counter()
    plan = changes.plan_changes(params["source"], FieldMap(), known, model_key, chunk_key,
                                Path(tempfile.mkdtemp(prefix="plan-")), max_delete_share=1.0,
                                metadata_types=catalog.metadata_types(ws, space.split("__")[0]))
    return {"phase": "plan", "plan_seconds": round(time.perf_counter() - plan_started, 2),
            "process_seconds": round(time.perf_counter() - started, 2), "peak_rss_mb": peak_rss_mb(),
            "diff_batch": changes.DIFF_BATCH, **plan.counts}


def sql_phase(params: dict) -> dict:
    """A read-only SQL session on the result: the catalog snapshot and the views, then one query."""
    started = time.perf_counter()
    from embedline.storage import sql
    from embedline.workspace import Workspace

    timers = Timers()
    for name in ("_snapshot_catalog", "_create_space_views"):
        setattr(sql, name, timers.wrap(name, getattr(sql, name)))
    ws = Workspace.from_env(params["home"])
    connect_started = time.perf_counter()
    con = sql.connect(ws)
    connect_seconds = time.perf_counter() - connect_started
    views = con.execute("SELECT count(*) FROM duckdb_views() WHERE temporary AND view_name LIKE 'scale%'")
    views = views.fetchone()[0]
    query_started = time.perf_counter()
    documents = sql.execute(con, "SELECT count(*) FROM documents").fetchone()[0]
    query_seconds = time.perf_counter() - query_started
    one_started = time.perf_counter()  # `embedline sql` / `db.sql` for a statement not naming documents
    runs = sql.execute(sql.connect(ws, for_sql="SELECT count(*) FROM runs"), "SELECT count(*) FROM runs")
    runs.fetchone()
    one_seconds = time.perf_counter() - one_started
    return {
        "phase": "sql", "connect_seconds": round(connect_seconds, 2),
        "snapshot_seconds": round(timers.seconds.get("_snapshot_catalog", 0.0), 2),
        "views_seconds": round(timers.seconds.get("_create_space_views", 0.0), 2),
        "views": views, "query_seconds": round(query_seconds, 2),
        "statement_without_documents_seconds": round(one_seconds, 2),
        "documents": documents, "process_seconds": round(time.perf_counter() - started, 2),
        "peak_rss_mb": peak_rss_mb(),
    }


def peak_rss_mb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024  # KiB on Linux


# -- in the parent -----------------------------------------------------------------------------
def in_child(params: dict, env: dict) -> dict:
    """Run one phase in a fresh process; its result is the last line it prints."""
    result = subprocess.run([sys.executable, __file__, "--child", json.dumps(params)], env=env,
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"phase {params['phase']} failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_backend(backend: str, root: Path, source: Path, model_dir: Path, docs: int, edited: set[int],
                catalog_url: str | None, index_min_rows: int | None, on_row) -> list[dict]:
    home = root / f"home-{backend}"
    env = {**os.environ, "EMBEDLINE_HOME": str(home), "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "GX_ANALYTICS_ENABLED": "false",
           "TOKENIZERS_PARALLELISM": "false"}
    env.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")  # a loaded 2-core machine
    env.pop("EMBEDLINE_CATALOG_URL", None)
    if index_min_rows is not None:
        env["EMBEDLINE_INDEX_MIN_ROWS"] = str(index_min_rows)
    if catalog_url:
        env["EMBEDLINE_CATALOG_URL"] = catalog_url
    base = {"home": str(home), "source": str(source), "model_dir": str(model_dir)}
    rows = []
    write_corpus(source, docs)
    for phase in ("first", "unchanged"):
        rows.append(in_child({**base, "phase": phase, "register": phase == "first"}, env))
        on_row(backend, rows)
    write_corpus(source, docs, edited)
    rows.append(in_child({**base, "phase": "changed", "register": False}, env))
    on_row(backend, rows)
    for phase in ("plan", "sql"):
        rows.append(in_child({**base, "phase": phase}, env))
        on_row(backend, rows)
    return rows


def print_row(backend: str, row: dict) -> None:
    if row["phase"] == "plan":
        print(f"{backend:8} {'plan':9} plan_changes alone {row['plan_seconds']:7.2f} s · process "
              f"{row['process_seconds']:7.2f} s · peak RSS {row['peak_rss_mb']:,} MB · unchanged "
              f"{row['docs_unchanged']:,} (batches of {row['diff_batch']:,})", flush=True)
        return
    if row["phase"] == "sql":
        print(f"{backend:8} {'sql':9} connect {row['connect_seconds']:7.2f} s (catalog snapshot "
              f"{row['snapshot_seconds']:.2f} s, {row['views']} views {row['views_seconds']:.2f} s) · "
              f"count(documents) {row['query_seconds']:.2f} s · a statement not naming documents "
              f"(connect + run) {row['statement_without_documents_seconds']:.2f} s · peak RSS "
              f"{row['peak_rss_mb']:,} MB",
              flush=True)
        return
    steps = " ".join(f"{name}={seconds:.1f}" for name, seconds in row["steps"].items() if seconds >= 0.05)
    print(f"{backend:8} {row['phase']:9} flow {row['flow_seconds']:8.2f} s · process "
          f"{row['process_seconds']:8.2f} s · peak RSS {row['peak_rss_mb']:6,} MB · catalog "
          f"{row['catalog_seconds']:6.2f} s · new {row['docs_new']:,} changed {row['docs_changed']:,} "
          f"unchanged {row['docs_unchanged']:,} · {steps}",
          flush=True)


def save(results: dict, out: str) -> None:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(results, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--backends", default="local,postgres")
    parser.add_argument("--changed", type=float, default=0.001, help="share of documents edited")
    parser.add_argument("--index-min-rows", type=int, help="EMBEDLINE_INDEX_MIN_ROWS for the runs (above the "
                        "document count: no vector index is built, whose cost index_costs.py measures)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "scale_plan.json"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        params = json.loads(args.child)
        phases = {"sql": sql_phase, "plan": plan_phase}
        print(json.dumps(phases.get(params["phase"], run_phase)(params)))
        return

    from tests.conftest import build_tiny_model
    from tests.postgres_server import create_database, running_postgres

    cpu = cpu_info()
    print(f"CPU {cpu['model']} · {cpu['cores']} cores · avx512_bf16: "
          f"{'yes' if cpu['avx512_bf16'] else 'no'}")
    root = Path(tempfile.mkdtemp(prefix="embedline-scale-"))
    edited = set(random.Random(1).sample(range(args.docs), max(1, int(args.docs * args.changed))))
    print(f"{args.docs:,} documents, {len(edited):,} edited in the changed run · work folder {root}",
          flush=True)
    results = {"cpu": cpu, "docs": args.docs, "edited": len(edited), "index_min_rows": args.index_min_rows,
               "backends": {}}

    def on_row(backend: str, rows: list[dict]) -> None:
        """Print a phase as it ends, and keep what is measured so far (a long run may be cut short)."""
        print_row(backend, rows[-1])
        results["backends"][backend] = rows
        save(results, args.out)

    try:
        model_dir = build_tiny_model(root / "tiny-bert")
        for backend in args.backends.split(","):
            source = root / "corpus.jsonl"
            if backend == "postgres":
                with running_postgres() as server:
                    url = create_database(server, "scale")
                    results["backends"][backend] = run_backend(backend, root, source, model_dir, args.docs,
                                                               edited, url, args.index_min_rows, on_row)
            elif backend == "local":
                results["backends"][backend] = run_backend(backend, root, source, model_dir, args.docs,
                                                           edited, None, args.index_min_rows, on_row)
            else:
                raise SystemExit(f"unknown backend {backend!r}: local or postgres")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    save(results, args.out)
    for backend, rows in results["backends"].items():
        unchanged = next(r for r in rows if r["phase"] == "unchanged")
        met = unchanged["flow_seconds"] <= 60 and unchanged["peak_rss_mb"] <= 1024
        print(f"{backend}: unchanged re-run of {args.docs:,} docs: flow {unchanged['flow_seconds']:.1f} s"
              f" (process {unchanged['process_seconds']:.1f} s), peak RSS {unchanged['peak_rss_mb']:,} MB;"
              f" goal flow ≤60 s and ≤1,024 MB: {'met' if met else 'not met'}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

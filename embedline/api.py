"""The Python API: one object per workspace, each method one library call (the CLI is a thin layer on it).

Heavy libraries (Prefect, torch, LanceDB, great-expectations) load inside the methods that need them,
so `import embedline` stays quick.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from os import PathLike

from embedline import defaults
from embedline.errors import BadInput, BadSetting, UsageError
from embedline.settings import Settings, load, overriding
from embedline.workspace import Workspace


def connect(home: str | PathLike | None = None, **settings) -> "Embedline":
    """Open the workspace at `home` (else `$EMBEDLINE_HOME`, else `./.embedline`).

    `settings` override `EMBEDLINE_*` variables for this object's calls, e.g.
    `connect(device="cpu", precision="fp32", lance_uri="s3://bucket/lance")`; a bad value raises
    `BadSetting` naming the variable.
    """
    unknown = sorted(set(settings) - set(Settings.model_fields) - {"home"})
    if unknown:
        raise BadSetting(f"connect() has no setting {', '.join(unknown)}: "
                         f"use {', '.join(Settings.model_fields)}")
    given = {"home": home, **settings}
    return Embedline(
        Workspace.from_env(home, load(**given)), {k: v for k, v in given.items() if v is not None}
    )


class Embedline:
    """A workspace: its corpora, models, versions and SQL. Create it with `embedline.connect()`."""

    def __init__(self, workspace: Workspace, overrides: dict | None = None):
        self.workspace = workspace
        self._overrides = {"home": str(workspace.home), **(overrides or {})}

    def __repr__(self) -> str:
        return f"embedline.connect({str(self.workspace.home)!r})"

    @property
    def home(self) -> str:
        """The workspace folder."""
        return str(self.workspace.home)

    @property
    def settings(self) -> Settings:
        """The resolved settings this object runs with."""
        return self.workspace.settings

    @contextmanager
    def _context(self) -> Iterator[None]:
        """This object's settings, and private files (umask 077) for whatever the call writes."""
        from embedline.workspace import private_files

        with overriding(self._overrides), private_files():
            yield

    @contextmanager
    def _flows(self, warm: Callable[[], None] | None = None) -> Iterator[None]:
        """`_context()` with a Prefect API up for the flows the block runs: `$PREFECT_API_URL`, else a running
        `make serve`, else the temporary server, started while `warm()` loads what the run needs
        (flows/startup.py)."""
        from embedline.flows.startup import prefect_api

        with self._context(), prefect_api(warm):
            yield

    # -- ingest ------------------------------------------------------------------------------------
    def ingest(
        self,
        source: str | PathLike | None = None,
        corpus: str | None = None,
        *,
        query: str | None = None,
        model: str | None = None,
        id_field: str = "id",
        text_field: str = "text",
        title_field: str = "title",
        keep_deleted: bool = False,
        chunk_tokens: int | None = None,
        overlap: int = 32,
        shard_size: int | None = None,
        precision: str | None = None,
        gates: dict | None = None,
        max_delete_share: float = 0.5,
        max_embed: int | None = None,
    ):
        """Embed `source` (JSONL[.gz], CSV, Parquet, a folder of .txt/.md/.html, a glob like `docs/*.md`) or
        the rows of a DuckDB `query` into `corpus` as a new validated version; returns the run's `RunSummary`.

        Only what changed is embedded. The version is promoted to `prod` when it passes its gates;
        otherwise `ValidationFailed` is raised after the run is recorded. `gates` overrides validation
        thresholds for this run only, e.g. `{"min_golden_recall": 0.8}` (`gates()` keeps them for later
        runs). A run that would delete more than `max_delete_share` of the corpus's documents raises
        `BadInput` (1.0 allows all). `max_embed` embeds at most that many documents and defers the rest
        to the next run (`docs_deferred`), so a large re-embed goes in committed batches.
        """
        if corpus is None:
            raise UsageError("give the corpus name: ingest(source, corpus='docs')")
        if (source is None) == (query is None):
            raise UsageError("give either a source or query=..., not both or neither")
        from embedline.names import check_name
        from embedline.validation.suite import check_gates

        check_name(corpus, "corpus name")  # these before any flow run: a typo costs no server start
        if model is not None:
            check_name(model, "model name")
        check_gates(gates)
        if max_embed is not None:
            from embedline.tasks.refresh import check_backfill

            check_backfill(max_embed, "source", what="max_embed")
        from embedline.flows.startup import warm_ingest

        def warm() -> None:  # here, while Prefect's temporary server starts on a thread (if it must)
            from embedline.flows.ingest import ingest_corpus  # noqa: F401

            warm_ingest(self.home, corpus, model, precision)

        with self._flows(warm):
            from pydantic import SecretStr

            from embedline.flows.ingest import ingest_corpus
            from embedline.redaction import has_secret
            from embedline.tasks.sources import QUERY_PREFIX

            given = str(source) if query is None else QUERY_PREFIX + query
            # a credential in the source reaches Prefect as ******** (a SecretStr)
            return ingest_corpus(SecretStr(given) if has_secret(given) else given, corpus, model,
                                 id_field, text_field, title_field, keep_deleted, overlap, chunk_tokens,
                                 shard_size=shard_size, precision=precision, gates=gates,
                                 max_delete_share=max_delete_share, max_embed=max_embed, home=self.home)

    # -- read --------------------------------------------------------------------------------------
    def search(self, corpus: str, query: str, k: int = 10, where: str | None = None, model: str | None = None,
               hybrid: bool = False) -> list[dict]:
        """The `k` chunks of `corpus`'s prod version nearest to `query`: dicts with doc_id, chunk_id,
        chunk_index, title, text and score (cosine similarity, or the fused score with `hybrid`).

        `where` is a SQL filter on metadata (`"section = 'games'"`); `model` embeds the query with
        another registered model, served through the corpus's adapter during a model change.
        """
        from embedline.tasks.search import search_corpus

        with self._context():
            return search_corpus(self.workspace, corpus, query, k, where, hybrid=hybrid, model=model)

    def sql(self, query: str, write: bool = False):
        """Run SQL in a fresh DuckDB session of the SQL contract; returns a DuckDB relation
        (`.fetchall()`, `.df()`, `.arrow()`), or None for a statement without rows. Rows are read (and
        errors such as a failed cast raised: `BadInput`) when the relation is; `.relation` is DuckDB's own.

        Read-only unless `write=True`. Corpora are views (`SELECT * FROM docs`), catalog tables
        (`runs`, `versions`, ...) are tables, and `embed(text)` / `query_vector(corpus, text)` embed.
        A read-only session runs only SELECT (and EXPLAIN SELECT), no `__lance_*` function, reads files
        only under the working directory and `$EMBEDLINE_SQL_READ_PATHS`, and nothing from the network;
        `write=True` logs what it will do (logger `embedline.sql`) before it runs.
        """
        from embedline.storage import sql as sql_session

        if write:
            sql_session.log.info(sql_session.write_plan(self.workspace, query))
        return sql_session.execute(self.session(write, for_sql=query), query, write=write)

    def session(self, write: bool = False, for_sql: str | None = None):
        """A DuckDB connection with every view and function of the SQL contract, for many statements.
        Statements run on it directly are not checked (its settings are locked and it reads no file
        outside the allowed folders, but `__lance_*` functions would run): use `sql()` for user SQL.
        `for_sql`: the one statement it is for (its catalog snapshot then holds only the tables named)."""
        from embedline.storage import sql as sql_session
        from embedline.tasks.search import make_embedder, make_query_embedder

        with self._context():
            return sql_session.connect(self.workspace, make_embedder(self.workspace), write=write,
                                       query_embedder=make_query_embedder(self.workspace), for_sql=for_sql)

    def versions(self, corpus: str) -> list[dict]:
        """Every version of every space of `corpus`: validation, aliases, row count, cost, failures."""
        from embedline.names import check_name
        from embedline.storage import catalog

        catalog.require_runs(self.workspace, check_name(corpus, "corpus name"))
        return catalog.list_versions(self.workspace, corpus)

    def quarantine(self, corpus: str, run: int | None = None) -> list[dict]:
        """The whole records a run rejected (`run` None: the corpus's latest run that rejected any), each
        with run_id, source, position, doc_id, reason and raw; read from the file store."""
        from embedline.names import check_name
        from embedline.storage import catalog
        from embedline.tasks.publishing import read_quarantine

        catalog.require_runs(self.workspace, check_name(corpus, "corpus name"))
        return read_quarantine(self.workspace, corpus, run)

    def models(self) -> list[dict]:
        """The registered models: name, dim, pooling, normalize, max_tokens, fingerprint, path."""
        from embedline.storage import catalog

        return catalog.list_models(self.workspace)

    # -- aliases -----------------------------------------------------------------------------------
    def promote(self, corpus: str, version: int, space: str | None = None, force: bool = False,
                hold: bool = False) -> dict:
        """Point `corpus`'s prod alias at `version` (of `space`, default prod's space), atomically.
        A version that failed its gates needs `force=True`. `hold=True` pins prod there: scheduled
        runs and backfill swaps leave it until the next `promote` (which releases the hold otherwise)."""
        from embedline.names import check_name, check_space
        from embedline.storage import catalog

        corpus = check_name(corpus, "corpus name")
        space = check_space(space) if space is not None else None
        if isinstance(version, bool) or not isinstance(version, int):
            raise BadInput(f"version must be a whole number (`embedline versions {corpus}` lists them), "
                           f"got {version!r}")
        catalog.require_runs(self.workspace, corpus)  # a mistyped corpus or home: NotFound, nothing created
        return catalog.promote(self.workspace, corpus, version, space=space, allow_failed=force, hold=hold)

    def rollback(self, corpus: str) -> dict:
        """Move prod back to where it pointed before its latest move."""
        from embedline.names import check_name
        from embedline.storage import catalog

        catalog.require_runs(self.workspace, check_name(corpus, "corpus name"))  # NotFound, nothing created
        return catalog.rollback(self.workspace, corpus)

    # -- gates, validation, upkeep -----------------------------------------------------------------
    def gates(self, corpus: str, **thresholds) -> dict:
        """Set (with keyword arguments) and return `corpus`'s validation thresholds, e.g.
        `gates("docs", min_golden_recall=0.8, max_near_duplicate_rate=0.3)`; unset ones keep defaults.
        A corpus with no runs yet may have its gates set (they apply from its first ingest), in a
        workspace that exists (`NotFound` otherwise: a mistyped home)."""
        from embedline.tasks.gates import corpus_gates

        return corpus_gates(self.workspace, corpus, thresholds or None)

    def validate(self, corpus: str, version: int | None = None, space: str | None = None):
        """Re-run the gates on a stored version (prod's by default; `space` when two spaces of the corpus
        have a version of that number) and record the verdict; returns (space, version, ValidationReport).
        No alias moves either way."""
        from embedline.flows.validate import validate_version
        from embedline.names import check_name
        from embedline.storage import catalog

        catalog.require_runs(self.workspace, check_name(corpus, "corpus name"))  # before any flow run
        with self._flows():
            return validate_version(corpus, version, home=self.home, space=space)

    def maintain(self, corpus: str, retention_days: float = 7, keep_versions: int = 10) -> list[str]:
        """Compact `corpus`'s spaces, fold new rows into indexes, drop versions older than `retention_days`
        but each space's newest `keep_versions` passed ones and those an alias serves; one line per space."""
        from embedline.flows.maintain import check_settings, maintain_corpus
        from embedline.names import check_name
        from embedline.storage import catalog

        check_settings(retention_days, keep_versions)
        catalog.require_runs(self.workspace, check_name(corpus, "corpus name"))  # the cron.s flow: no error
        with self._flows():
            return maintain_corpus(corpus, retention_days, keep_versions, home=self.home)

    # -- storage -----------------------------------------------------------------------------------
    def storage(self, corpus: str, model: str | None = None, vectors: str | None = None,
                index: str | None = None) -> dict:
        """Show, or set (`vectors`: "float32" | "float16"; `index`: "ivf_hnsw_sq", "ivf_pq", "ivf_sq",
        "ivf_hnsw_pq", "ivf_rq", "ivf_flat"), how `corpus`'s space for `model` (default: prod's) stores
        its vectors. The next run writing the space applies it (even one with nothing to embed),
        validated and promoted like any run; `pending` says whether that run is still to come.
        Truncation is a model choice: `add_model(name, path, truncate_dim=256)`."""
        from embedline.tasks.storage import set_storage

        with self._context():
            return set_storage(self.workspace, corpus, model, vectors, index)

    def footprint(self, corpus: str, queries: int = 200, rounds: int = 3,
                  only: list[str] | None = None) -> list[dict]:
        """Measure every storage option on `corpus`'s prod vectors, in scratch tables (the serving space
        is only read): one dict per option with bytes_per_vector, index_bytes, recall_at_10 against
        full-precision exact search, expected_doc_at_10 and p50_ms, on up to `queries` golden queries
        (or document titles). `only` keeps the options whose name contains one of its strings."""
        from embedline.tasks.footprint import measure_footprint

        with self._context():
            return measure_footprint(self.workspace, corpus, queries, rounds=rounds, only=only)

    # -- models and model change -------------------------------------------------------------------
    def add_model(self, name: str, path: str | PathLike, truncate_dim: int | None = None):
        """Register a local sentence-transformers / Hugging Face model folder as `name`; returns its spec.
        Other weights under a name something was embedded with raise `ModelConflict`: use a new name."""
        from embedline.tasks.models import add_model

        with self._context():
            return add_model(self.workspace.ensure(), name, str(path), truncate_dim)

    def push_model(self, name: str) -> str:
        """Put this host's files of registered model `name` in the file store, where workers without them
        fetch them (by name + fingerprint); returns the store URI."""
        from embedline.tasks.model_store import push_model

        with self._context():
            return push_model(self.workspace.ensure(), name)

    def refresh(
        self,
        corpus: str,
        model: str,
        sample: int = defaults.SAMPLE,
        query_sample: int = defaults.QUERY_SAMPLE,
        wait: bool = False,
        batch_docs: int = defaults.BATCH_DOCS,
        order: str = "source",
        passage_sample: int = defaults.PASSAGE_SAMPLE,
    ):
        """Move `corpus` to `model` without downtime: fit adapters (new-model queries are served at once),
        backfill the new space, swap prod when it passes its gates. Returns (RefreshFit, swap or None);
        without `wait` the backfill runs in a background process and the swap is None."""
        from embedline.flows.refresh import refresh_model
        from embedline.tasks.refresh import check_backfill

        check_backfill(batch_docs, order)  # before any flow run: a detached backfill would fail unseen
        self._require_corpus_and_model(corpus, model)
        with self._flows():
            return refresh_model(corpus, model, sample, wait, batch_docs, order, query_sample, home=self.home,
                                 passage_sample=passage_sample)

    def _require_corpus_and_model(self, corpus: str, model: str) -> None:
        """`NotFound` (`BadName`) for a corpus with no runs in this home or a model not registered, before
        any flow run: a typo costs no server start."""
        from embedline.names import check_name
        from embedline.storage import catalog
        from embedline.tasks.models import registered

        catalog.require_runs(self.workspace, check_name(corpus, "corpus name"))
        registered(self.workspace, model)

    def refresh_status(self, corpus: str) -> list[dict]:
        """Per target model of a refresh: adapter, retention, backfill progress, what prod serves."""
        from embedline.tasks.refresh import refresh_status

        return refresh_status(self.workspace, corpus)

    def backfill(self, corpus: str, model: str, batch_docs: int = defaults.BATCH_DOCS,
                 order: str = "source") -> dict | None:
        """Embed `corpus` with `model` in committed batches (resumable) and swap prod to it if it passes."""
        from embedline.flows.refresh import backfill_corpus
        from embedline.tasks.refresh import check_backfill

        check_backfill(batch_docs, order)  # before any flow run
        self._require_corpus_and_model(corpus, model)
        with self._flows():
            return backfill_corpus(corpus, model, batch_docs, order, home=self.home)

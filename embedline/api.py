"""The Python API: one object per workspace, each method one library call (the CLI is a thin layer on it).

Heavy libraries (Prefect, torch, LanceDB, great-expectations) load inside the methods that need them,
so `import embedline` stays quick.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from os import PathLike

from embedline.errors import UsageError
from embedline.settings import Settings, load, overriding
from embedline.workspace import Workspace


def connect(home: str | PathLike | None = None, **settings) -> "Embedline":
    """Open the workspace at `home` (else `$EMBEDLINE_HOME`, else `./.embedline`).

    `settings` override `EMBEDLINE_*` variables for this object's calls, e.g.
    `connect(device="cpu", precision="fp32", lance_uri="s3://bucket/lance")`; a bad value raises
    `BadSetting` naming the variable.
    """
    given = {"home": home, **settings}
    return Embedline(Workspace.from_env(home, load(**given)), {k: v for k, v in given.items() if v is not None})


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
        with overriding(self._overrides):
            yield

    # -- ingest ------------------------------------------------------------------------------------
    def ingest(self, source: str | PathLike | None = None, corpus: str | None = None, *, query: str | None = None,
               model: str | None = None, id_field: str = "id", text_field: str = "text", title_field: str = "title",
               keep_deleted: bool = False, chunk_tokens: int | None = None, overlap: int = 32,
               shard_size: int | None = None, precision: str | None = None, gates: dict | None = None,
               max_delete_share: float = 0.5):
        """Embed `source` (JSONL[.gz], CSV, Parquet, a folder of .txt/.md/.html, a glob like `docs/*.md`) or
        the rows of a DuckDB `query` into `corpus` as a new validated version; returns the run's `RunSummary`.

        Only what changed is embedded. The version is promoted to `prod` when it passes its gates;
        otherwise `ValidationFailed` is raised after the run is recorded. `gates` sets this corpus's
        validation thresholds (kept for later runs), e.g. `{"min_golden_recall": 0.8}`. A run that would
        delete more than `max_delete_share` of the corpus's documents raises `BadInput` (1.0 allows all).
        """
        from embedline.flows.ingest import ingest_corpus
        from embedline.tasks.sources import QUERY_PREFIX

        if corpus is None:
            raise UsageError("give the corpus name: ingest(source, corpus='docs')")
        if (source is None) == (query is None):
            raise UsageError("give either a source or query=..., not both or neither")
        with self._context():
            return ingest_corpus(str(source) if query is None else QUERY_PREFIX + query, corpus, model,
                                 id_field, text_field, title_field, keep_deleted, overlap, chunk_tokens,
                                 shard_size=shard_size, precision=precision, gates=gates,
                                 max_delete_share=max_delete_share, home=self.home)

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
        (`.fetchall()`, `.df()`, `.arrow()`), or None for a statement without rows.

        Read-only unless `write=True`. Corpora are views (`SELECT * FROM docs`), catalog tables
        (`runs`, `versions`, ...) are tables, and `embed(text)` / `query_vector(corpus, text)` embed.
        """
        from embedline.storage import sql as sql_session

        return sql_session.execute(self.session(write), query, write=write)

    def session(self, write: bool = False):
        """A DuckDB connection with every view and function of the SQL contract, for many statements.
        Statements run on it directly are not checked: open it with `write=False` and use `sql()` to
        keep the read-only promise."""
        from embedline.storage import sql as sql_session
        from embedline.tasks.search import make_embedder, make_query_embedder

        with self._context():
            return sql_session.connect(self.workspace, make_embedder(self.workspace), write=write,
                                       query_embedder=make_query_embedder(self.workspace))

    def versions(self, corpus: str) -> list[dict]:
        """Every version of every space of `corpus`: validation, aliases, row count, cost, failures."""
        from embedline.names import check_name
        from embedline.storage import catalog

        return catalog.list_versions(self.workspace, check_name(corpus, "corpus name"))

    def models(self) -> list[dict]:
        """The registered models: name, dim, pooling, normalize, max_tokens, fingerprint, path."""
        from embedline.storage import catalog

        return catalog.list_models(self.workspace)

    # -- aliases -----------------------------------------------------------------------------------
    def promote(self, corpus: str, version: int, space: str | None = None, force: bool = False) -> dict:
        """Point `corpus`'s prod alias at `version` (of `space`, default prod's space), atomically.
        A version that failed its gates needs `force=True`."""
        from embedline.names import check_name
        from embedline.storage import catalog

        return catalog.promote(self.workspace, check_name(corpus, "corpus name"), version, space=space,
                               allow_failed=force)

    def rollback(self, corpus: str) -> dict:
        """Move prod back to where it pointed before its latest move."""
        from embedline.names import check_name
        from embedline.storage import catalog

        return catalog.rollback(self.workspace, check_name(corpus, "corpus name"))

    # -- gates, validation, upkeep -----------------------------------------------------------------
    def gates(self, corpus: str, **thresholds) -> dict:
        """Set (with keyword arguments) and return `corpus`'s validation thresholds, e.g.
        `gates("docs", min_golden_recall=0.8, max_near_duplicate_rate=0.3)`; unset ones keep defaults."""
        from embedline.tasks.gates import corpus_gates

        return corpus_gates(self.workspace, corpus, thresholds or None)

    def validate(self, corpus: str, version: int | None = None, space: str | None = None):
        """Re-run the gates on a stored version (prod's by default; `space` when two spaces of the corpus
        have a version of that number) and record the verdict; returns (space, version, ValidationReport).
        No alias moves either way."""
        from embedline.flows.validate import validate_version

        with self._context():
            return validate_version(corpus, version, home=self.home, space=space)

    def maintain(self, corpus: str, retention_days: float = 7) -> list[str]:
        """Compact `corpus`'s spaces, fold new rows into indexes, drop untagged versions older than
        `retention_days`; one line per space."""
        from embedline.flows.maintain import maintain_corpus

        with self._context():
            return maintain_corpus(corpus, retention_days, home=self.home)

    # -- models and model change -------------------------------------------------------------------
    def add_model(self, name: str, path: str | PathLike, truncate_dim: int | None = None):
        """Register a local sentence-transformers / Hugging Face model folder as `name`; returns its spec."""
        from embedline.tasks.models import add_model

        return add_model(self.workspace.ensure(), name, str(path), truncate_dim)

    def refresh(self, corpus: str, model: str, sample: int = 5000, query_sample: int = 2000, wait: bool = False,
                batch_docs: int = 5000, order: str = "source", passage_sample: int = 3000):
        """Move `corpus` to `model` without downtime: fit adapters (new-model queries are served at once),
        backfill the new space, swap prod when it passes its gates. Returns (RefreshFit, swap or None);
        without `wait` the backfill runs in a background process and the swap is None."""
        from embedline.flows.refresh import refresh_model

        with self._context():
            return refresh_model(corpus, model, sample, wait, batch_docs, order, query_sample, home=self.home,
                                 passage_sample=passage_sample)

    def refresh_status(self, corpus: str) -> list[dict]:
        """Per target model of a refresh: adapter, retention, backfill progress, what prod serves."""
        from embedline.tasks.refresh import refresh_status

        return refresh_status(self.workspace, corpus)

    def backfill(self, corpus: str, model: str, batch_docs: int = 5000, order: str = "source") -> dict | None:
        """Embed `corpus` with `model` in committed batches (resumable) and swap prod to it if it passes."""
        from embedline.flows.refresh import backfill_corpus

        with self._context():
            return backfill_corpus(corpus, model, batch_docs, order, home=self.home)

"""embedline: embedding ETL for text corpora, as a library.

    import embedline
    db = embedline.connect()                       # the workspace (./.embedline or $EMBEDLINE_HOME)
    run = db.ingest("docs.jsonl", corpus="docs")   # read, chunk, embed, validate, version: a RunSummary
    hits = db.search("docs", "how do I reset my password", k=5)
    rows = db.sql("SELECT doc_id, title FROM docs LIMIT 5").fetchall()

`connect()` returns an `Embedline` (see `help(embedline.Embedline)`): ingest, search, sql, session,
versions, quarantine, promote, rollback, gates, validate, maintain, storage, footprint, models, add_model,
push_model, refresh, refresh_status, backfill. Errors are subclasses of
`EmbedlineError` whose message says what to do next. Settings come from `EMBEDLINE_*` variables or
keyword arguments to `connect` (see `embedline.settings.Settings`).

Subpackages: `embedline.flows` (Prefect flows and the CLI), `embedline.tasks` (units of work as plain
functions), `embedline.storage` (LanceDB, DuckDB), `embedline.validation` (great-expectations gates).
"""

import os
from importlib.metadata import PackageNotFoundError, version

# Before anything imports Prefect or GX (they read these once), unless the user set them: a worker sends
# no usage data (the temporary Prefect server inherits the environment), and a one-shot command waits up
# to 120 s for its temporary server, not Prefect's 20: a fresh machine's first one creates the server's
# database (14 s on two idle cores; past 20 s on two busy ones).
for _variable, _value in (("DO_NOT_TRACK", "1"), ("PREFECT_SERVER_ANALYTICS_ENABLED", "false"),
                          ("GX_ANALYTICS_ENABLED", "false"),
                          ("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")):
    os.environ.setdefault(_variable, _value)

from embedline.api import Embedline, connect  # noqa: E402
from embedline.errors import (  # noqa: E402
    BadInput,
    BadName,
    BadSetting,
    CatalogBusy,
    CatalogMismatch,
    EmbedlineError,
    ModelConflict,
    NotFound,
    ReadOnly,
    SpaceBusy,
    SwapRefused,
    SwapStale,
    TransientError,
    UsageError,
    ValidationFailed,
)
from embedline.settings import Settings  # noqa: E402

try:
    __version__ = version("embedline")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "BadInput", "BadName", "BadSetting", "CatalogBusy", "CatalogMismatch", "Embedline", "EmbedlineError",
    "ModelConflict", "NotFound", "ReadOnly", "Settings", "SpaceBusy", "SwapRefused", "SwapStale",
    "TransientError", "UsageError", "ValidationFailed",
    "connect", "__version__",
]

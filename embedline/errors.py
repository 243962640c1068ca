"""Typed errors. Each says what went wrong and what the user should do next.

`TransientError`s are worth a retry (a lock, a busy file); everything else is terminal. Each class
carries the exit code the CLI ends with (listed in `embedline --help`):
0 ok · 1 failed (a gate, a run) · 2 usage (wrong arguments) · 3 bad input (source, SQL, name, setting)
· 4 not found · 5 busy (another writer holds the space or the catalog).
"""

EXIT_CODES = {
    0: "success",
    1: "the operation failed (a validation gate, a run)",
    2: "usage error: wrong or missing arguments",
    3: "bad input: a source (a missing file too), SQL statement, name or setting that cannot be used",
    4: "not found: no such corpus, version, run or model, or a file embedline stored is gone",
    5: "busy: another process is writing; retry when it finishes",
}


class EmbedlineError(Exception):
    """Base class: `str(err)` is the one-line message the CLI prints."""

    exit_code = 1


class TransientError(EmbedlineError):
    """Worth retrying as-is (Prefect retries only these)."""

    exit_code = 5


class UsageError(EmbedlineError):
    """Arguments that do not fit together."""

    exit_code = 2


class BadInput(EmbedlineError):
    """The user's source, SQL or arguments cannot be used."""

    exit_code = 3


class BadName(BadInput):
    """A corpus or model name that is not a safe identifier."""


class BadSetting(BadInput):
    """An `EMBEDLINE_*` variable (or the matching argument) with a value that cannot be used."""


class CatalogMismatch(BadSetting):
    """The catalog does not describe the Lance data it was pointed at (another host's catalog, a wrong
    EMBEDLINE_CATALOG_URL): writing would destroy what that catalog serves."""


class ModelConflict(BadInput):
    """A model name whose stored vectors came from other files or settings than the spec at hand: a name
    keeps its weights once something was embedded with it, so new weights need a new name."""


class ReadOnly(BadInput):
    """A write in a read-only SQL session."""


class NotFound(EmbedlineError):
    exit_code = 4


class CatalogBusy(TransientError):
    """Another process holds the catalog's write lock."""


class SpaceBusy(EmbedlineError):
    """Another run is writing the same space (not retried: the user decides)."""

    exit_code = 5


class SwapRefused(EmbedlineError):
    """A model swap the integrity rules forbid: prod is held, or the new space lacks prod's documents."""


class SwapStale(SwapRefused):
    """The new space does not hold what prod serves now (prod moved, or its documents changed after the
    backfill's last batch): a catch-up batch, then the swap again."""


class ValidationFailed(EmbedlineError):
    """A batch failed its gates; it is recorded but never promoted."""

    def __init__(self, failures: list[str]):
        self.failures = failures
        self.summary = None  # the recorded run (a RunSummary), where an ingest raised it
        super().__init__("validation failed: " + "; ".join(failures))

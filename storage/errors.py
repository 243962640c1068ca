"""Typed errors. Each says what went wrong and what the user should do next.

`TransientError`s are worth a retry (a lock, a busy file); everything else is terminal.
They live in `storage/` because it is the bottom layer every other package may import.
"""


class EmbedlineError(Exception):
    """Base class: `str(err)` is the one-line message the CLI prints."""

    exit_code = 1


class TransientError(EmbedlineError):
    """Worth retrying as-is (Prefect retries only these)."""


class BadName(EmbedlineError):
    exit_code = 2


class BadInput(EmbedlineError):
    """The user's source or arguments cannot be used."""

    exit_code = 2


class NotFound(EmbedlineError):
    exit_code = 3


class ReadOnly(EmbedlineError):
    exit_code = 2


class CatalogBusy(TransientError):
    """Another process holds the catalog's write lock."""


class ValidationFailed(EmbedlineError):
    """A batch failed its gates; it is recorded but never promoted."""

    def __init__(self, failures: list[str]):
        self.failures = failures
        super().__init__("validation failed: " + "; ".join(failures))

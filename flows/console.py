"""What a command-line run shows of Prefect's run logs: an expected error (an `EmbedlineError`: a missing
source, an unknown version) ends in the CLI's one line `error: ...`, with no Prefect traceback above it.

Prefect logs a failing task or flow run with the exception's traceback (`exc_info`). The run loggers'
API handler sends that record to the Prefect server first, so the run's logs there keep the traceback;
the record then propagates to the root logger's console handler, where `ExpectedErrors` drops the
traceback of an `EmbedlineError`: the terminal keeps Prefect's log line, not the stack. The run still
ends Failed with the message; any other exception (a bug) keeps its traceback everywhere.
"""

import logging

from embedline.errors import EmbedlineError


class ExpectedErrors(logging.Filter):
    """On a console handler: records of an `EmbedlineError` pass without their traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, EmbedlineError):
            record.exc_info = None
            record.exc_text = None  # a handler before this one may have cached the formatted traceback
        return True


def quiet_expected_errors() -> None:
    """Put `ExpectedErrors` on the console handlers Prefect's logging setup gave the root logger (once).
    Prefect's later setups in this process are incremental: they keep these handler objects."""
    from prefect.logging.configuration import ensure_logging_setup
    from prefect.logging.handlers import PrefectConsoleHandler

    ensure_logging_setup()
    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler) and not any(
            isinstance(f, ExpectedErrors) for f in handler.filters
        ):
            handler.addFilter(ExpectedErrors())

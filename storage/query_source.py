"""Rows of a DuckDB query as a source: anything DuckDB reads (Parquet globs, CSV, JSON, Postgres...)."""

from collections.abc import Iterator

import duckdb

from embedline.errors import BadInput
from embedline.redaction import redact


def iter_query_rows(query: str, batch_size: int = 4096) -> Iterator[dict]:
    """Stream the query's rows as dicts, in bounded memory."""
    con = duckdb.connect()
    try:
        try:
            reader = con.execute(query).fetch_record_batch(batch_size)
        except duckdb.Error as exc:
            raise BadInput(
                f"--query failed: {redact(str(exc).splitlines()[0])}"
            ) from None  # no credentials in logs
        for batch in reader:
            yield from batch.to_pylist()
    finally:
        con.close()

"""Rows of a DuckDB query as a source: anything DuckDB reads (Parquet globs, CSV, JSON, Postgres...)."""

from collections.abc import Iterator

import duckdb

from embedline.errors import BadInput
from embedline.redaction import redact
from embedline.storage.duckdb_extensions import load_installed


def iter_query_rows(query: str, batch_size: int = 4096) -> Iterator[dict]:
    """Stream the query's rows as dicts, in bounded memory. The postgres, httpfs and aws extensions load
    from their packages (installed with embedline), so `postgres_scan`, `s3://` and `CREATE SECRET` work
    on a worker with no way out to DuckDB's extension repository."""
    con = duckdb.connect()
    try:
        try:
            load_installed(con)
            reader = con.execute(query).fetch_record_batch(batch_size)
        except duckdb.Error as exc:
            raise BadInput(
                f"--query failed: {redact(str(exc).splitlines()[0])}"
            ) from None  # no credentials in logs
        for batch in reader:
            yield from batch.to_pylist()
    finally:
        con.close()

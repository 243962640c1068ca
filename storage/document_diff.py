"""A run's source diffed against what its space holds, by DuckDB joins rather than Python dicts.

A scratch DuckDB file (local to the process, in the run's scratch folder: it spills to disk rather than
grow the process)
holds two tables: `known`, the space's `documents` rows (doc_id, change_key) streamed from the catalog
once as Arrow batches, and `seen`, the ids the source named, appended one batch at a time. The planner
asks for the previous keys of one batch of source documents (a join over that batch), and at the end
for the counts and the known documents the source no longer names (an anti-join). Python holds one
batch and what changed, never every document of the space.
"""

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Protocol

import duckdb
import pyarrow as pa

KNOWN = pa.schema([("doc_id", pa.string()), ("change_key", pa.string())])
SEEN = pa.schema([("doc_id", pa.string()), ("accepted", pa.bool_())])
MEMORY_LIMIT = "256MB"  # beyond it DuckDB spills the scratch tables to disk


class KnownRows(Protocol):
    """Where the known documents come from: `reader()` streams (doc_id, change_key) batches."""

    def reader(self) -> AbstractContextManager[pa.RecordBatchReader]: ...


class DocumentDiff:
    """The scratch tables of one plan; open it with `open_diff`."""

    def __init__(self, con: duckdb.DuckDBPyConnection):
        self._con = con

    def previous_keys(self, doc_ids: list[str]) -> dict[str, str]:
        """doc_id → change key the space holds, for those of `doc_ids` it holds."""
        if not doc_ids:
            return {}
        self._con.register("batch_ids", pa.table({"doc_id": pa.array(doc_ids, pa.string())}))
        try:
            found = self._con.execute(
                "SELECT k.doc_id, k.change_key FROM known k SEMI JOIN batch_ids b USING (doc_id)"
            ).fetch_arrow_table()
        finally:
            self._con.unregister("batch_ids")
        return dict(zip(found.column("doc_id").to_pylist(), found.column("change_key").to_pylist()))

    def add_seen(self, seen: list[tuple[str, bool]]) -> None:
        """Record (doc_id, accepted) pairs of the source; accepted: the record is the document's current
        version (unchanged, or staged to embed)."""
        if not seen:
            return
        ids, accepted = zip(*seen)
        rows = pa.table([pa.array(ids, pa.string()), pa.array(accepted, pa.bool_())], schema=SEEN)
        self._con.register("seen_batch", rows)
        try:
            self._con.execute("INSERT INTO seen SELECT * FROM seen_batch")
        finally:
            self._con.unregister("seen_batch")

    def known_count(self) -> int:
        return self._con.execute("SELECT count(*) FROM known").fetchone()[0]

    def absent_count(self) -> int:
        """Known documents the source did not name at all."""
        return self._con.execute("SELECT count(*) FROM known ANTI JOIN seen USING (doc_id)").fetchone()[0]

    def absent_ids(self) -> list[str]:
        """Those documents' ids, sorted."""
        rows = self._con.execute("SELECT doc_id FROM known ANTI JOIN seen USING (doc_id) ORDER BY doc_id")
        return rows.fetch_arrow_table().column("doc_id").to_pylist()

    def kept_known(self, doc_ids: list[str]) -> set[str]:
        """Those of `doc_ids` the space holds and no record of which was accepted: they keep serving."""
        if not doc_ids:
            return set()
        rows = self._con.execute(
            "SELECT doc_id FROM known WHERE doc_id IN (SELECT unnest(?::VARCHAR[]))"
            " AND doc_id NOT IN (SELECT doc_id FROM seen WHERE accepted)",
            [doc_ids],
        ).fetchall()
        return {doc_id for (doc_id,) in rows}


@contextmanager
def open_diff(path: Path, known: Mapping[str, str] | KnownRows) -> Iterator[DocumentDiff]:
    """A diff whose scratch tables live in the DuckDB file `path` (removed on exit), `known` copied in:
    a mapping (small, tests) or `KnownRows` whose batches DuckDB inserts as they stream."""
    _remove(path)
    con = duckdb.connect(str(path), config={"memory_limit": MEMORY_LIMIT, "threads": 2})  # shares a worker
    try:
        con.execute("CREATE TABLE known (doc_id VARCHAR, change_key VARCHAR)")
        con.execute("CREATE TABLE seen (doc_id VARCHAR, accepted BOOLEAN)")
        if isinstance(known, Mapping):
            _insert_known(con, pa.table([pa.array(list(known), pa.string()),
                                         pa.array(list(known.values()), pa.string())], schema=KNOWN))
        else:
            with known.reader() as reader:
                _insert_known(con, reader)
        yield DocumentDiff(con)
    finally:
        con.close()
        _remove(path)


def _insert_known(con, rows) -> None:
    con.register("known_rows", rows)
    try:
        con.execute("INSERT INTO known SELECT doc_id, change_key FROM known_rows")
    finally:
        con.unregister("known_rows")


def _remove(path: Path) -> None:
    for leftover in (path, path.with_name(path.name + ".wal")):
        leftover.unlink(missing_ok=True)

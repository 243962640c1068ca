"""The embeddings store: one LanceDB table per space (`<corpus>__<model>`), one version per run.

Rows are keyed by `chunk_id` (declared to Lance as the primary key), so every write to a table with rows
is a `merge_insert`: re-running a batch updates rows in place instead of duplicating them. A write to an
empty table has nothing to match and appends (streaming; the upsert's join held ~0.5 GB at 64k chunks).
"""

import re
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa

from embedline.errors import BadInput, NotFound
from embedline.names import check_space
from embedline.storage.index import nearest, refresh_indexes, tuned
from embedline.storage.vectors import StorageChoice, stored_as, vector_field_type, with_vectors
from embedline.workspace import Workspace, private_files

BASE_FIELDS = ("chunk_id", "doc_id", "chunk_index", "text", "title", "vector", "model_key", "run_id")


def chunk_schema(dim: int, metadata: pa.Schema | None = None) -> pa.Schema:
    """The table layout: chunk columns, the vector, then the document's metadata columns."""
    fields = [
        pa.field("chunk_id", pa.string(), nullable=False),
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("chunk_index", pa.int32()),
        pa.field("text", pa.string()),
        pa.field("title", pa.string()),
        pa.field("vector", pa.list_(pa.float32(), dim)),
        pa.field("model_key", pa.string()),
        pa.field("run_id", pa.int64()),
    ]
    return pa.schema(fields + list(metadata or []))


def vector_matrix(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A `vector` column as an (n, dim) float32 matrix."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return (
        column.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, column.type.list_size)
    )


def connect(ws: Workspace):
    import lancedb

    return lancedb.connect(ws.lance_uri, read_consistency_interval=timedelta(0),
                           storage_options=ws.lance_storage_options)


def open_space(ws: Workspace, space: str):
    check_space(space)
    db = connect(ws)
    try:
        return db.open_table(space)
    except (FileNotFoundError, ValueError) as exc:
        raise NotFound(
            f"no embeddings for space {space!r} in {ws.lance_uri}: run `embedline ingest` first"
        ) from exc


def space_exists(ws: Workspace, space: str) -> bool:
    return space in space_names(ws)


def space_names(ws: Workspace) -> list[str]:
    return connect(ws).list_tables().tables


def run_tags(ws: Workspace, space: str) -> dict[int, tuple[int, tuple[datetime, ...]]]:
    """By run id: the version each `run-<n>` tag names and when it was committed, in UTC. Lance gives a
    naive local time that has lost DST's fold, so a time in an hour the clock repeats gives both."""
    table = open_space(ws, space)
    committed = {v["version"]: v["timestamp"] for v in table.list_versions()}
    return {int(tag[4:]): (info["version"], tuple(sorted({committed[info["version"]].replace(fold=fold)
                                                          .astimezone(timezone.utc) for fold in (0, 1)})))
            for tag, info in table.tags.list().items()
            if tag.startswith("run-") and tag[4:].isdigit() and info["version"] in committed}


def write_version(
    ws: Workspace,
    space: str,
    schema: pa.Schema,
    batches: Iterable[pa.RecordBatch],
    replace_doc_ids: list[str],
    tag: str,
    storage: StorageChoice | None = None,
) -> dict:
    """Upsert `batches` and drop stale chunks of `replace_doc_ids` in ONE commit, then tag it.

    One commit per run means a reader sees the whole run or none of it, and a crashed run leaves
    the table as it was. The space is laid out as `storage` says (vector type, index kind): a space
    laid out otherwise is converted first, in versions that only the tagged one after them serves.
    Its files are the owner's alone (umask 077), whichever process writes.
    """
    with private_files():
        return _write_version(ws, space, schema, batches, replace_doc_ids, tag, storage or StorageChoice())


def _write_version(ws: Workspace, space: str, schema: pa.Schema, batches: Iterable[pa.RecordBatch],
                   replace_doc_ids: list[str], tag: str, storage: StorageChoice) -> dict:
    db = connect(ws)
    table = db.open_table(space) if check_space(space) in db.list_tables().tables else None
    laid_out = with_vectors(schema, storage.vectors)
    if table is None or (table.count_rows() == 0 and table.schema != laid_out):
        # new, or emptied after a failed first run: the columns are this run's (older versions stay readable)
        table = db.create_table(space, schema=laid_out, mode="overwrite")
        table.set_unenforced_primary_key("chunk_id")
    else:
        convert_vectors(table, storage.vectors)
        schema = _align_schema(table, schema)
    reader = pa.RecordBatchReader.from_batches(schema, (_fit(b, schema) for b in batches))
    deleted = 0  # stale chunks dropped: of deleted documents, and of changed ones beyond their new chunks
    if table.count_rows() == 0:  # nothing to match: an append streams (an upsert's join held ~0.5 GB at 64k)
        table.add(reader)
    else:
        merge = table.merge_insert("chunk_id").when_matched_update_all().when_not_matched_insert_all()
        if replace_doc_ids:
            merge = merge.when_not_matched_by_source_delete(_in_filter("doc_id", replace_doc_ids))
        deleted = merge.execute(reader).num_deleted_rows
    indexes = refresh_indexes(table, index_type=storage.index_type)
    version = table.version
    if tag in table.tags.list():  # a run id handed out again: the catalog was restored from a backup
        table.tags.update(tag, version)  # that run is not in this catalog; the id is this run's now
    else:
        table.tags.create(tag, version)
    return {"version": version, "tag": tag, "row_count": table.count_rows(), "chunks_deleted": deleted,
            **indexes}


def convert_vectors(table, vectors: str) -> bool:
    """Store the table's vectors as `vectors` (float32 or float16); True if that rewrote the column.
    Lance refuses to cast an indexed column, so the vector index goes first (the caller rebuilds it)."""
    current = table.schema.field("vector").type
    if stored_as(current) == vectors:
        return False
    if "vector_idx" in {idx.name for idx in table.list_indices()}:
        table.drop_index("vector_idx")
    table.alter_columns({"path": "vector", "data_type": vector_field_type(current.list_size, vectors)})
    return True


def layout(ws: Workspace, space: str, version: int | None) -> dict:
    """How `version` of the space stores its vectors: {"vectors": float32|float16, "index_type": the
    vector index's kind in lowercase (a key of storage.index.INDEX_TYPES) or None}."""
    dataset = dataset_at(ws, space, version)
    kinds = [idx["type"].lower() for idx in dataset.list_indices() if idx["name"] == "vector_idx"]
    vectors = stored_as(dataset.schema.field("vector").type)
    return {"vectors": vectors, "index_type": kinds[0] if kinds else None}


def latest_version(ws: Workspace, space: str) -> int | None:
    """The newest Lance version of `space`; None when the space has no table."""
    if not space_exists(ws, space):
        return None
    return open_space(ws, space).version


def restore_version(ws: Workspace, space: str, version: int | None) -> int:
    """Make a new latest version of `space` with the content of `version` (None: no rows at all);
    returns its number. Every version, tagged ones included, stays readable as it was."""
    table = open_space(ws, space)
    if version is None:
        table.delete("true")
    else:
        table.restore(version)
    return table.version


def has_version(ws: Workspace, space: str, version: int) -> bool:
    """Whether `space` still holds `version` (cleanup removes those no tag keeps): one manifest read."""
    try:
        dataset_at(ws, space, version)
    except NotFound:
        return False
    return True


def doc_ids(ws: Workspace, space: str, version: int) -> set[str]:
    """The documents `space` holds at `version`."""
    column = dataset_at(ws, space, version).to_table(columns=["doc_id"]).column("doc_id")
    return set(column.unique().to_pylist())


def _align_schema(table, schema: pa.Schema) -> pa.Schema:
    """Add metadata columns new to this run (null in the rows already there); keep the table's types."""
    missing = [pa.field(f.name, f.type) for f in schema if f.name not in table.schema.names]
    if missing:
        table.add_columns(missing)
    return table.schema


def _fit(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """`batch` laid out as the table: columns matched by name whatever their order, null where the run
    has no such column (a metadata field its documents lack)."""
    if batch.schema == schema:
        return batch
    names = batch.schema.names
    columns = [batch.column(f.name).cast(f.type) if f.name in names else pa.nulls(batch.num_rows, f.type)
               for f in schema]
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def metadata_types(ws: Workspace, space: str, version: int | None) -> dict[str, str]:
    """column → type name of the space's metadata columns as `version` holds them (for spaces written
    before the catalog kept metadata types); {} without a version or rows (an emptied head keeps the
    columns of a failed first run, whose guesses must not outlive it)."""
    if version is None or not space_exists(ws, space):
        return {}
    dataset = dataset_at(ws, space, version)
    if dataset.count_rows() == 0:
        return {}
    kinds = {}
    for f in dataset.schema:
        kind = _kind(f.type)
        if f.name not in BASE_FIELDS and kind is not None:
            kinds[f.name] = kind
    return kinds


def _kind(arrow_type: pa.DataType) -> str | None:
    if pa.types.is_boolean(arrow_type):
        return "bool"
    if pa.types.is_integer(arrow_type):
        return "int64"
    if pa.types.is_floating(arrow_type):
        return "double"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "string"
    if pa.types.is_list(arrow_type) and pa.types.is_string(arrow_type.value_type):
        return "list<string>"
    return None


def _in_filter(column: str, values: list[str]) -> str:
    quoted = ", ".join("'" + v.replace("'", "''") + "'" for v in values)
    return f"{column} IN ({quoted})"


def dataset_at(ws: Workspace, space: str, version: int | str | None = None):
    """A read-only Lance dataset of `space` at `version` (number or tag); latest when None."""
    import lance

    uri = f"{ws.lance_uri.rstrip('/')}/{check_space(space)}.lance"
    try:
        return lance.dataset(uri, version=version, storage_options=ws.lance_storage_options)
    except (FileNotFoundError, ValueError) as exc:
        raise NotFound(f"space {space!r} has no version {version!r} in {ws.lance_uri}") from exc


def search(ws: Workspace, space: str, version: int, vector, k: int, where: str | None = None,
           columns: list[str] | None = None, text: str | None = None) -> list[dict]:
    """Nearest chunks by cosine distance in `space` at `version`; with `text`, hybrid (vector + BM25, RRF).

    Uses the version's ANN index when it has one (nprobes/refine tuned in `storage.index`), else exact.
    Hits carry `score`: cosine similarity, or the fused relevance for hybrid queries. `where` is a Lance
    filter expression (`search_filter`).
    """
    if text is None:
        return nearest_chunks(dataset_at(ws, space, version), vector, k, where, columns)
    table = open_space(ws, space)
    table.checkout(version)
    return hybrid_chunks(table, vector, text, k, where, columns)


def hybrid_chunks(table, vector, text: str, k: int, where: str | None = None,
                  columns: list[str] | None = None) -> list[dict]:
    """Top-k chunks of an open LanceDB table by vector and full-text rank, fused (RRF), ties broken by
    chunk_id. Each side fetches `_hybrid_pool(k)` candidates, so chunks tied at the k-th place are all
    seen and ordered by chunk_id: a larger k lists the same first k. No `select`: a projection pushed
    to both sides makes Lance warn that it lacks `_distance` (vector side) or `_score` (full-text
    side), and neither side takes the other's column; the columns are picked from the fused rows."""
    where = search_filter(where)
    pool = _hybrid_pool(k)
    query = tuned(table.search(query_type="hybrid").vector(vector).text(text).distance_type("cosine"), pool)
    query = query.limit(pool).rerank(_tie_stable_rrf())
    if where:
        query = query.where(where, prefilter=True)
    try:
        fused = query.to_arrow()
    except (ValueError, RuntimeError, OSError) as exc:
        raise _search_error(exc) from exc
    hits = fused.slice(0, k).to_pylist()
    return [{**({c: hit[c] for c in columns} if columns else hit),
             "score": round(float(hit["_relevance_score"]), 6)} for hit in hits]


def _hybrid_pool(k: int) -> int:
    """Candidates each side of a hybrid search fetches for a top-k: k more than asked, at least 50."""
    return k + max(k, 50)


def _tie_stable_rrf():
    """An RRF reranker that breaks ties by chunk_id (its class made here: lancedb loads on first use)."""
    from lancedb.rerankers import RRFReranker

    class TieStableRRF(RRFReranker):
        """RRF whose input ranks and output order break ties by chunk_id: lancedb ranks tied rows (duplicate
        texts: equal distances, equal BM25) in whatever order each side returned them, so their fused
        scores, and which of them make the top-k, changed with k."""

        def rerank_hybrid(self, query, vector_results, fts_results):
            vector_results = _sorted(vector_results, "_distance", "ascending")
            fts_results = _sorted(fts_results, "_score", "descending")
            fused = super().rerank_hybrid(query, vector_results, fts_results)
            return _sorted(fused, "_relevance_score", "descending")

    return TieStableRRF()


def _sorted(results: pa.Table, score: str, order: str) -> pa.Table:
    if results is None or results.num_rows == 0:
        return results
    return results.sort_by([(score, order), ("chunk_id", "ascending")])


# Lance's errors end with the Rust source line that raised them (`, /home/runner/.../sql.rs:109:22`).
_SOURCE_LINE = re.compile(r",?\s*\S+\.rs:\d+:\d+")
# A quoted SQL literal or identifier ('it''s', "col"): a `;` inside one is text, not a statement's end.
_QUOTED = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"")


def search_filter(where: str | None) -> str | None:
    """`where` as Lance should get it: None for no filter (a blank one too: Lance fails to parse it).
    A `;` outside quotes is refused: Lance reads the first statement and ignores the rest, so
    `section = 'x'; ...` would look like a filter that was applied."""
    if where is None or not where.strip():
        return None
    if ";" in _QUOTED.sub("", where):
        raise BadInput(
            f"--where {where!r}: give one filter expression without ';', e.g. \"section = 'games'\""
        )
    return where


def _search_error(exc: Exception) -> BadInput:
    """Lance's message, first line, without the Rust source location it ends with."""
    first = (str(exc).splitlines() or [type(exc).__name__])[0]
    return BadInput(f"search failed: {_SOURCE_LINE.sub('', first).strip()}")


def nearest_chunks(dataset, vector, k: int, where: str | None = None, columns: list[str] | None = None,
                   refine: bool = True) -> list[dict]:
    """Top-k chunks of an open Lance dataset by cosine distance, `where` applied before the search."""
    where = search_filter(where)
    try:
        table = dataset.to_table(nearest=nearest(vector, k, refine), filter=where, prefilter=bool(where),
                                 columns=[*columns, "_distance"] if columns else None,
                                 disable_scoring_autoprojection=True)
    except (ValueError, RuntimeError, OSError) as exc:
        raise _search_error(exc) from exc
    hits = table.to_pylist()
    for hit in hits:
        hit["score"] = round(1.0 - float(hit["_distance"]), 6)
    return hits

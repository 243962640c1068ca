"""How a space stores its vectors: float32 (the default) or float16, half the bytes per vector.

Lance stores, indexes and searches float16 vector columns as they are; DuckDB cannot read them
(`Unsupported Internal Arrow Type e`). SQL views therefore scan float16 spaces through `WidenedDataset`,
which casts the vector column to float32 as batches stream to DuckDB: the table keeps one float16 column
(the storage saving is real) and the views keep their `FLOAT[d]` contract, with projections and
filters still pushed down to Lance.
"""

from dataclasses import dataclass

import lance
import pyarrow as pa

from embedline.errors import BadInput
from embedline.storage.index import DEFAULT_INDEX, INDEX_TYPES

VECTOR_TYPES = {"float32": pa.float32(), "float16": pa.float16()}


@dataclass(frozen=True)
class StorageChoice:
    """A space's storage choice: how its vectors are stored and which vector index it gets."""

    vectors: str = "float32"
    index_type: str = DEFAULT_INDEX

    @classmethod
    def checked(cls, vectors: str, index_type: str) -> "StorageChoice":
        """The choice, or `BadInput` naming what may be chosen."""
        vectors, index_type = vectors.lower(), index_type.lower()
        if vectors not in VECTOR_TYPES:
            raise BadInput(f"vectors {vectors!r}: use one of {', '.join(VECTOR_TYPES)}")
        if index_type not in INDEX_TYPES:
            raise BadInput(f"index {index_type!r}: use one of {', '.join(INDEX_TYPES)}")
        return cls(vectors, index_type)

    def differs_from(self, layout: dict) -> bool:
        """Whether a version laid out as `layout` (embeddings.layout) is not stored as chosen; a version
        without a vector index yet (below the row threshold) differs only in its vectors."""
        return layout["vectors"] != self.vectors or layout["index_type"] not in (None, self.index_type)


def vector_field_type(dim: int, vectors: str = "float32") -> pa.DataType:
    """The Arrow type of a `vector` column of `dim` values stored as `vectors`."""
    return pa.list_(VECTOR_TYPES[vectors], dim)


def stored_as(vector_type: pa.DataType) -> str:
    """"float16" or "float32": how a `vector` column of this Arrow type stores its values."""
    return "float16" if pa.types.is_float16(vector_type.value_type) else "float32"


def bytes_per_vector(dim: int, vectors: str) -> int:
    return dim * VECTOR_TYPES[vectors].byte_width


def with_vectors(schema: pa.Schema, vectors: str) -> pa.Schema:
    """`schema` with its `vector` column stored as `vectors`."""
    index = schema.get_field_index("vector")
    dim = schema.field(index).type.list_size
    return schema.set(index, pa.field("vector", vector_field_type(dim, vectors)))


def widened(schema: pa.Schema) -> pa.Schema:
    """`schema` with every float16 fixed-size list column as float32 (what DuckDB can read)."""
    fields = []
    for field in schema:
        kind = field.type
        if pa.types.is_fixed_size_list(kind) and pa.types.is_float16(kind.value_type):
            kind = pa.list_(pa.float32(), kind.list_size)
            field = pa.field(field.name, kind, field.nullable, field.metadata)
        fields.append(field)
    return pa.schema(fields, metadata=schema.metadata)


def has_float16(schema: pa.Schema) -> bool:
    return widened(schema) != schema


class WidenedDataset(lance.LanceDataset):
    """A Lance dataset DuckDB scans as if its float16 vectors were float32 (cast batch by batch)."""

    @property
    def schema(self) -> pa.Schema:
        return widened(super().schema)

    def scanner(self, *args, **kwargs):
        return _WidenedScanner(super().scanner(*args, **kwargs))


class _WidenedScanner:
    def __init__(self, scanner):
        self._scanner = scanner

    def to_reader(self) -> pa.RecordBatchReader:
        reader = self._scanner.to_reader()
        schema = widened(reader.schema)
        return pa.RecordBatchReader.from_batches(schema, (batch.cast(schema) for batch in reader))

    @property
    def projected_schema(self) -> pa.Schema:
        return widened(self._scanner.projected_schema)

    def __getattr__(self, name):
        return getattr(self._scanner, name)


def readable_by_duckdb(dataset: lance.LanceDataset, storage_options: dict | None = None):
    """`dataset` itself, or the same version widened to float32 when it stores float16 vectors."""
    if not has_float16(dataset.schema):
        return dataset
    return WidenedDataset(dataset.uri, version=dataset.version, storage_options=storage_options)

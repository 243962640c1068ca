"""Throw-away Lance tables for trying a storage layout on a copy of a space's vectors.

`embedline footprint` builds one per option under `<home>/scratch/` and removes them after: the
serving space is only ever read.
"""

import os
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from embedline.storage.index import index_config
from embedline.storage.vectors import vector_field_type


def build_scratch_space(root: Path, name: str, chunk_ids: pa.Array, doc_ids: pa.Array, matrix: np.ndarray,
                        vectors: str, index_type: str | None) -> dict:
    """A table `name` under `root` holding `matrix` stored as `vectors`, with an `index_type` vector index
    (None: none, searched exactly). Returns its dataset, the index's bytes on disk and build seconds."""
    import lancedb

    dim = matrix.shape[1]
    flat = pa.array(np.ascontiguousarray(matrix, np.float32).reshape(-1))
    column = pa.FixedSizeListArray.from_arrays(flat, dim)
    data = pa.table({"chunk_id": chunk_ids, "doc_id": doc_ids,
                     "vector": column.cast(vector_field_type(dim, vectors))})
    table = lancedb.connect(str(root)).create_table(name, data=data)
    started = time.perf_counter()
    if index_type is not None:
        table.create_index("vector", config=index_config(index_type, len(matrix)))
    seconds = time.perf_counter() - started
    dataset = table.to_lance()
    return {"dataset": dataset, "index_bytes": folder_bytes(Path(dataset.uri) / "_indices"),
            "data_bytes": folder_bytes(Path(dataset.uri) / "data"), "build_seconds": seconds}


def folder_bytes(path: Path) -> int:
    """Bytes of every file under `path` (0 when it does not exist)."""
    return sum(os.path.getsize(Path(folder) / f) for folder, _, files in os.walk(path) for f in files)

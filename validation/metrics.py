"""Per-row scalars of a batch of vectors, so GX never sees (or pickles) a vector column."""

import numpy as np
import pandas as pd
import pyarrow as pa


def chunk_scalars(batches) -> pd.DataFrame:
    """chunk_id, doc_id, dim, norm, finite, text_len for every staged chunk row."""
    frames = []
    for batch in batches:
        if batch.num_rows == 0:
            continue
        vectors = batch.column("vector")
        dim = vectors.type.list_size
        flat = vectors.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        matrix = flat.reshape(-1, dim) if dim else flat.reshape(len(batch), 0)
        finite = np.isfinite(matrix).all(axis=1)
        with np.errstate(invalid="ignore", over="ignore"):
            norms = np.linalg.norm(np.nan_to_num(matrix, nan=0.0, posinf=0.0, neginf=0.0), axis=1)
        frames.append(pd.DataFrame({
            "chunk_id": batch.column("chunk_id").to_pandas(),
            "doc_id": batch.column("doc_id").to_pandas(),
            "dim": np.full(len(batch), dim, dtype=np.int64),
            "norm": norms.astype(np.float64),
            "finite": finite,
            "text_len": pa.compute.utf8_length(batch.column("text")).to_pandas().fillna(0).astype(np.int64),
            "model_key": batch.column("model_key").to_pandas(),
        }))
    if not frames:
        return pd.DataFrame({"chunk_id": pd.Series(dtype=str), "doc_id": pd.Series(dtype=str),
                             "dim": pd.Series(dtype=np.int64), "norm": pd.Series(dtype=np.float64),
                             "finite": pd.Series(dtype=bool), "text_len": pd.Series(dtype=np.int64),
                             "model_key": pd.Series(dtype=str)})
    return pd.concat(frames, ignore_index=True)


def run_summary_frame(counts: dict, chunk_rows: int, chunks_reported: int) -> pd.DataFrame:
    """One row: what was read against what was accounted for, documents and chunks."""
    accounted = (counts.get("docs_new", 0) + counts.get("docs_changed", 0)
                 + counts.get("docs_unchanged", 0) + counts.get("docs_quarantined", 0))
    return pd.DataFrame({
        "docs_read": [counts.get("docs_read", 0)], "docs_accounted": [accounted],
        "chunk_rows": [chunk_rows], "chunks_reported": [chunks_reported],
    })

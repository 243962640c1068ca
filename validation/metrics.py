"""Per-row scalars of a batch of vectors, so GX never sees (or pickles) a vector column."""

import numpy as np
import pandas as pd
import pyarrow as pa


def chunk_scalars_and_vectors(batches, keep: int = 2000) -> tuple[pd.DataFrame, np.ndarray]:
    """Per-row scalars (chunk_id, doc_id, dim, norm, finite, text_len, model_key) for every staged
    chunk, and a uniform reservoir sample of up to `keep` vectors for the quality metrics."""
    frames, sample, seen = [], [], 0
    rng = np.random.default_rng(0)
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
        for row in matrix:  # reservoir sampling keeps memory bounded on any corpus size
            seen += 1
            if len(sample) < keep:
                sample.append(row)
            elif (slot := rng.integers(seen)) < keep:
                sample[slot] = row
    vectors = np.stack(sample) if sample else np.zeros((0, 0), np.float32)
    if not frames:
        empty = pd.DataFrame({"chunk_id": pd.Series(dtype=str), "doc_id": pd.Series(dtype=str),
                              "dim": pd.Series(dtype=np.int64), "norm": pd.Series(dtype=np.float64),
                              "finite": pd.Series(dtype=bool), "text_len": pd.Series(dtype=np.int64),
                              "model_key": pd.Series(dtype=str)})
        return empty, vectors
    return pd.concat(frames, ignore_index=True), vectors


def run_summary_frame(counts: dict, chunk_rows: int, chunks_reported: int) -> pd.DataFrame:
    """One row: what was read against what was accounted for, documents and chunks."""
    accounted = (counts.get("docs_new", 0) + counts.get("docs_changed", 0)
                 + counts.get("docs_unchanged", 0) + counts.get("docs_quarantined", 0)
                 + counts.get("docs_deferred", 0))
    return pd.DataFrame({
        "docs_read": [counts.get("docs_read", 0)], "docs_accounted": [accounted],
        "chunk_rows": [chunk_rows], "chunks_reported": [chunks_reported],
    })


def sample_rows(matrix: np.ndarray, limit: int, seed: int = 0) -> np.ndarray:
    if len(matrix) <= limit:
        return matrix
    return matrix[np.random.default_rng(seed).choice(len(matrix), limit, replace=False)]


def effective_rank(matrix: np.ndarray) -> float:
    """RankMe (Garrido et al. 2023): exp of the entropy of the normalized singular values.

    1 for collapsed embeddings (all vectors equal), up to the dimension for well-spread ones.
    """
    if len(matrix) < 2:
        return float("nan")
    singular = np.linalg.svd(matrix.astype(np.float64), compute_uv=False)
    p = singular / max(singular.sum(), 1e-12) + 1e-12
    return float(np.exp(-(p * np.log(p)).sum()))


def isotropy(matrix: np.ndarray) -> float:
    """Participation ratio of the covariance spectrum, divided by the dimension: (Σλ)² / (d·Σλ²).

    1 when variance is spread evenly over every direction, 1/d when it lies on one line. A cheap,
    documented stand-in for IsoScore with the same ends of the scale.
    """
    if len(matrix) < 2:
        return float("nan")
    centered = matrix.astype(np.float64) - matrix.mean(axis=0)
    eig = np.clip(np.linalg.svd(centered, compute_uv=False) ** 2, 0, None)
    total = eig.sum()
    if total <= 1e-18:
        return 0.0
    return float(total**2 / (matrix.shape[1] * (eig**2).sum()))


def near_duplicate_rate(matrix: np.ndarray, threshold: float = 0.999) -> float:
    """Share of vectors whose nearest other vector has cosine ≥ threshold."""
    if len(matrix) < 2:
        return 0.0
    unit = matrix / np.clip(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12, None)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -1.0)
    return float((sims.max(axis=1) >= threshold).mean())


MIN_ROWS_FOR_METRICS = 32  # below this, rank and duplicate rates say nothing about the model


def vector_metrics(matrix: np.ndarray, sample: int = 2000) -> dict:
    """Quality metrics of a batch of vectors (computed on a sample for speed); NaN when too few rows."""
    if len(matrix) < MIN_ROWS_FOR_METRICS:
        return {"effective_rank": float("nan"), "isotropy": float("nan"), "near_duplicate_rate": float("nan"),
                "norm_mean": float("nan"), "norm_std": float("nan")}
    finite = matrix[np.isfinite(matrix).all(axis=1)]
    rows = sample_rows(finite, sample)
    norms = np.linalg.norm(finite, axis=1) if len(finite) else np.zeros(0)
    return {
        "effective_rank": effective_rank(rows),
        "isotropy": isotropy(rows),
        "near_duplicate_rate": near_duplicate_rate(rows),
        "norm_mean": float(norms.mean()) if len(norms) else float("nan"),
        "norm_std": float(norms.std()) if len(norms) else float("nan"),
    }


def drift(new: dict[str, np.ndarray], old: dict[str, np.ndarray]) -> dict:
    """Cosine between the same chunk's old and new vectors (same text, same chunking: should be ≈1),
    plus the cosine between the two batches' centroids (a distribution shift signal)."""
    shared = sorted(set(new) & set(old))
    if not shared:
        return {"drift_shared_chunks": 0, "drift_min_cosine": float("nan"), "drift_mean_cosine": float("nan"),
                "centroid_cosine": float("nan")}
    a = np.stack([new[c] for c in shared]).astype(np.float64)
    b = np.stack([old[c] for c in shared]).astype(np.float64)
    cos = (a * b).sum(axis=1) / np.clip(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12, None)
    ca, cb = np.stack(list(new.values())).mean(axis=0), np.stack(list(old.values())).mean(axis=0)
    centroid = float(ca @ cb / max(np.linalg.norm(ca) * np.linalg.norm(cb), 1e-12))
    return {"drift_shared_chunks": len(shared), "drift_min_cosine": float(cos.min()),
            "drift_mean_cosine": float(cos.mean()), "centroid_cosine": centroid}

"""Two pictures of a version for the Prefect UI: a PCA map of its vectors colored by a metadata
column, and a histogram of how far re-embedded documents moved since the previous version."""

import io

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from embedline.storage import embeddings
from embedline.storage.embeddings import BASE_FIELDS
from embedline.workspace import Workspace

MAX_POINTS = 4000
MAX_COLORS = 12


def pca_map(ws: Workspace, space: str, version: int,
            color_by: str | None = None) -> tuple[bytes | None, str | None]:
    """PNG of the version's vectors projected on their first two principal components; returns the
    picture (None for a version of fewer than two chunks, e.g. one that deleted every document) and
    the column that colored it (the first low-cardinality string column when not given)."""
    dataset = embeddings.dataset_at(ws, space, version)
    color_by = color_by or _categorical_column(dataset)
    columns = ["vector"] + ([color_by] if color_by else [])
    table = _sample(dataset, columns, MAX_POINTS)
    if table.num_rows < 2:
        return None, color_by
    vectors = embeddings.vector_matrix(table.column("vector"))
    centered = vectors - vectors.mean(axis=0)
    _, axes = np.linalg.eigh(centered.T @ centered)  # d×d: cheaper than an n×d SVD for n ≫ d
    points = centered @ axes[:, [-1, -2]]  # eigh sorts ascending: the two largest
    labels = table.column(color_by).to_pylist() if color_by else None
    return _scatter(points, labels, f"{space} v{version}: PCA of {len(points):,} chunks", color_by), color_by


def drift_histogram(ws: Workspace, space: str, version: int, previous: int | None,
                    doc_ids: list[str]) -> bytes | None:
    """PNG histogram of 1 − cos between each re-embedded document's mean vector in `previous` and in
    `version`; None when there is no previous version or no document is in both."""
    if previous is None or not doc_ids:
        return None
    new = _doc_means(embeddings.dataset_at(ws, space, version), doc_ids)
    old = _doc_means(embeddings.dataset_at(ws, space, previous), doc_ids)
    common = sorted(set(new) & set(old))
    if not common:
        return None
    distances = np.array([1.0 - float(np.dot(new[d], old[d])) for d in common])
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    axes.hist(distances, bins=40, color="#4C72B0")
    axes.set_xlabel("cosine distance of a document's mean vector")
    axes.set_ylabel("documents")
    axes.set_title(f"{space}: drift v{previous} → v{version} ({len(common):,} re-embedded documents)")
    return _png(figure)


def _doc_means(dataset, doc_ids: list[str]) -> dict[str, np.ndarray]:
    table = dataset.to_table(
        columns=["doc_id", "vector"], filter=pc.field("doc_id").isin(doc_ids[:MAX_POINTS])
    )
    vectors, ids = (
        embeddings.vector_matrix(table.column("vector")),
        np.array(table.column("doc_id").to_pylist()),
    )
    means = {}
    for doc_id in np.unique(ids):
        mean = vectors[ids == doc_id].mean(axis=0)
        means[str(doc_id)] = mean / (np.linalg.norm(mean) or 1.0)
    return means


def _categorical_column(dataset) -> str | None:
    """A metadata string column with few distinct values (Debian's `section`), to color points by."""
    for field in dataset.schema:
        if field.name in BASE_FIELDS or not pa.types.is_string(field.type):
            continue
        values = dataset.to_table(columns=[field.name], limit=MAX_POINTS).column(field.name)
        if 1 < len(pc.unique(values)) <= 64:
            return field.name
    return None


def _sample(dataset, columns: list[str], limit: int) -> pa.Table:
    """Up to `limit` rows picked at random (seeded: the same version gives the same picture)."""
    total = dataset.count_rows()
    if total <= limit:
        return dataset.to_table(columns=columns)
    rows = np.sort(np.random.default_rng(0).choice(total, size=limit, replace=False))
    return dataset.take(rows, columns=columns)


def _scatter(points: np.ndarray, labels: list | None, title: str, color_by: str | None) -> bytes:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 5.2), dpi=100)
    if labels is None:
        axes.scatter(points[:, 0], points[:, 1], s=4, alpha=0.6)
    else:
        labels = ["(none)" if v is None else str(v) for v in labels]
        names, counts = np.unique(labels, return_counts=True)
        top = set(names[np.argsort(-counts)][:MAX_COLORS - 1])
        grouped = np.array([v if v in top else "other" for v in labels])
        palette = plt.get_cmap("tab20")
        for i, name in enumerate(sorted(set(grouped), key=lambda n: (n == "other", n))):
            mask = grouped == name
            color = "#bbbbbb" if name == "other" else palette(2 * i % 20)
            axes.scatter(
                points[mask, 0], points[mask, 1], s=4, alpha=0.6, color=color, label=f"{name} ({mask.sum()})"
            )
        axes.legend(title=color_by, fontsize=7, markerscale=3, loc="best")
    axes.set_xlabel("PC 1")
    axes.set_ylabel("PC 2")
    axes.set_title(title)
    return _png(figure)


def _png(figure) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()

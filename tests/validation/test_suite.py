"""The GX suite catches each failure class and passes a good batch."""

import numpy as np
import pyarrow as pa
import pytest

from storage.embeddings import chunk_schema
from storage.errors import ValidationFailed
from validation.gate import require
from validation.suite import Expectations, validate_batch

DIM = 8
COUNTS = {"docs_read": 4, "docs_new": 4, "docs_changed": 0, "docs_unchanged": 0, "docs_quarantined": 0}


def batch(vectors: np.ndarray, ids=None, model_key="k1") -> pa.RecordBatch:
    n, dim = vectors.shape
    ids = ids or [f"c{i}" for i in range(n)]
    return pa.RecordBatch.from_pydict({
        "chunk_id": ids, "doc_id": [f"d{i}" for i in range(n)], "chunk_index": [0] * n,
        "text": ["some text"] * n, "title": ["t"] * n,
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.astype(np.float32).reshape(-1)), dim),
        "model_key": [model_key] * n, "run_id": [1] * n,
    }, schema=chunk_schema(dim))


def good_vectors(n=4, dim=DIM):
    v = np.random.default_rng(0).normal(size=(n, dim))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def check(b, counts=COUNTS, reported=4, expect=Expectations(DIM, "k1")):
    return validate_batch([b], counts, reported, expect)


def test_a_good_batch_passes():
    report = check(batch(good_vectors()))
    assert report.passed, report.failures
    require(report)


def failed_expectations(report) -> set[str]:
    return {(o.expectation, o.column) for o in report.outcomes if not o.success}


def test_nan_vectors_fail():
    v = good_vectors()
    v[2, 3] = np.nan
    assert ("expect_column_values_to_be_in_set", "finite") in failed_expectations(check(batch(v)))


def test_wrong_dim_fails():
    report = check(batch(good_vectors(dim=6)))
    assert ("expect_column_values_to_be_between", "dim") in failed_expectations(report)


def test_duplicate_ids_fail():
    report = check(batch(good_vectors(), ids=["a", "b", "a", "c"]))
    assert ("expect_column_values_to_be_unique", "chunk_id") in failed_expectations(report)


def test_unnormalized_vectors_and_wrong_model_key_fail():
    report = check(batch(good_vectors() * 3, model_key="other"))
    assert {("expect_column_values_to_be_between", "norm"),
            ("expect_column_values_to_be_in_set", "model_key")} <= failed_expectations(report)


def test_counts_that_do_not_reconcile_fail():
    report = check(batch(good_vectors()), counts={**COUNTS, "docs_read": 5}, reported=3)
    assert len([o for o in report.outcomes if not o.success and o.expectation == "expect_column_pair_values_to_be_equal"]) == 2
    with pytest.raises(ValidationFailed, match="column_pair"):
        require(report)

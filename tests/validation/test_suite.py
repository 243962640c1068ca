"""The GX suite catches each failure class and passes a good batch."""

import numpy as np
import pyarrow as pa
import pytest

from embedline.storage.embeddings import chunk_schema
from embedline.errors import BadInput, ValidationFailed
from embedline.validation.gate import require
from embedline.validation.suite import Expectations, check_gates, validate_batch

DIM = 8
COUNTS = {"docs_read": 64, "docs_new": 64, "docs_changed": 0, "docs_unchanged": 0, "docs_quarantined": 0}


def batch(vectors: np.ndarray, ids=None, model_key="k1") -> pa.RecordBatch:
    n, dim = vectors.shape
    ids = ids or [f"c{i}" for i in range(n)]
    return pa.RecordBatch.from_pydict({
        "chunk_id": ids, "doc_id": [f"d{i}" for i in range(n)], "chunk_index": [0] * n,
        "text": ["some text"] * n, "title": ["t"] * n,
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.astype(np.float32).reshape(-1)), dim),
        "model_key": [model_key] * n, "run_id": [1] * n,
    }, schema=chunk_schema(dim))


def good_vectors(n=64, dim=DIM):
    v = np.random.default_rng(0).normal(size=(n, dim))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def check(b, counts=COUNTS, reported=64, expect=Expectations(DIM, "k1"), metrics=None):
    return validate_batch("test__space", [b], counts, reported, expect, metrics)


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
    report = check(batch(good_vectors(), ids=["a", "a"] + [f"c{i}" for i in range(62)]))
    assert ("expect_column_values_to_be_unique", "chunk_id") in failed_expectations(report)


def test_unnormalized_vectors_and_wrong_model_key_fail():
    report = check(batch(good_vectors() * 3, model_key="other"))
    assert {("expect_column_values_to_be_between", "norm"),
            ("expect_column_values_to_be_in_set", "model_key")} <= failed_expectations(report)


def test_counts_that_do_not_reconcile_fail():
    report = check(batch(good_vectors()), counts={**COUNTS, "docs_read": 65}, reported=63)
    assert (
        len(
            [
                o
                for o in report.outcomes
                if not o.success and o.expectation == "expect_column_pair_values_to_be_equal"
            ]
        )
        == 2
    )
    with pytest.raises(ValidationFailed, match="docs_read: be_equal"):
        require(report)


def test_collapsed_embeddings_fail_on_rank_and_duplicates():
    same = np.tile(good_vectors(1), (64, 1))
    report = check(batch(same))
    assert {("expect_column_values_to_be_between", "effective_rank"),
            ("expect_column_values_to_be_between", "near_duplicate_rate")} <= failed_expectations(report)
    assert report.metrics["effective_rank"] == pytest.approx(1.0, abs=0.01)


def test_drift_and_golden_recall_gates():
    report = check(batch(good_vectors()), metrics={"drift_min_cosine": 0.42, "golden_recall": 0.1})
    assert {("expect_column_values_to_be_between", "drift_min_cosine"),
            ("expect_column_values_to_be_between", "golden_recall")} <= failed_expectations(report)
    assert check(batch(good_vectors()), metrics={"drift_min_cosine": 1.0, "golden_recall": None}).passed


def test_reports_persist_as_data_docs(tmp_path):
    report = validate_batch("test__space", [batch(good_vectors())], COUNTS, 64, Expectations(DIM, "k1"),
                            report_dir=tmp_path / "gx")
    assert report.passed and report.docs_url.startswith("file://")
    assert list((tmp_path / "gx").rglob("validations/**/*.html"))


def test_metrics_have_the_documented_ends_of_their_scales():
    from embedline.validation.metrics import effective_rank, isotropy, near_duplicate_rate

    rng = np.random.default_rng(1)
    spread = rng.standard_normal((2000, 16))
    line = np.outer(rng.standard_normal(2000), np.ones(16))
    assert effective_rank(spread) > 14 and isotropy(spread) > 0.9
    assert isotropy(line) == pytest.approx(1 / 16, rel=1e-3)
    assert (
        near_duplicate_rate(spread) == 0.0
        and near_duplicate_rate(np.vstack([spread[:10], spread[:10]])) == 1.0
    )


@pytest.mark.parametrize("name,value", [
    ("min_golden_recall", "nan"), ("norm_tolerance", float("inf")), ("norm_tolerance", -1),
    ("min_golden_recall", 5), ("max_near_duplicate_rate", -0.1), ("min_drift_cosine", 1.5),
    ("min_effective_rank", "-inf"),
])
def test_a_gate_no_run_could_meet_or_every_run_would_miss_is_refused(name, value):
    """A stored NaN gate failed every later run of the corpus with a raw GX traceback."""
    with pytest.raises(BadInput, match=name):
        check_gates({name: value})


def test_each_gates_bounds_are_accepted():
    edges = {"norm_tolerance": 0, "min_effective_rank": 0, "max_near_duplicate_rate": 1,
             "min_drift_cosine": -1, "min_golden_recall": 1}
    assert check_gates(edges) == {name: float(v) for name, v in edges.items()}

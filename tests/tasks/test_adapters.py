"""Adapters recover a mapping between two spaces and are chosen by held-out retention."""

import numpy as np
import pytest

from tasks.adapters import Adapter, choose_adapter, fit_procrustes, fit_ridge, recall_at_k


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def spaces():
    """An 'old' 24-d space and a 'new' 32-d space related by an unknown linear map plus noise."""
    rng = np.random.default_rng(0)
    latent = rng.standard_normal((1200, 24))
    old = unit(latent)
    mix = rng.standard_normal((24, 32))
    new = unit(latent @ mix + 0.05 * rng.standard_normal((1200, 32)))
    queries_latent = latent[1000:] + 0.3 * rng.standard_normal((200, 24))  # noisy re-statements
    new_queries = unit(queries_latent @ mix)
    return old, new, new_queries


def test_procrustes_recovers_a_rotation_exactly():
    rng = np.random.default_rng(1)
    x = unit(rng.standard_normal((500, 16)))
    rotation, _ = np.linalg.qr(rng.standard_normal((16, 16)))
    adapter = fit_procrustes(x, x @ rotation)
    assert np.allclose(adapter(x), x @ rotation, atol=1e-5)


def test_adapter_recovers_most_of_the_recall_lost_to_a_model_change(spaces):
    old, new, new_queries = spaces
    relevant = np.arange(1000, 1200)
    choice = choose_adapter(new[:1000], old[:1000], new_queries, old, new, relevant)
    assert choice.recalls["raw_mismatch"] == 0.0  # dims differ: raw new vectors cannot query the old index
    assert choice.retention >= 0.9
    assert choice.recalls[choice.adapter.kind] == max(choice.recalls[k] for k in ("procrustes", "ridge", "residual_mlp"))


def test_adapters_round_trip_through_a_file(spaces, tmp_path):
    old, new, _ = spaces
    adapter = fit_ridge(new[:500], old[:500])
    loaded = Adapter.load(adapter.save(tmp_path / "a.npz"))
    assert loaded.kind == "ridge" and np.allclose(loaded(new[:10]), adapter(new[:10]))


def test_recall_at_k_counts_the_relevant_row():
    index = np.eye(4)
    assert recall_at_k(index, index, np.arange(4), k=1) == 1.0
    assert recall_at_k(index, index, np.array([1, 0, 3, 2]), k=1) == 0.0

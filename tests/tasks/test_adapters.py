"""Adapters recover a mapping between two spaces and are chosen by held-out retention."""

import numpy as np
import pytest

from embedline.tasks.adapters import (
    LINEAR, Adapter, Pairs, choose_adapter, fit_procrustes, fit_ridge, recall_at_k,
)


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def spaces():
    """An 'old' 24-d space and a 'new' 32-d space related by an unknown linear map plus noise; each
    document has a query (a noisy re-statement of it) in both spaces."""
    rng = np.random.default_rng(0)
    latent = rng.standard_normal((1200, 24))
    old = unit(latent)
    mix = rng.standard_normal((24, 32))
    new = unit(latent @ mix + 0.05 * rng.standard_normal((1200, 32)))
    queries_latent = latent + 0.3 * rng.standard_normal((1200, 24))
    return old, new, unit(queries_latent), unit(queries_latent @ mix)


def test_procrustes_recovers_a_rotation_exactly():
    rng = np.random.default_rng(1)
    x = unit(rng.standard_normal((500, 16)))
    rotation, _ = np.linalg.qr(rng.standard_normal((16, 16)))
    adapter = fit_procrustes(x, x @ rotation)
    assert np.allclose(adapter(x), x @ rotation, atol=1e-5)


def test_adapter_recovers_most_of_the_recall_lost_to_a_model_change(spaces):
    old, new, old_queries, new_queries = spaces
    pairs = Pairs(
        new[:1000], old[:1000], new_queries[:1000], old_queries[:1000], new_queries[1000:], old_queries[1000:]
    )
    choice = choose_adapter(pairs)
    assert choice.recalls["raw_mismatch"] == 0.0  # dims differ: raw new vectors cannot query the old index
    assert choice.retention >= 0.9
    ran_all = [k for k in ("procrustes", "ridge", "residual_mlp") if choice.recalls[f"{k}_folds"] == 5]
    assert choice.recalls[choice.adapter.kind] == max(choice.recalls[k] for k in ran_all)
    # the stored adapter is refitted on every pair: it maps held-in queries at least as well as the folds did
    assert (
        recall_at_k(choice.adapter(new_queries[:1000]), old[:1000], np.arange(1000))
        >= choice.recalls[choice.adapter.kind]
    )


def test_query_pairs_outside_the_sample_raise_retention():
    """40 documents in 96 dims fit a poor map; query-like texts of other documents (cheap: short) fix it."""
    rng = np.random.default_rng(0)
    latent = rng.standard_normal((1200, 96))
    mix = rng.standard_normal((96, 128))
    old, new = unit(latent), unit(latent @ mix + 0.05 * rng.standard_normal((1200, 128)))
    queries_latent = latent + 1.5 * rng.standard_normal((1200, 96))  # loose re-statements
    old_queries, new_queries = unit(queries_latent), unit(queries_latent @ mix)
    sample = (new[:40], old[:40], new_queries[:40], old_queries[:40])
    alone = choose_adapter(Pairs(*sample, np.zeros((0, 128)), np.zeros((0, 96))), k=1)
    helped = choose_adapter(Pairs(*sample, new_queries[40:], old_queries[40:]), k=1)
    assert helped.retention >= 0.95 and helped.retention > alone.retention + 0.05


def test_adapters_round_trip_through_a_file(spaces, tmp_path):
    old, new, _, _ = spaces
    adapter = fit_ridge(new[:500], old[:500])
    loaded = Adapter.load(adapter.save(tmp_path / "a.npz"))
    assert loaded.kind == "ridge" and np.allclose(loaded(new[:10]), adapter(new[:10]))


def test_recall_at_k_counts_the_relevant_row():
    index = np.eye(4)
    assert recall_at_k(index, index, np.arange(4), k=1) == 1.0
    assert recall_at_k(index, index, np.array([1, 0, 3, 2]), k=1) == 0.0


def test_a_fold_drops_the_passages_of_the_documents_it_holds_out(spaces):
    old, new, old_queries, new_queries = spaces
    owner = np.array([0, 0, 1, 2, -1, -1])
    pairs = Pairs(new[:3], old[:3], new_queries[:3], old_queries[:3], new_queries[3:5], old_queries[3:5],
                  new[10:16], old[10:16], owner)
    fit_x, fit_y = pairs.fit_rows(np.array([True, False, True]))
    # kept: documents 0 and 2, their queries, both extra texts, passages of 0 and 2 and the unowned ones
    expected = np.vstack([new[[0, 2]], new_queries[[0, 2]], new_queries[3:5], new[[10, 11, 13, 14, 15]]])
    assert np.array_equal(fit_x, expected) and len(fit_y) == len(fit_x)
    assert pairs.counts() == {"documents": 3, "queries": 3, "extra": 2, "passages": 6}
    back = pairs.reversed()
    assert np.array_equal(back.passages_x, old[10:16]) and np.array_equal(back.passage_owner, owner)


def test_passages_raise_retention_on_a_small_sample_and_the_choice_is_recorded():
    """40 documents in 96 dims fit a poor map; sentence-like pairs cut from them (cheap, in-domain) fix it."""
    rng = np.random.default_rng(0)
    latent = rng.standard_normal((40, 96))
    mix = rng.standard_normal((96, 128))
    old, new = unit(latent), unit(latent @ mix + 0.05 * rng.standard_normal((40, 128)))
    queries_latent = latent + 1.5 * rng.standard_normal((40, 96))
    old_queries, new_queries = unit(queries_latent), unit(queries_latent @ mix)
    owner = np.repeat(np.arange(40), 25)  # 25 "sentences" per document: its latent plus noise
    parts = latent[owner] + 1.5 * rng.standard_normal((1000, 96))
    empty = (np.zeros((0, 128)), np.zeros((0, 96)))
    alone = choose_adapter(Pairs(new, old, new_queries, old_queries, *empty), k=1)
    cut = (unit(parts @ mix), unit(parts), owner)
    helped = choose_adapter(Pairs(new, old, new_queries, old_queries, *empty, *cut), k=1)
    assert helped.retention >= 0.95 and helped.retention > alone.retention + 0.1
    recalls = helped.recalls
    assert (recalls["folds"], recalls["pairs_passages"], recalls["pairs_documents"]) == (5, 1000, 40)
    ran_all = [k for k in ("procrustes", "ridge", "residual_mlp") if recalls[f"{k}_folds"] == 5]
    assert recalls[helped.adapter.kind] == max(recalls[k] for k in ran_all)
    assert helped.retention == round(recalls[helped.adapter.kind] / recalls["full_reembed"], 4)


def test_pairs_refuse_passages_without_one_owner_each(spaces):
    old, new, old_queries, new_queries = spaces
    with pytest.raises(ValueError):
        Pairs(new[:3], old[:3], new_queries[:3], old_queries[:3], new_queries[3:5], old_queries[3:5],
              new[10:16], old[10:16], np.zeros(5, int))


def test_the_residual_mlp_races_and_only_a_family_that_ran_every_fold_is_chosen(spaces):
    """The MLP costs most of the choice: it leaves the race once it trails the best linear family."""
    old, new, old_queries, new_queries = spaces
    pairs = Pairs(new[:600], old[:600], new_queries[:600], old_queries[:600], new_queries[600:],
                  old_queries[600:])
    dropped = choose_adapter(pairs, margin=-1.0)  # it would have to lead by 100 points: out after fold 1
    kept = choose_adapter(pairs, margin=1.0)  # never trails by more than 100 points: runs every fold
    assert (dropped.recalls["residual_mlp_folds"], kept.recalls["residual_mlp_folds"]) == (1, 5)
    assert dropped.recalls["ridge_folds"] == dropped.recalls["procrustes_folds"] == 5
    assert dropped.adapter.kind in ("procrustes", "ridge") and not dropped.adapter.mlp
    linear = max(dropped.recalls["procrustes"], dropped.recalls["ridge"])
    assert dropped.retention == round(linear / dropped.recalls["full_reembed"], 4)
    for key in ("full_reembed", "procrustes", "ridge"):  # the linear families' figures do not depend on it
        assert dropped.recalls[key] == kept.recalls[key]


def test_the_linear_choice_that_serves_first_is_the_full_race_s_linear_result(spaces):
    """A refresh serves on the best linear family before the MLP races: it fits no MLP, and its
    figures are exactly the full race's for the families both ran (same folds, same closed forms)."""
    old, new, old_queries, new_queries = spaces
    pairs = Pairs(new[:600], old[:600], new_queries[:600], old_queries[:600], new_queries[600:],
                  old_queries[600:])
    first = choose_adapter(pairs, families=LINEAR)
    raced = choose_adapter(pairs, margin=1.0)
    assert "residual_mlp" not in first.recalls and "residual_mlp_folds" not in first.recalls
    assert not first.adapter.mlp
    for key in ("full_reembed", "procrustes", "ridge"):
        assert first.recalls[key] == raced.recalls[key]
    if raced.adapter.kind != "residual_mlp":
        assert raced.adapter.kind == first.adapter.kind
        assert np.array_equal(raced.adapter.weight, first.adapter.weight)

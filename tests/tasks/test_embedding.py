"""The engine's vectors equal a plain reference forward pass, in input order, within budget."""

import contextvars

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from embedline.tasks.embedding import Engine, choose_precision, plan_batches
from embedline.tasks.models import read_model_dir

TEXTS = [
    "tiling window manager",
    "A library for reading and writing Lance files, with vector search and versioning built in. " * 6,
    "x",
    "",
    "Secure shell server: remote login with encryption",
    "word " * 900,  # far over the model's max tokens
    "dynamic window manager for X",
]


@pytest.fixture(scope="module")
def spec(tiny_model_dir):
    return read_model_dir("tiny", tiny_model_dir)


def reference_vectors(path, texts, max_tokens):
    """One text at a time, no padding, fp32: the textbook mean-pool + L2 normalize."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    out = []
    with torch.no_grad():
        for text in texts:
            enc = tokenizer(text, truncation=True, max_length=max_tokens, return_tensors="pt")
            hidden = model(**enc).last_hidden_state[0]
            vec = hidden.mean(dim=0)
            out.append((vec / vec.norm()).numpy())
    return np.stack(out)


def test_vectors_match_a_plain_forward_pass_in_input_order(spec, tiny_model_dir):
    engine = Engine(spec, device="cpu", precision="fp32", token_budget=256, window=3)
    got = engine.embed(TEXTS)
    want = reference_vectors(str(tiny_model_dir), TEXTS, spec.max_tokens)
    cosine = (got * want).sum(axis=1)
    assert got.shape == (len(TEXTS), 32) and got.dtype == np.float32
    assert cosine.min() >= 0.9999, cosine
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_bf16_policy_stays_close_to_fp32(spec):
    fp32 = Engine(spec, device="cpu", precision="fp32").embed(TEXTS)
    bf16 = Engine(spec, device="cpu", precision="bf16").embed(TEXTS)
    assert (fp32 * bf16).sum(axis=1).min() > 0.99


def test_stream_yields_one_array_per_window_with_bounded_size(spec):
    engine = Engine(spec, device="cpu", precision="fp32", window=2)
    parts = list(engine.embed_stream(iter(TEXTS)))
    assert [len(p) for p in parts] == [2, 2, 2, 1]
    assert np.allclose(np.concatenate(parts), engine.embed(TEXTS), atol=1e-6)


def test_a_lazy_stream_is_drawn_on_the_helper_thread_in_the_callers_context(spec):
    marker = contextvars.ContextVar("marker", default="not the caller's")  # like embedline.connect's settings
    marker.set("the caller's")
    seen = []

    def texts():
        for text in TEXTS:
            seen.append(marker.get())
            yield text

    engine = Engine(spec, device="cpu", precision="fp32", window=2)
    parts = list(engine.embed_stream(texts()))
    assert seen == ["the caller's"] * len(TEXTS)
    assert np.allclose(np.concatenate(parts), engine.embed(TEXTS), atol=1e-6)


def test_an_error_in_the_stream_reaches_the_caller(spec):
    def texts():
        yield from TEXTS[:3]
        raise ValueError("a broken document")

    engine = Engine(spec, device="cpu", precision="fp32", window=2)
    with pytest.raises(ValueError, match="a broken document"):
        list(engine.embed_stream(texts()))


def test_over_long_input_is_truncated_to_max_tokens(spec):
    engine = Engine(spec, device="cpu", precision="fp32")
    ids = engine.tokenize(["word " * 900, ""])
    assert len(ids[0]) == spec.max_tokens and len(ids[1]) == 2  # [CLS] [SEP]


@pytest.mark.parametrize("budget", [64, 200, 1000])
def test_every_batch_respects_the_token_budget(budget):
    rng = np.random.default_rng(budget)
    lengths = rng.integers(1, 64, size=300).tolist()
    batches = plan_batches(lengths, budget)
    assert sorted(np.concatenate(batches).tolist()) == list(range(300))
    for rows in batches:
        assert len(rows) * max(lengths[r] for r in rows) <= budget


def test_a_row_longer_than_the_budget_gets_a_batch_of_its_own():
    assert [b.tolist() for b in plan_batches([500, 3, 4], 100)] == [[0], [2, 1]]


def test_precision_is_provenance_not_part_of_the_model_key(spec):
    """bf16 and fp32 vectors agree (the drift gate watches it): a mixed pool must not re-embed for it."""
    assert spec.with_precision("bf16").key() == spec.with_precision("fp32").key() == spec.key()
    engine = Engine(spec, device="cpu", precision="bf16")
    assert engine.spec.precision == "bf16" and engine.spec.key() == spec.key()
    assert spec.with_precision("bf16").to_json() != spec.to_json()  # still carried, to be recorded


def test_precision_override_and_auto_choice(monkeypatch):
    assert choose_precision("cpu", "bf16") == "bf16"
    monkeypatch.setenv("EMBEDLINE_PRECISION", "fp32")
    assert choose_precision("cpu") == "fp32"
    monkeypatch.delenv("EMBEDLINE_PRECISION")
    assert choose_precision("cpu") in ("fp32", "bf16")


def test_pooling_and_truncation_are_read_from_model_files(tiny_model_dir, tmp_path):
    import json
    import shutil

    copy = shutil.copytree(tiny_model_dir, tmp_path / "cls-model")
    (copy / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    spec = read_model_dir("clsmodel", copy, truncate_dim=16)
    assert (spec.pooling, spec.normalize, spec.max_tokens, spec.out_dim) == ("cls", True, 64, 16)
    vectors = Engine(spec, device="cpu", precision="fp32").embed(["a b c", "d e f"])
    assert vectors.shape == (2, 16) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    original = read_model_dir("other", tiny_model_dir)
    assert spec.fingerprint != original.fingerprint  # the pooling file is part of the identity
    assert spec.key() != original.key()

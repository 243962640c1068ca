"""Model fidelity: every module stack the engine accepts gives the vectors sentence-transformers'
own `encode` gives for the same folder; prompts apply per kind; any other stack is refused at
registration with one line naming the module.

The folders are written by sentence-transformers itself (`SentenceTransformer(modules=...).save`), so
they hold exactly the files a user's model would.
"""

import json
import shutil

import numpy as np
import pytest
import torch

from embedline.errors import BadInput
from embedline.tasks.embedding import Engine
from embedline.tasks.models import read_model_dir
from tests.conftest import run_cli

TEXTS = [
    "tiling window manager",
    "Secure shell server: remote login with encryption and port forwarding",
    "x",
    "",
    "A library for reading and writing Lance files, with vector search and versioning. " * 6,  # > 64 tokens
    "dynamic window manager for X",
]


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    """A random 2-layer BERT (hidden 32) with the bundled MiniLM tokenizer, as plain Hugging Face files."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from embedline.tasks.models import default_model_path

    target = tmp_path_factory.mktemp("bert")
    tokenizer = AutoTokenizer.from_pretrained(default_model_path(), local_files_only=True)
    torch.manual_seed(0)
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        vocab_size=tokenizer.vocab_size, max_position_embeddings=512)
    BertModel(config).save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def save_stack(bert_dir, target, pooling="mean", include_prompt=True, dense=(), normalize=True, prompts=None,
               extra=()):
    """Save a sentence-transformers model: Transformer → Pooling → Dense(out, activation, residual)* →
    Normalize?, then `extra` modules; returns (folder, the loaded SentenceTransformer)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer

    torch.manual_seed(1)
    modules = [Transformer(str(bert_dir), max_seq_length=64)]
    modules.append(Pooling(32, pooling_mode=pooling, include_prompt=include_prompt))
    width = modules[-1].get_embedding_dimension()
    for out, activation, residual in dense:
        modules.append(Dense(width, out, activation_function=activation, use_residual=residual))
        width = out
    if normalize:
        modules.append(Normalize())
    modules += list(extra)
    SentenceTransformer(modules=modules, prompts=prompts, device="cpu").save(str(target))
    return target, SentenceTransformer(str(target), device="cpu")


ATOL = 1e-4  # both run fp32: they agree to ~1e-7; different texts' vectors differ by ~0.5 here


def assert_same_vectors(got: np.ndarray, want: np.ndarray) -> None:
    """Same direction (cos ≥ 0.9999) and the same values: a scale slip (mean vs sqrt-len) fails too."""
    cosine = (got * want).sum(axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    assert got.shape == want.shape
    assert cosine.min() >= 0.9999, cosine
    np.testing.assert_allclose(got, want, atol=ATOL)


STACKS = {
    "mean-normalize": {},
    "cls": {"pooling": "cls", "normalize": False},
    "max": {"pooling": "max"},
    "lasttoken": {"pooling": "lasttoken", "normalize": False},
    "weightedmean": {"pooling": "weightedmean"},
    "mean-sqrt-len": {"pooling": "mean_sqrt_len_tokens", "normalize": False},
    "cls+mean-concatenated": {"pooling": ("cls", "mean")},
    "dense-tanh-normalize": {"dense": [(16, torch.nn.Tanh(), False)]},
    "two-dense-no-normalize": {"pooling": "cls", "normalize": False,
                               "dense": [(24, torch.nn.ReLU(), False), (8, torch.nn.Identity(), False)]},
    "dense-residual": {"pooling": "lasttoken", "dense": [(16, torch.nn.GELU(), True)]},
}


@pytest.mark.parametrize("name", list(STACKS))
def test_each_supported_stack_matches_sentence_transformers_encode(name, bert_dir, tmp_path):
    folder, st = save_stack(bert_dir, tmp_path / name, **STACKS[name])
    spec = read_model_dir("m", folder)
    got = Engine(spec, device="cpu", precision="fp32", token_budget=128, window=4).embed(TEXTS)
    want = st.encode(TEXTS, convert_to_numpy=True)
    assert spec.dim == want.shape[1] and spec.max_tokens == 64
    assert_same_vectors(got, want)


@pytest.mark.parametrize("include_prompt", [True, False])
def test_query_and_document_prompts_apply_where_each_is_embedded(include_prompt, bert_dir, tmp_path):
    prompts = {"query": "Represent this question for retrieving documents: ", "document": "passage: "}
    folder, st = save_stack(bert_dir, tmp_path / "prompted", pooling="mean", include_prompt=include_prompt,
                            prompts=prompts)
    spec = read_model_dir("m", folder)
    engine = Engine(spec, device="cpu", precision="fp32")
    queries, documents = engine.embed(TEXTS, kind="query"), engine.embed(TEXTS, kind="document")

    assert (spec.query_prompt, spec.document_prompt, spec.include_prompt) == (
        *prompts.values(),
        include_prompt,
    )
    assert_same_vectors(queries, st.encode_query(TEXTS, convert_to_numpy=True))
    assert_same_vectors(documents, st.encode(TEXTS, prompt_name="document", convert_to_numpy=True))
    assert np.abs(queries - documents).max() > 10 * ATOL  # each kind got its own prompt
    plain = read_model_dir("m", save_stack(bert_dir, tmp_path / "plain", include_prompt=include_prompt)[0])
    assert plain.key() != spec.key()  # a prompt is part of the model's identity


def test_a_passage_prompt_or_the_default_prompt_serves_documents(bert_dir, tmp_path):
    folder, _ = save_stack(bert_dir, tmp_path / "e5", prompts={"query": "query: ", "passage": "passage: "})
    config_file = folder / "config_sentence_transformers.json"
    config = json.loads(config_file.read_text())
    config["prompts"] = {"query": "query: ", "passage": "passage: "}  # as E5-style folders ship it
    config_file.write_text(json.dumps(config))
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(folder), device="cpu")
    engine = Engine(read_model_dir("m", folder), device="cpu", precision="fp32")
    assert_same_vectors(engine.embed(TEXTS, kind="document"), st.encode(TEXTS, prompt_name="passage"))

    config["prompts"], config["default_prompt_name"] = {"retrieval": "Represent this: "}, "retrieval"
    config_file.write_text(json.dumps(config))
    spec = read_model_dir("m", folder)
    assert (spec.query_prompt, spec.document_prompt) == ("Represent this: ", "Represent this: ")


def test_stack_changes_change_the_model_key(bert_dir, tmp_path):
    folder, _ = save_stack(bert_dir, tmp_path / "base", dense=[(16, torch.nn.Tanh(), False)])
    base = read_model_dir("m", folder)
    retrained = shutil.copytree(folder, tmp_path / "retrained")
    from safetensors.torch import load_file, save_file

    weights = load_file(str(retrained / "2_Dense" / "model.safetensors"))
    save_file({k: v + 0.01 for k, v in weights.items()}, str(retrained / "2_Dense" / "model.safetensors"))
    other_pooling = read_model_dir("m", save_stack(bert_dir, tmp_path / "cls", pooling="cls",
                                                   dense=[(16, torch.nn.Tanh(), False)])[0])

    assert base.dense == ("2_Dense",) and base.dim == 16
    assert read_model_dir("m", retrained).fingerprint != base.fingerprint  # the Dense weights are identity
    assert len({base.key(), read_model_dir("m", retrained).key(), other_pooling.key()}) == 3


def test_an_unsupported_module_is_refused_at_models_add_with_one_line_naming_it(bert_dir, tmp_path):
    from sentence_transformers.sentence_transformer.modules import LayerNorm

    folder, _ = save_stack(bert_dir, tmp_path / "layernorm", normalize=False, extra=[LayerNorm(32)])
    with pytest.raises(BadInput, match="module LayerNorm \\(2_LayerNorm\\) is not supported"):
        read_model_dir("m", folder)

    result = run_cli("models", "add", "odd", str(folder), home=tmp_path / "home")
    assert result.returncode == BadInput.exit_code
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "LayerNorm" in lines[0], result.stderr


def test_a_dense_activation_outside_torch_nn_is_refused(bert_dir, tmp_path):
    folder, _ = save_stack(bert_dir, tmp_path / "custom", dense=[(16, torch.nn.Tanh(), False)])
    config_file = folder / "2_Dense" / "config.json"
    config_file.write_text(
        json.dumps({**json.loads(config_file.read_text()), "activation_function": "my.Swish"})
    )
    with pytest.raises(
        BadInput, match="module Dense \\(2_Dense\\) is not supported: its activation 'my.Swish'"
    ):
        read_model_dir("m", folder)


def test_a_spec_0_1_0_registered_keeps_its_vectors_and_says_how_to_move_to_the_full_stack(bert_dir, tmp_path,
                                                                                          caplog):
    import json
    import logging

    from embedline.storage import catalog
    from embedline.tasks.models import resolve_model, stack_ignored
    from embedline.workspace import Workspace

    ws = Workspace.from_env(tmp_path / "home").ensure()
    folder, _ = save_stack(bert_dir, tmp_path / "prompted", prompts={"query": "q: ", "document": "d: "})
    legacy = {k: v for k, v in json.loads(read_model_dir("m", folder).to_json()).items()  # what 0.1.0 stored
              if k not in ("include_prompt", "dense", "query_prompt", "document_prompt")}
    catalog.register_model(ws, "m", json.dumps(legacy))

    with caplog.at_level(logging.WARNING, logger="embedline.models"):
        spec = resolve_model(ws, "m")
    assert (spec.document_prompt, spec.query_prompt) == ("", "")  # the space's vectors stay one kind
    assert json.loads(catalog.get_model(ws, "m")["spec"]) == legacy  # a read never rewrites the catalog
    assert stack_ignored(spec) and "embedline models add m_st" in caplog.text
    plain, _ = save_stack(bert_dir, tmp_path / "plain")
    assert not stack_ignored(read_model_dir("p", plain))  # nothing ignored: nothing to say


def test_vectors_0_1_0_keyed_still_count_as_made_by_the_spec_it_registered(tiny_model_dir):
    """0.1.0 keyed precision too: a space keeps such keys until its next run, and serves meanwhile."""
    import hashlib
    from dataclasses import asdict, replace

    from embedline.tasks.models import STACK_FIELDS

    spec = read_model_dir("m", tiny_model_dir)
    fields = {k: v for k, v in asdict(spec).items() if k not in ("name", "path", *STACK_FIELDS)}
    blob = json.dumps({**fields, "precision": "bf16"}, sort_keys=True).encode()  # 0.1.0's key() on a GPU
    legacy = hashlib.sha256(blob).hexdigest()[:16]
    assert spec.made(legacy) and spec.made(spec.key()) and spec.made(None)
    assert not replace(spec, fingerprint="0" * 16).made(legacy)  # other weights
    assert not replace(spec, query_prompt="q: ").made(legacy)  # a stack 0.1.0 could not have run

"""Chunks cut on token boundaries, overlap, keep original text and have stable ids."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from embedline.errors import BadInput
from embedline.tasks.chunking import ChunkParams, chunk_documents, token_offsets
from embedline.tasks.documents import Document
from embedline.tasks.models import default_model_path


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(default_model_path(), local_files_only=True)


LONG = " ".join(f"sentence{i} about packages and window managers." for i in range(60))


def test_short_document_is_one_chunk_with_its_whole_text(tokenizer):
    chunks = list(chunk_documents([Document("a", "  a short text \n")], tokenizer, ChunkParams(32, 4)))
    assert [(c.doc_id, c.chunk_index, c.text) for c in chunks] == [("a", 0, "a short text")]


def test_long_document_splits_into_overlapping_windows_within_the_token_limit(tokenizer):
    params = ChunkParams(max_tokens=40, overlap=8)
    chunks = list(chunk_documents([Document("d", LONG)], tokenizer, params))
    assert len(chunks) > 5
    assert [c.chunk_index for c in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        assert chunk.text in LONG
        assert len(tokenizer(chunk.text, add_special_tokens=False)["input_ids"]) <= params.max_tokens + 1
    first, second = chunks[0].text, chunks[1].text
    assert first[-15:] in second  # the overlap repeats the end of one chunk at the start of the next
    assert LONG.startswith(first) and LONG.endswith(chunks[-1].text)


TEXTS = st.text(alphabet=st.characters(codec="utf-8"), max_size=400) | st.just(LONG)


@settings(max_examples=60, deadline=None)
@given(st.lists(TEXTS, min_size=1, max_size=6))
def test_offsets_from_the_rust_core_are_the_wrappers_even_after_a_truncating_call(tokenizer, texts):
    tokenizer(["x " * 600], truncation=True, max_length=16)  # the engine's call leaves truncation on
    ours = token_offsets(texts, tokenizer)
    assert len(token_offsets([LONG], tokenizer)[0]) > 16  # never truncated
    wrapper = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    assert ours == wrapper["offset_mapping"]


@pytest.mark.parametrize("split", [False, True])
def test_offsets_treat_special_token_text_as_the_tokenizer_says(split):
    tokenizer = AutoTokenizer.from_pretrained(default_model_path(), local_files_only=True,
                                              split_special_tokens=split)
    texts = ["a [SEP] b [CLS][PAD] c", "[UNK]"]
    wrapper = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    assert token_offsets(texts, tokenizer) == wrapper
    assert (len(wrapper[1]) > 1) == split  # "[UNK]" is one token unless special text is split


def test_chunk_ids_are_stable_and_depend_on_params(tokenizer):
    doc = Document("d", LONG)
    one = [c.chunk_id for c in chunk_documents([doc], tokenizer, ChunkParams(40, 8))]
    again = [c.chunk_id for c in chunk_documents([doc], tokenizer, ChunkParams(40, 8))]
    other = [c.chunk_id for c in chunk_documents([doc], tokenizer, ChunkParams(50, 8))]
    assert one == again and len(set(one)) == len(one)
    assert not set(one) & set(other)


def test_documents_keep_their_order_across_windows(tokenizer):
    docs = [Document(f"d{i}", f"text {i}") for i in range(7)]
    chunks = list(chunk_documents(docs, tokenizer, ChunkParams(16, 2), window=3))
    assert [c.doc_id for c in chunks] == [d.doc_id for d in docs]


@pytest.mark.parametrize("max_tokens, overlap", [(4, 0), (32, 16), (32, -1)])
def test_bad_params_are_refused(max_tokens, overlap):
    with pytest.raises(BadInput):
        ChunkParams(max_tokens, overlap)


def test_chunks_leave_room_for_the_document_prompt(tiny_model_dir):
    from types import SimpleNamespace

    from transformers import AutoTokenizer

    from embedline.tasks.chunking import params_for

    prompt = "search_document: "
    prompted = SimpleNamespace(max_tokens=64, path=str(tiny_model_dir), document_prompt=prompt)
    plain = SimpleNamespace(max_tokens=64, path=str(tiny_model_dir), document_prompt="")
    tokens = len(AutoTokenizer.from_pretrained(tiny_model_dir)(prompt, add_special_tokens=False)["input_ids"])
    assert tokens > 0
    assert params_for(plain).max_tokens == 62  # [CLS] and [SEP]
    assert params_for(prompted).max_tokens == 62 - tokens
    assert params_for(prompted).key() != params_for(plain).key()  # a prompt change re-chunks

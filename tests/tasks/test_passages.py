"""Sentences cut from chunks: every one kept with its document, deterministic, spread under a cap."""

import pytest

from embedline.tasks.passages import (QUERY_WORDS, cut_passages, general_passages, passage_texts,
                                      split_sentences)

CHUNKS = [
    "Tiling window manager for X. It arranges windows in a grid!\n\nConfigured in a plain text file: "
    "no menus at all. Short one.",
    "A fast JSON parser written in C. Does it stream? Yes, it streams large inputs in constant memory.",
    "Library for parsing command lines.\n * supports sub commands and options\n * generates help text",
]


def test_sentences_end_at_stops_blank_lines_and_list_items():
    assert split_sentences(CHUNKS[0]) == ["Tiling window manager for X.", "It arranges windows in a grid!",
                                          "Configured in a plain text file:", "no menus at all."]
    assert split_sentences(CHUNKS[2]) == ["Library for parsing command lines.",
                                          "* supports sub commands and options", "* generates help text"]


def test_long_sentences_are_cut_into_windows_without_losing_a_word():
    words = [f"w{i}" for i in range(110)]
    windows = split_sentences(" ".join(words) + ".", max_words=48)
    assert [len(w.split()) for w in windows] == [48, 48, 14]
    assert " ".join(windows).split() == words[:-1] + ["w109."]


def test_every_sentence_of_every_chunk_becomes_one_passage_with_its_owner():
    passages = cut_passages(CHUNKS, owners=[0, 1, -1], words=None)
    expected = [(owner, s) for text, owner in zip(CHUNKS, [0, 1, -1]) for s in split_sentences(text)]
    assert [(p.owner, p.text) for p in passages] == expected
    assert len(passages) == 4 + 2 + 3  # "Short one." and "Does it stream?" have fewer than 4 words


def test_passages_are_cut_to_a_query_s_length_and_repeats_after_the_cut_kept_once():
    long = "Yes, it streams large inputs in constant memory and never blocks."
    texts = [long, "Yes, it streams large inputs in constant memory too. Short words but enough."]
    passages = cut_passages(texts, owners=[0, 0])
    assert [(p.owner, p.text) for p in passages] == [
        (0, "Yes, it streams large inputs in constant memory"), (0, "Short words but enough.")]
    shared = cut_passages(texts, owners=[0, 1])  # the same words once cut: two owners share them
    assert [(p.owner, p.text) for p in shared] == [(1, "Short words but enough.")]
    assert all(len(p.text.split()) <= QUERY_WORDS for p in cut_passages(CHUNKS, owners=[0, 1, 2]))
    assert passage_texts(long, words=None) == [long] and passage_texts(long, words=3) == ["Yes, it streams"]
    assert all(len(t.split()) <= QUERY_WORDS for t in general_passages(300))


def test_repeated_sentences_are_kept_once():
    texts = ["Same words in this sentence. Other words here now.", "Same words in this sentence."]
    passages = cut_passages(texts, owners=[3, 3])  # two chunks of one document
    assert [(p.owner, p.text) for p in passages] == [(3, "Same words in this sentence."),
                                                     (3, "Other words here now.")]
    outside = cut_passages(texts, owners=[-1, -1])  # documents outside the sample: never held out
    assert [p.text for p in outside] == ["Same words in this sentence.", "Other words here now."]


def test_a_sentence_two_owners_share_is_left_out_so_no_fold_fits_on_a_held_out_document_s_words():
    texts = ["Same words in this sentence. Other words here now.", "Same words in this sentence."]
    for owners in ([3, 4], [-1, 4], [4, -1]):
        passages = cut_passages(texts, owners=owners)
        assert [(p.owner, p.text) for p in passages] == [(owners[0], "Other words here now.")]


def test_a_cap_takes_first_sentences_of_every_chunk_before_second_ones_and_is_deterministic():
    capped = cut_passages(CHUNKS, owners=[0, 1, 2], limit=4, seed=7)
    assert len(capped) == 4 and capped == cut_passages(CHUNKS, owners=[0, 1, 2], limit=4, seed=7)
    firsts = {split_sentences(text)[0] for text in CHUNKS}
    assert {p.text for p in capped[:3]} == firsts and {p.owner for p in capped[:3]} == {0, 1, 2}
    everything = cut_passages(CHUNKS, owners=[0, 1, 2], limit=100)
    assert sorted((p.owner, p.text) for p in everything) == sorted(
        (p.owner, p.text) for p in cut_passages(CHUNKS, owners=[0, 1, 2]))


def test_owners_must_match_texts():
    with pytest.raises(ValueError):
        cut_passages(CHUNKS, owners=[0])


def test_general_text_is_shipped_and_capped():
    texts = general_passages(500)
    assert len(texts) == 500 and len(set(texts)) == 500 and texts == general_passages(500)
    assert general_passages(0) == [] and general_passages(-3) == []
    assert all(len(t.split()) >= 3 for t in texts)

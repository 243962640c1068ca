"""Short query-like texts cut from a corpus's own chunks, to fit adapters on in-domain pairs.

An adapter maps queries, and queries are short: sentences of the corpus's chunks are short texts of
its own domain that both models embed cheaply. A small corpus has few documents and titles, but each of
its chunks holds several sentences, so cutting them multiplies the pairs an adapter is fitted on. Each
passage is cut to a query's length (`QUERY_WORDS`): the new model's forward pass costs per token, and on
MiniLM → MPNet (bench/model_change.py) passages of 8 words kept the retention of whole sentences at
~20% fewer tokens for the whole fit.
"""

import re
from dataclasses import dataclass

# A sentence ends at . ! ? (or a colon) followed by white space; blank lines and list items end one too.
_BREAK = re.compile(r"(?<=[.!?:])\s+|\n\s*\n|\n\s*(?=[-*•] |\d+[.)] |>>> )")
_WORD = re.compile(r"\S+")
QUERY_WORDS = 8  # a passage's length in words: what a search query is, not what a document is


@dataclass(frozen=True)
class Passage:
    owner: int  # the index of the chunk's document in the caller's list, or -1 for text of no document
    text: str


def split_sentences(text: str, min_words: int = 4, max_words: int = 48) -> list[str]:
    """Sentences of `text` in order, white space collapsed; shorter than `min_words` dropped, longer than
    `max_words` cut into consecutive windows of at most `max_words` words."""
    sentences = []
    for piece in _BREAK.split(text):
        words = _WORD.findall(piece)
        for start in range(0, len(words), max_words):
            window = words[start:start + max_words]
            if len(window) >= min_words:
                sentences.append(" ".join(window))
    return sentences


def passage_texts(text: str, words: int | None = QUERY_WORDS) -> list[str]:
    """The passages one text gives: its sentences (windows of long ones), each cut to its first `words`."""
    return [s if words is None else " ".join(s.split()[:words]) for s in split_sentences(text)]


def cut_passages(texts: list[str], owners: list[int], limit: int | None = None, seed: int = 0,
                 words: int | None = QUERY_WORDS) -> list[Passage]:
    """The passages of every text (a chunk), each tagged with its document, repeated ones once.

    A passage cut from texts of different owners (boilerplate several documents share) is left out: the
    cross-validation drops a held-out document's passages from the fit by owner, and one that another
    owner also held would leak the held-out document's own words into the fit.

    With `limit`, a seeded spread of at most `limit` of them: every text gives its first sentence before
    any gives a second, so a cap keeps as many documents as it can. The order is deterministic.
    """
    if len(texts) != len(owners):
        raise ValueError(f"{len(texts)} texts but {len(owners)} owners")
    import numpy as np

    cut = [list(dict.fromkeys(passage_texts(text, words))) for text in texts]
    owners_of: dict[str, set[int]] = {}
    for passages, owner in zip(cut, owners):
        for passage in passages:
            owners_of.setdefault(passage, set()).add(owner)
    seen: set[str] = set()
    per_text = []
    for passages, owner in zip(cut, owners):
        kept = [s for s in passages if s not in seen and len(owners_of[s]) == 1]
        seen.update(kept)
        per_text.append([Passage(owner, s) for s in kept])
    if limit is None:
        return [p for passages in per_text for p in passages]
    order = np.random.default_rng(seed).permutation(len(per_text))
    chosen: list[Passage] = []
    for rank in range(max((len(p) for p in per_text), default=0)):
        for i in order:
            if rank < len(per_text[i]):
                chosen.append(per_text[i][rank])
                if len(chosen) == limit:
                    return chosen
    return chosen


GENERAL_TEXT = "debian-2k.jsonl.gz"  # package data: 2,000 Debian package synopses and descriptions


def general_passages(limit: int, words: int | None = QUERY_WORDS) -> list[str]:
    """Up to `limit` short texts of general prose shipped with the package (synopses, then sentences of
    descriptions, in file order, each cut to `words`): a fallback for a corpus too small to give an
    adapter enough pairs."""
    if limit <= 0:
        return []
    import gzip
    import json
    from importlib.resources import files

    shipped = files("embedline").joinpath("data", GENERAL_TEXT)
    with gzip.open(shipped.open("rb"), "rt", encoding="utf-8") as fh:
        records = [json.loads(line) for line in fh]
    texts = [r["title"] for r in records if len(r.get("title", "").split()) >= 3]
    texts = [t if words is None else " ".join(t.split()[:words]) for t in texts]
    texts += [s for r in records for s in passage_texts(r.get("text", ""), words)]
    return list(dict.fromkeys(texts))[:limit]

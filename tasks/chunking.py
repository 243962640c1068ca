"""Token-aware chunking with overlap and stable chunk ids.

Chunks are cut on token boundaries of the embedding model's own tokenizer, so a chunk never gets
truncated at embed time, and mapped back to character offsets so the stored text is the original.
"""

import hashlib
import json
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass

from tokenizers import Tokenizer

from embedline.errors import BadInput
from embedline.tasks.documents import Chunk, Document


@dataclass(frozen=True)
class ChunkParams:
    max_tokens: int = 254  # MiniLM's 256 less [CLS] and [SEP]
    overlap: int = 32

    def __post_init__(self):
        if self.max_tokens < 8 or not 0 <= self.overlap < self.max_tokens // 2:
            raise BadInput(
                f"chunking max_tokens={self.max_tokens}, overlap={self.overlap}: "
                "need max_tokens ≥ 8 and 0 ≤ overlap < max_tokens/2"
            )

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]

    @classmethod
    def for_model(
        cls, model_max_tokens: int, overlap: int = 32, max_tokens: int | None = None
    ) -> "ChunkParams":
        """Chunks that fit the model once special tokens are added (`max_tokens` may ask for fewer)."""
        size = min(max_tokens or model_max_tokens - 2, model_max_tokens - 2)
        return cls(max_tokens=size, overlap=min(overlap, size // 2 - 1))


def params_for(spec, overlap: int = 32, max_tokens: int | None = None) -> ChunkParams:
    """Chunks that fit `spec` (a ModelSpec) once its document prompt and special tokens are added, so
    the engine never truncates a chunk."""
    budget = spec.max_tokens - prompt_tokens(spec.path, spec.document_prompt)
    return ChunkParams.for_model(budget, overlap, max_tokens)


def prompt_tokens(model_path: str, prompt: str) -> int:
    """How many tokens `prompt` adds in front of a text (0 without one; loads only the tokenizer)."""
    if not prompt:
        return 0
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
    return len(tokenizer(prompt, add_special_tokens=False)["input_ids"])


def chunk_id(doc_id: str, index: int, text: str, params_key: str) -> str:
    """Stable: the same text of the same document under the same params keeps its id."""
    blob = json.dumps([doc_id, index, text, params_key]).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def chunk_documents(
    docs: Iterable[Document], tokenizer, params: ChunkParams, window: int = 512
) -> Iterator[Chunk]:
    """Split each document's text into overlapping token windows, in document order."""
    pending: list[Document] = []
    for doc in docs:
        pending.append(doc)
        if len(pending) >= window:
            yield from _chunk_window(pending, tokenizer, params)
            pending = []
    if pending:
        yield from _chunk_window(pending, tokenizer, params)


_RUST_CORES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tokenizer → its copy, or None


def token_offsets(texts: list[str], tokenizer) -> list[list[tuple[int, int]]]:
    """Each text's token (start, end) character offsets, without special tokens, never truncated.

    Read straight from a copy of the tokenizer's Rust core where that is all the tokenizer does:
    transformers' wrapper turns every field of every encoding into Python lists (a third of chunking's
    time), and the engine's calls leave truncation switched on in the shared core. The offsets are the
    wrapper's (tested); a tokenizer that adds Python steps, or whose core cannot be copied, goes
    through the wrapper."""
    core = _rust_core(tokenizer)
    if core is None:
        return tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True,
                         return_attention_mask=False, return_token_type_ids=False,
                         verbose=False)["offset_mapping"]  # long documents are why we chunk
    return [encoding.offsets for encoding in core.encode_batch(texts, add_special_tokens=False)]


def _rust_core(tokenizer):
    """The chunker's own copy of a plain fast tokenizer's core (no truncation, no padding), or None."""
    if tokenizer not in _RUST_CORES:
        from transformers.tokenization_utils_tokenizers import TokenizersBackend

        core = None
        plain = getattr(type(tokenizer), "_encode_plus", None) is TokenizersBackend._encode_plus
        if plain:
            try:
                core = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
            except Exception:  # noqa: BLE001 - a custom (Python) component cannot be serialized
                core = None
        if core is not None:
            core.no_truncation()
            core.no_padding()
            core.encode_special_tokens = bool(getattr(tokenizer, "split_special_tokens", False))
        _RUST_CORES[tokenizer] = core
    return _RUST_CORES[tokenizer]


def _chunk_window(docs: list[Document], tokenizer, params: ChunkParams) -> Iterator[Chunk]:
    params_key = params.key()
    step = params.max_tokens - params.overlap
    for doc, offsets in zip(docs, token_offsets([d.text for d in docs], tokenizer)):
        spans = [(0, len(doc.text))] if len(offsets) <= params.max_tokens else [
            (offsets[start][0], offsets[min(start + params.max_tokens, len(offsets)) - 1][1])
            for start in range(0, max(len(offsets) - params.overlap, 1), step)
        ]
        for index, (begin, end) in enumerate(spans):
            text = doc.text[begin:end].strip()
            yield Chunk(chunk_id(doc.doc_id, index, text, params_key), doc.doc_id, index, text)

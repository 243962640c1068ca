"""The embedding engine: tokenize → token-budget batches → forward → pool → Dense → normalize.

Why not `SentenceTransformer.encode`: it batches by row count, so one long text pads 31 short ones,
and it runs fp32 on CPUs that have bf16 units. Here batches are filled to a token budget after
sorting by length, each batch is padded only to its own longest row, the forward pass runs under the
device's precision policy, and making and tokenizing the next window overlap the current forward
pass. On CPU the forward pass runs on OpenVINO where it is installed (`runtime_openvino`;
`$EMBEDLINE_RUNTIME` overrides), else on torch; the runtime, like the precision, is provenance and not
part of the model key. The head after the forward pass (pooling mode, Dense layers, Normalize) and the
query / document prompts are the model's own, read from its sentence-transformers files (see
`model_stack` and `head`).
"""

import contextvars
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np

from embedline.errors import BadInput
from embedline.settings import load
from embedline.workspace import Workspace
from embedline.tasks.head import load_dense, pool
from embedline.tasks.models import ModelSpec
from embedline.tasks.runtime_openvino import OpenVinoForward, Tuning, import_openvino, say_once

RUNTIMES = ("torch", "openvino")

PRECISIONS = ("fp32", "bf16", "fp16")
# Tokens per forward pass. On CPU small batches stay in cache (2,048 ran ~1.7x faster than 8,192 on
# our 2-core AVX2 machines, see bench/embed_throughput.py); a GPU wants big ones to fill its SMs.
# OpenVINO's streams each take a batch: 1,024 tokens ran ~1.15x 2,048 there (bench/embed_throughput.py).
TOKEN_BUDGET = {"cpu": 2048, "openvino": 1024, "cuda": 32768}


def cpu_has_bf16() -> bool:
    """True where the CPU has native bf16 matrix units (AVX-512 BF16 or AMX)."""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((line for line in fh if line.startswith("flags")), "")
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def choose_precision(device: str, requested: str | None = None) -> str:
    """The precision policy: bf16 where the hardware has it, fp16 on older GPUs, else fp32.

    `requested` (or `$EMBEDLINE_PRECISION`) overrides; "auto" means choose.
    """
    requested = requested or load().precision
    if requested != "auto":
        if requested not in PRECISIONS:
            raise BadInput(f"precision {requested!r}: use one of auto, {', '.join(PRECISIONS)}")
        return requested
    if device.startswith("cuda"):
        import torch

        return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"  # native only
    return "bf16" if cpu_has_bf16() else "fp32"


def choose_runtime(device: str, requested: str | None = None) -> str:
    """OpenVINO on CPU where it is installed, else torch; `requested` (or `$EMBEDLINE_RUNTIME`) overrides.

    A request for OpenVINO where it cannot run is answered with torch (said once, by the engine)."""
    requested = requested or load().runtime
    if requested not in ("auto", *RUNTIMES):
        raise BadInput(f"runtime {requested!r}: use one of auto, {', '.join(RUNTIMES)}")
    if requested == "torch" or not device.startswith("cpu"):
        return "torch"
    if requested == "auto" and import_openvino() is None:
        say_once("openvino is not installed (pip install 'embedline[openvino]'): embedding with torch",
                 level="info")
        return "torch"
    return "openvino"


def default_cache_dir() -> Path:
    """Converted models of the workspace `$EMBEDLINE_HOME` names: `<home>/cache/openvino`."""
    return Workspace.from_env().openvino_cache_dir


def choose_device(requested: str | None = None) -> str:
    """`cuda` when a GPU is visible (honours CUDA_VISIBLE_DEVICES), else `cpu`."""
    requested = requested or load().device
    if requested != "auto":
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class Batch:
    """One padded forward pass: rows are positions within the current window."""

    rows: np.ndarray
    input_ids: np.ndarray
    attention_mask: np.ndarray


def plan_batches(lengths: list[int], token_budget: int) -> list[np.ndarray]:
    """Group row indices, longest first, so that rows × longest row ≤ token_budget per batch."""
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    batches, start = [], 0
    while start < len(order):
        longest = max(lengths[order[start]], 1)
        size = max(1, token_budget // longest)
        batches.append(order[start : start + size])
        start += size
    return batches


def pad_batch(token_ids: list[list[int]], rows: np.ndarray, pad_id: int) -> Batch:
    width = max(len(token_ids[r]) for r in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        seq = token_ids[r]
        ids[i, : len(seq)] = seq
        mask[i, : len(seq)] = 1
    return Batch(rows=rows, input_ids=ids, attention_mask=mask)


class Engine:
    """A loaded model plus its precision policy. One per process (one per GPU)."""

    def __init__(
        self,
        spec: ModelSpec,
        device: str | None = None,
        precision: str | None = None,
        token_budget: int | None = None,
        window: int = 2048,
        runtime: str | None = None,
        cache_dir: Path | None = None,
        tuning: Tuning | None = None,
    ):
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # no "Loading weights" bars in CLI output and flow logs

        self.device = choose_device(device)
        self.spec = spec.with_precision(choose_precision(self.device, precision or _spec_precision(spec)))
        self.window = window
        self.tokens_embedded = 0
        self.tokenizer = AutoTokenizer.from_pretrained(spec.path, local_files_only=True)
        self.model = _load_model(AutoModel, spec.path, torch).to(self.device).eval()
        self.dense = [load_dense(torch, spec.path, folder, self.device) for folder in spec.dense]
        self._torch = torch
        self._prompt_tokens: dict[str, int] = {}
        wants_openvino = choose_runtime(self.device, runtime) == "openvino"
        self.openvino = self._start_openvino(cache_dir, tuning) if wants_openvino else None
        self.runtime = "openvino" if self.openvino else "torch"
        if self.openvino and self.openvino.precision != self.spec.precision:  # provenance: what really runs
            self.spec = self.spec.with_precision(self.openvino.precision)
        budget = "openvino" if self.openvino else "cuda" if self.device.startswith("cuda") else "cpu"
        self.token_budget = token_budget or TOKEN_BUDGET[budget]

    # -- public -------------------------------------------------------------------------------
    def embed(self, texts: list[str], kind: str = "document") -> np.ndarray:
        """Vectors for `texts`, in order, as float32 (n, out_dim). `kind` ("document" or "query")
        picks the model's prompt: chunks are documents, search texts are queries."""
        parts = list(self.embed_stream(texts, kind))
        return np.concatenate(parts) if parts else np.zeros((0, self.spec.out_dim), np.float32)

    def embed_stream(self, texts: Iterable[str], kind: str = "document") -> Iterator[np.ndarray]:
        """Yield one float32 array per window of `self.window` texts, input order kept.

        Memory is bounded by one window. A helper thread draws the next window from `texts` and
        tokenizes it while the current one runs through the model: where `texts` is a lazy stream
        (the ingest's chunker), producing it overlaps the forward pass too. `texts` is only ever
        advanced by that one thread, one window at a time, in the caller's context (its settings).
        """
        skip = self.prompt_tokens(kind)
        windows = _windows(iter(texts), self.window)
        context = contextvars.copy_context()  # `embedline.connect(...)`'s settings, which `texts` reads

        def next_window() -> list[list[int]] | None:
            window = next(windows, None)
            return None if window is None else self.tokenize(window, kind)

        with ThreadPoolExecutor(max_workers=1) as executor:
            pending = executor.submit(context.run, next_window)
            while (token_ids := pending.result()) is not None:
                pending = executor.submit(context.run, next_window)
                yield self._embed_tokens(token_ids, skip)

    def tokenize(self, texts: list[str], kind: str = "document") -> list[list[int]]:
        """Token ids per text (after the model's prompt for `kind`), truncated to its max tokens, unpadded."""
        prompt = self.spec.prompt(kind)
        encoded = self.tokenizer(
            [prompt + (t if isinstance(t, str) else "") for t in texts],
            truncation=True,
            max_length=self.spec.max_tokens,
            padding=False,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        return encoded["input_ids"]

    def prompt_tokens(self, kind: str) -> int:
        """Leading tokens that pooling leaves out: the prompt's ([CLS] included, a trailing [SEP] not),
        when the model's Pooling says `include_prompt: false`; else 0 (sentence-transformers' count)."""
        prompt = self.spec.prompt(kind)
        if self.spec.include_prompt or not prompt:
            return 0
        if kind not in self._prompt_tokens:
            ids = self.tokenizer(prompt, truncation=True, max_length=self.spec.max_tokens)["input_ids"]
            self._prompt_tokens[kind] = len(ids) - (ids[-1] in self.tokenizer.all_special_ids)
        return self._prompt_tokens[kind]

    # -- internals ----------------------------------------------------------------------------
    def _start_openvino(self, cache_dir: Path | None, tuning: Tuning | None) -> OpenVinoForward | None:
        """The OpenVINO forward pass, or None (said once) where OpenVINO is absent or refuses the model."""
        try:
            return OpenVinoForward(self.model, self.spec.fingerprint, self.spec.precision,
                                   cache_dir or default_cache_dir(), tuning)
        except ImportError:
            say_once("runtime openvino was asked for, but openvino is not installed "
                     "(pip install 'embedline[openvino]'): embedding with torch")
        except Exception as exc:  # noqa: BLE001 - any conversion or compile failure: torch runs instead
            say_once(f"OpenVINO cannot run model {self.spec.name} at {self.spec.precision} "
                     f"({type(exc).__name__}: {str(exc)[:200]}): embedding with torch")
        return None

    def _embed_tokens(self, token_ids: list[list[int]], skip: int = 0) -> np.ndarray:
        out = np.empty((len(token_ids), self.spec.out_dim), dtype=np.float32)
        pad_id = self.tokenizer.pad_token_id or 0
        lengths = [len(t) for t in token_ids]
        batches = (pad_batch(token_ids, rows, pad_id) for rows in plan_batches(lengths, self.token_budget))
        with self._head_on_this_thread():
            for batch, hidden, mask in self._hidden_states(batches):
                out[batch.rows] = self._head(hidden, mask, skip)
                self.tokens_embedded += int(batch.attention_mask.sum())
        return out

    @contextmanager
    def _head_on_this_thread(self):
        """Under OpenVINO, torch runs only the head, on this thread: torch's intra-op workers would spin
        (OpenMP's wait policy) after each batch's pooling, on the cores OpenVINO's streams compute on;
        that cost ~5% of throughput on 2 cores (bench/embed_throughput.py, interleaved rounds)."""
        torch = self._torch
        threads = torch.get_num_threads()
        if self.openvino is None or threads == 1:
            yield
            return
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)

    def _hidden_states(self, batches: Iterator[Batch]):
        """(batch, last hidden state as float32 tensor, mask tensor) per batch, from the chosen runtime."""
        torch = self._torch
        if self.openvino is not None:
            for batch, hidden in self.openvino.run(batches):
                yield batch, torch.from_numpy(hidden), torch.from_numpy(batch.attention_mask)
            return
        for batch in batches:
            ids = torch.from_numpy(batch.input_ids)
            mask = torch.from_numpy(batch.attention_mask)
            if self.device.startswith("cuda"):
                ids = ids.pin_memory().to(self.device, non_blocking=True)
                mask = mask.pin_memory().to(self.device, non_blocking=True)
            with torch.inference_mode(), _autocast(torch, self.device, self.spec.precision):
                hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
            yield batch, hidden.float(), mask

    def _head(self, hidden, mask, skip: int = 0) -> np.ndarray:
        """Pooling → Dense → truncation → Normalize, in fp32 torch whichever runtime ran the model."""
        torch = self._torch
        with torch.inference_mode():
            vectors = pool(torch, hidden, mask, self.spec.pooling, skip)
            for dense in self.dense:  # fp32, outside autocast, as the model's own Dense layers run
                vectors = dense(vectors)
            if self.spec.truncate_dim:
                vectors = vectors[:, : self.spec.truncate_dim]
            if self.spec.normalize:
                vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
        return vectors.cpu().numpy()


def _autocast(torch, device: str, precision: str):
    if precision == "fp32":
        return torch.autocast(device_type="cpu", enabled=False)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=dtype)


def _load_model(auto_model, path: str, torch):
    """SDPA attention where the architecture has it (BERT/MiniLM), the default otherwise (MPNet)."""
    try:
        return auto_model.from_pretrained(
            path, local_files_only=True, attn_implementation="sdpa", dtype=torch.float32
        )
    except (ValueError, ImportError):
        return auto_model.from_pretrained(path, local_files_only=True, dtype=torch.float32)


def _spec_precision(spec: ModelSpec) -> str | None:
    return None if spec.precision == "auto" else spec.precision


def _windows(items: Iterator[str], size: int) -> Iterator[list[str]]:
    while chunk := list(islice(items, size)):
        yield chunk


def resolve_runtime(
    spec: ModelSpec, device: str | None = None, precision: str | None = None
) -> tuple[ModelSpec, str]:
    """The spec with its precision decided for this machine, and the device; loads nothing."""
    chosen_device = choose_device(device)
    return spec.with_precision(
        choose_precision(chosen_device, precision or _spec_precision(spec))
    ), chosen_device


_ENGINES: dict[tuple, Engine] = {}


def get_engine(spec: ModelSpec, device: str | None = None, cache_dir: Path | None = None) -> Engine:
    """One loaded engine per (model, precision, device, runtime) per process: loading costs seconds."""
    resolved, chosen_device = resolve_runtime(spec, device)
    runtime = choose_runtime(chosen_device)
    key = (resolved, chosen_device, runtime)
    if key not in _ENGINES:
        _ENGINES[key] = Engine(resolved, device=chosen_device, precision=resolved.precision, runtime=runtime,
                               cache_dir=cache_dir)
    return _ENGINES[key]

"""The OpenVINO CPU runtime: the transformer's forward pass, converted from the loaded torch module.

Why: on CPUs OpenVINO's fused kernels beat torch eager (bf16 where the CPU has AVX-512 BF16 or AMX).
The model is still loaded by transformers; `openvino.convert_model` traces it once with dynamic batch
and sequence dims, and the IR is cached on disk keyed by model fingerprint + precision, so a worker
converts once. Only the last hidden state comes out of OpenVINO: pooling, Dense and Normalize stay in
the engine's torch code, exactly as for the torch runtime. Only `tasks/` imports openvino.
"""

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

log = logging.getLogger("embedline.runtime")
# OpenVINO's inference precision per embedline precision; fp16 on CPU stays with torch.
OV_PRECISION = {"fp32": "f32", "bf16": "bf16"}
_SAID: set[str] = set()  # fallback reasons already logged by this process


def say_once(message: str, level: str = "warning") -> None:
    """Log a runtime fallback once per process (every engine of a worker would repeat it)."""
    if message not in _SAID:
        _SAID.add(message)
        getattr(log, level)(message)


def import_openvino():
    """The openvino module, or None where the `openvino` extra is not installed. OpenVINO's converter
    sends usage telemetry to Google Analytics from a forked process unless a consent file in the user's
    home says no; a worker must not call out, so the converter gets its own no-op stub (its fallback
    where `openvino-telemetry` cannot be imported)."""
    sys.modules.setdefault("openvino_telemetry", None)  # None in sys.modules: that import fails
    try:
        import openvino
    except ImportError:
        return None
    return openvino


@dataclass(frozen=True)
class Tuning:
    """How the compiled model runs (the bench prints it and can sweep it)."""

    precision: str  # OpenVINO's: f32 or bf16
    hint: str  # PERFORMANCE_HINT: LATENCY (one stream, all threads) or THROUGHPUT (several streams)
    streams: int | None = None  # None: what OpenVINO picks for the hint (the compiled model says after)
    threads: int | None = None
    requests: int | None = None  # async infer requests in flight; None: OpenVINO's optimal number

    def config(self) -> dict:
        config = {"INFERENCE_PRECISION_HINT": self.precision, "PERFORMANCE_HINT": self.hint}
        if self.streams:
            config["NUM_STREAMS"] = str(self.streams)
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = self.threads
        return config


def choose_tuning(precision: str, streams: int | None = None, threads: int | None = None) -> Tuning:
    """THROUGHPUT (several streams, one async request each) unless one stream is asked for: on our 2-core
    AVX-512-BF16 machines two streams of small token-budget batches ran ~1.2-1.4x one LATENCY stream."""
    return Tuning(OV_PRECISION[precision], "LATENCY" if streams == 1 else "THROUGHPUT", streams, threads,
                  streams)


def cache_path(cache_dir: Path, fingerprint: str, precision: str, version: str) -> Path:
    """Where the converted IR of one model lives: keyed by the weights' digest, precision and the versions
    of OpenVINO, torch and transformers (the IR is a trace of their code)."""
    import torch
    import transformers

    tag = version.split("-")[0]
    libs = f"{torch.__version__.split('+')[0]}-{transformers.__version__}"
    return Path(cache_dir) / f"{fingerprint[:32]}-{precision}-ov{tag}-pt{libs}.xml"


def weights_digest(torch_model) -> str:
    """A digest of every weight the loaded module holds: the cached IR must be a trace of these weights,
    not of whatever files the model's registered (sampled) fingerprint once described."""
    import hashlib

    import torch

    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in torch_model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def compiled_precision(compiled) -> str:
    """The precision the compiled model really runs at ("bf16" or "fp32"): a bf16 hint on a CPU without
    bf16 units runs f32, and provenance must say what ran."""
    hint = compiled.get_property("INFERENCE_PRECISION_HINT")
    return "bf16" if getattr(hint, "get_type_name", lambda: str(hint))() == "bf16" else "fp32"


class OpenVinoForward:
    """The compiled transformer: token id batches in, last hidden states (float32 numpy) out."""

    def __init__(self, torch_model, fingerprint: str, precision: str, cache_dir: Path,
                 tuning: Tuning | None = None):
        ov = import_openvino()
        if ov is None:
            raise ImportError("openvino is not installed")
        if precision not in OV_PRECISION:
            raise ValueError(f"precision {precision} runs on torch")
        self.tuning = tuning or choose_tuning(precision, threads=_torch_threads())
        self.path = cache_path(cache_dir, weights_digest(torch_model), precision, ov.__version__)
        self.converted = False  # whether this engine converted (False: read from the cache)
        core = ov.Core()
        try:
            self.compiled = core.compile_model(self._read_or_convert(ov, core, torch_model), "CPU",
                                               self.tuning.config())
        except Exception:  # noqa: BLE001 - a damaged cache (a cut .bin, a kill -9): convert once more
            if self.converted:
                raise
            self._discard_cache()
            self.compiled = core.compile_model(self._read_or_convert(ov, core, torch_model), "CPU",
                                               self.tuning.config())
        self.precision = compiled_precision(self.compiled)
        self.tuning = replace(  # what OpenVINO made of the hints
            self.tuning, streams=int(self.compiled.get_property("NUM_STREAMS")),
            threads=int(self.compiled.get_property("INFERENCE_NUM_THREADS")),
            requests=self.tuning.requests
            or int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")),
        )
        self._ov = ov

    def run(self, batches: Iterable) -> Iterator[tuple[object, np.ndarray]]:
        """(batch, hidden states) for each padded batch (`input_ids`, `attention_mask`), mostly in
        completion order (the last few in start order); up to `requests` of them run at once.

        The queue's requests run without a Python callback: a callback makes OpenVINO's threads take the
        GIL (to call it, and to free it), so a compiled model freed while the GIL is held (a garbage
        collection on any thread) deadlocked joining a stream thread that waited for it. Here a request is
        read once the queue says it is idle, on this thread."""
        queue = self._ov.AsyncInferQueue(self.compiled, self.tuning.requests)
        holds: dict[int, object] = {}  # request id -> the batch whose hidden states it holds
        try:
            for batch in batches:
                idle = queue.get_idle_request_id()  # the request `start_async` takes next (waits for one)
                if idle in holds:
                    yield holds.pop(idle), queue[idle].get_output_tensor(0).data.copy()
                inputs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
                queue.start_async(inputs, None)
                holds[idle] = batch
            queue.wait_all()
            for idle, batch in holds.items():
                yield batch, queue[idle].get_output_tensor(0).data.copy()
        finally:  # a consumer that stops early, or a failed request: all in flight end before they are freed
            for request in queue:
                with contextlib.suppress(Exception):  # the failure itself was raised above
                    request.wait()

    def _discard_cache(self) -> None:
        from filelock import FileLock

        with FileLock(str(self.path) + ".lock"):
            say_once(f"the converted model {self.path} could not be read; converting it again")
            self.path.unlink(missing_ok=True)
            self.path.with_suffix(".bin").unlink(missing_ok=True)

    def _read_or_convert(self, ov, core, torch_model):
        """The cached IR, else convert the module and cache it (written aside, then renamed into place)."""
        if self.path.is_file():
            return core.read_model(self.path)
        import torch
        from filelock import FileLock

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.path) + ".lock"):
            if self.path.is_file():  # another process of this worker converted meanwhile
                return core.read_model(self.path)
            example = {"input_ids": torch.ones((2, 8), dtype=torch.int64),
                       "attention_mask": torch.ones((2, 8), dtype=torch.int64)}
            with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the tracer's notes on shape-dependent Python branches
                model = ov.convert_model(
                    last_hidden_module(torch_model), example_input=example,
                    input=[("input_ids", [-1, -1], ov.Type.i64), ("attention_mask", [-1, -1], ov.Type.i64)],
                )
            for leftover in self.path.parent.glob(self.path.stem + ".*.*"):  # staged by a killed process
                if leftover.suffix in (".xml", ".bin"):
                    leftover.unlink(missing_ok=True)
            staged = self.path.with_name(self.path.stem + f".{os.getpid()}.xml")
            ov.save_model(model, staged, compress_to_fp16=False)  # fp16 weights would move the vectors
            staged.with_suffix(".bin").replace(self.path.with_suffix(".bin"))
            staged.replace(self.path)
            self.converted = True
            # Compiled from the file, not from `model`: its constants share the torch module's memory
            # through Python objects that an OpenVINO thread would need the GIL to free.
            return core.read_model(self.path)


def _torch_threads() -> int:
    """The threads torch was given (`OMP_NUM_THREADS`, as `make serve` splits cores between workers):
    OpenVINO does not read that variable and would take every core."""
    import torch

    return torch.get_num_threads()


def last_hidden_module(torch_model):
    """A module returning only the last hidden state (no pooler head, no output dict to trace)."""
    import torch

    class LastHidden(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    return LastHidden(torch_model).eval()


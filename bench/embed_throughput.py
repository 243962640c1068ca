"""Embedding throughput: embedline's engine against what a speed-minded user would run instead.

In one process, interleaved rounds (machines here are shared and noisy): sentence-transformers fp32
batch 32 (the baseline), sentence-transformers with `backend="openvino"` and `"onnx"` (in this process
where their extras import, else under `--st-python`, see bench/st_backend.py; a row is left out, saying
why, where neither can load it), embedline auto (the runtime and precision this machine gets), embedline
torch fp32 / bf16 and embedline openvino. Prints the CPU's flags, the OpenVINO tuning, and per contender
the median round's docs/s and tokens/s, the ratio to the baseline and the minimum cosine to its vectors.

    python bench/embed_throughput.py [--docs 600] [--rounds 3] [--model-path DIR] [--device cpu|cuda]
        [--token-budget N] [--ov-streams N] [--st-python .venv-bench/bin/python] [--cap-isa avx2]

`--cap-isa avx2` measures what an AVX2-only CPU runs, on a CPU with more: it runs again with every library's
kernels kept to AVX2 (AVX2_ONLY below) and the policy's choice there, fp32. An emulation, said in the output:
on a CPU whose AVX-512 units are double-pumped 256-bit ones (AMD Zen 4) the fp32 kernels' speed barely moves.
"""

import argparse
import contextlib
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from embedline.tasks.embedding import Engine, choose_device, choose_precision, choose_runtime  # noqa: E402
from embedline.tasks.models import default_model_path, read_model_dir  # noqa: E402
from embedline.tasks.runtime_openvino import choose_tuning  # noqa: E402

BASELINE = "sentence-transformers fp32 batch 32"
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8")
# oneDNN (under torch and OpenVINO), ATen's own kernels and MKL kept to AVX2; the precision an AVX2-only CPU
# gets from the policy (bf16 needs AVX-512 BF16 or AMX). Read when each library loads: set before it does.
AVX2_ONLY = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
             "EMBEDLINE_PRECISION": "fp32"}


def load_texts(n: int) -> list[str]:
    """The first n descriptions of the shared Debian corpus (or the bundled slice on a bare clone)."""
    from bench.incremental import corpus_path

    path = corpus_path(n)
    texts = []
    with gzip.open(path, "rt") as fh:
        for line in fh:
            text = json.loads(line)["text"]
            if text.strip():
                texts.append(text)
            if len(texts) == n:
                break
    return texts


def cpu_description() -> str:
    """The CPU's model name, usable cores and the flags that decide the precision policy."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return "unknown CPU"
    name = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "?")
    flags = set(next((ln.split(":", 1)[1].split() for ln in lines if ln.startswith("flags")), []))
    shown = " ".join(f if f in flags else f"-{f}" for f in CPU_FLAGS)
    capped = all(os.environ.get(k) == v for k, v in AVX2_ONLY.items())
    return f"{name} · {len(os.sched_getaffinity(0))} cores · {shown}" + (
        " · EMULATING AN AVX2-ONLY CPU (kernels capped at AVX2, fp32)" if capped else "")


class RemoteST:
    """sentence-transformers with another backend, in a child process (see bench/st_backend.py)."""

    def __init__(self, python: str, backend: str, path: str, texts: list[str], max_tokens: int,
                 folder: Path):
        (folder / "texts.json").write_text(json.dumps(texts))
        self.texts, self.folder, self.backend = texts, folder, backend
        self.child = subprocess.Popen(
            [python, str(ROOT / "bench" / "st_backend.py"), "--backend", backend, "--model-path", path,
             "--texts", str(folder / "texts.json"), "--max-tokens", str(max_tokens),
             "--out-dir", str(folder)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        reply = self._reply()
        if "error" in reply:
            raise RuntimeError(reply["error"])
        self.config = reply.get("config") or {}
        self.seconds: float | None = None

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.child.stdin.write(json.dumps({"n": len(texts)}) + "\n")
        self.child.stdin.flush()
        self.seconds = self._reply()["seconds"]
        return np.load(self.folder / f"{self.backend}.npy")

    def _reply(self) -> dict:
        for line in self.child.stdout:
            if line.startswith("@@ "):
                return json.loads(line[3:])
        return {"error": f"exited with {self.child.wait()}"}

    def close(self) -> None:
        self.child.stdin.close()
        self.child.wait(timeout=60)


def gpu_description(device: str) -> str:
    """The GPU's name, compute capability and memory: the figures are this card's."""
    import torch

    props = torch.cuda.get_device_properties(torch.device(device))
    return f"{props.name} (sm_{props.major}{props.minor}, {props.total_memory / 2**30:.0f} GiB)"


def st_backend(backend: str, path: str, texts: list[str], max_tokens: int, st_python: str | None,
               folder: Path):
    """sentence-transformers `backend=...` here, else in `st_python`; (callable or None, what it is)."""
    from sentence_transformers import SentenceTransformer

    try:
        st = SentenceTransformer(path, device="cpu", backend=backend, local_files_only=True)
        st.max_seq_length = max_tokens
        return (lambda batch: st.encode(batch, batch_size=32, normalize_embeddings=True,
                                        convert_to_numpy=True)), "in this process"
    except Exception as exc:  # noqa: BLE001 - its extra is not installed here: try the other interpreter
        here = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
    if not st_python or not Path(st_python).exists():
        return None, f"not importable here ({here}) and no --st-python"
    try:
        remote = RemoteST(st_python, backend, path, texts, max_tokens, folder)
    except RuntimeError as exc:
        return None, f"not importable here nor under {st_python}: {str(exc).splitlines()[0][:200]}"
    return remote, f"under {st_python} {json.dumps(remote.config)}"


def timed(fn, texts):
    started = time.perf_counter()
    out = fn(texts)
    took = time.perf_counter() - started
    return out, (fn.seconds if isinstance(fn, RemoteST) else took)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--model-path", default=None, help="local sentence-transformers model (default: bundled MiniLM)"
    )
    parser.add_argument("--device", default=None)
    parser.add_argument(
        "--token-budget", type=int, default=None, help="default: the engine's per-device budget"
    )
    parser.add_argument("--ov-streams", type=int, default=None, help="OpenVINO streams (default 1)")
    parser.add_argument("--st-python", default=None,
                        help="interpreter with sentence-transformers' openvino/onnx extras (.venv-bench)")
    parser.add_argument("--cap-isa", choices=["avx2"], default=None,
                        help="emulate an AVX2-only CPU (kernels capped at AVX2, fp32)")
    parser.add_argument("--out", default=None, help="default bench/out/embed_throughput[-avx2].json")
    args = parser.parse_args()
    if args.cap_isa and any(os.environ.get(k) != v for k, v in AVX2_ONLY.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **AVX2_ONLY})  # before imports
    suffix = f"-{args.cap_isa}" if args.cap_isa else ""
    args.out = args.out or str(ROOT / "bench" / "out" / f"embed_throughput{suffix}.json")

    from sentence_transformers import SentenceTransformer

    path = args.model_path or default_model_path()
    device = choose_device(args.device)
    spec = read_model_dir("bench", path)
    texts = load_texts(args.docs)
    auto_precision, auto_runtime = choose_precision(device), choose_runtime(device)
    folder = Path(tempfile.mkdtemp(prefix="embed-bench-"))
    cache_dir = folder / "openvino"  # a cold cache: every run converts (and says how long that took)

    st = SentenceTransformer(path, device=device, local_files_only=True)
    st.max_seq_length = spec.max_tokens
    contenders = {BASELINE: lambda batch: st.encode(batch, batch_size=32, normalize_embeddings=True,
                                                    convert_to_numpy=True)}
    notes = {}
    if device == "cpu":
        for backend in ("openvino", "onnx"):
            fn, where = st_backend(backend, path, texts, spec.max_tokens, args.st_python, folder)
            notes[f"sentence-transformers {backend} batch 32"] = where
            if fn is not None:
                contenders[f"sentence-transformers {backend} batch 32"] = fn

    wanted = [(auto_runtime, auto_precision, " (auto)"), ("torch", "fp32", ""), ("openvino", "fp32", "")]
    if auto_precision == "bf16" or device != "cpu":
        wanted += [("torch", "bf16", ""), ("openvino", "bf16", "")]
    if device != "cpu":  # GPUs without bf16 (before sm_80) run fp16 under auto
        wanted.append(("torch", "fp16", ""))
    engines, seen = {}, set()
    for runtime, precision, suffix in wanted:
        if (runtime, precision) in seen or (runtime == "openvino" and device != "cpu"):
            continue
        seen.add((runtime, precision))
        started = time.perf_counter()
        engine = Engine(spec, device=device, precision=precision, token_budget=args.token_budget,
                        runtime=runtime, cache_dir=cache_dir,
                        tuning=choose_tuning(precision, args.ov_streams) if runtime == "openvino" else None)
        name = f"embedline {engine.runtime} {precision}{suffix}"
        engines[name] = engine
        notes[name] = f"loaded in {time.perf_counter() - started:.1f} s" + (
            " (converted)" if engine.openvino and engine.openvino.converted else "") + (
            f", token budget {engine.token_budget}")
    first_engine = next(iter(engines.values()))  # the auto one
    tuning = first_engine.openvino.tuning if first_engine.openvino else None
    if tuning:  # auto as it ran before its head kept to one torch thread: what that change gains
        spinning = Engine(spec, device=device, precision=auto_precision, token_budget=args.token_budget,
                          runtime="openvino", cache_dir=cache_dir, tuning=choose_tuning(auto_precision,
                                                                                        args.ov_streams))
        spinning._head_on_this_thread = contextlib.nullcontext
        engines["embedline auto, head on torch's threads"] = spinning
    tokens = sum(len(ids) for ids in first_engine.tokenize(texts))
    contenders.update({name: engine.embed for name, engine in engines.items()})
    for fn in contenders.values():  # warm-up: first calls pay allocator and kernel set-up
        fn(texts[:64])
    seconds = {name: [] for name in contenders}
    outputs = {}
    for _ in range(args.rounds):
        for name, fn in contenders.items():
            outputs[name], took = timed(fn, texts)
            seconds[name].append(took)
    for fn in contenders.values():
        if isinstance(fn, RemoteST):
            fn.close()

    reference = outputs[BASELINE]
    baseline = statistics.median(seconds[BASELINE])
    rows = []
    print(f"CPU {cpu_description()}" + (f" · GPU {gpu_description(device)}" if device != "cpu" else ""))
    print(f"model {Path(path).name} · device {device} · {len(texts)} docs · {tokens} tokens "
          f"(≤{spec.max_tokens}/doc) · {args.rounds} interleaved rounds · torch threads "
          f"{__import__('torch').get_num_threads()} · auto's token budget {first_engine.token_budget}")
    if tuning:
        print(f"OpenVINO tuning (as compiled): {tuning.config()} · {tuning.requests} requests in flight")
    for name, note in notes.items():
        print(f"  {name}: {note}")
    print(
        f"{'contender':44} {'median s':>9} {'docs/s':>9} {'tokens/s':>10} {'× ST':>6} {'min cos vs ST':>14}"
    )
    for name, took in seconds.items():
        median = statistics.median(took)
        cosine = float((np.asarray(outputs[name]) * reference).sum(axis=1).min())
        row = {
            "contender": name,
            "median_seconds": round(median, 3),
            "docs_per_s": round(len(texts) / median, 1),
            "tokens_per_s": round(tokens / median),
            "ratio_vs_st": round(baseline / median, 2),
            "min_cosine_vs_st": round(cosine, 6),
            "rounds": [round(t, 3) for t in took],
            "note": notes.get(name, ""),
        }
        rows.append(row)
        print(f"{name:44} {median:9.2f} {row['docs_per_s']:9.1f} {row['tokens_per_s']:10d} "
              f"{row['ratio_vs_st']:6.2f} {cosine:14.6f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(
        {"device": device, "cpu": cpu_description(),
         "gpu": gpu_description(device) if device != "cpu" else None, "docs": len(texts), "tokens": tokens,
         "token_budget": first_engine.token_budget, "openvino_tuning": tuning.config() if tuning else None,
         "notes": notes, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()

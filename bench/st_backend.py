"""sentence-transformers with another backend (`openvino`, `onnx`), for bench/embed_throughput.py.

Its extras pull packages the project does not pin (optimum-intel wants transformers 5.5), so the bench
may run this file under another interpreter (`make bench` builds `.venv-bench`). It loads the model,
then on each line of stdin encodes the first `n` texts and answers on stdout with a `@@ `-prefixed JSON
line: the seconds `encode` took; the vectors go to `<out-dir>/<backend>.npy`. The bench interleaves
these rounds with its own contenders, so only one runs at a time.

    python bench/st_backend.py --backend openvino --model-path DIR --texts T.json --max-tokens 256 --out-dir D
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.modules.setdefault("openvino_telemetry", None)  # as embedline's own runtime: no usage telemetry sent


def answer(payload: dict) -> None:
    print("@@ " + json.dumps(payload), flush=True)


def backend_config(st) -> dict:
    """What the backend's compiled model runs with (OpenVINO: hint, precision, streams), where it says."""
    model = getattr(st[0], "auto_model", None)
    compiled = getattr(model, "request", None) or getattr(model, "compiled_model", None)
    config = dict(getattr(model, "ov_config", None) or {})
    for name in ("INFERENCE_PRECISION_HINT", "PERFORMANCE_HINT", "NUM_STREAMS", "INFERENCE_NUM_THREADS"):
        try:
            config[name] = str(compiled.get_property(name))
        except Exception:  # noqa: BLE001 - not an OpenVINO model, or the property is not there
            pass
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", required=True)
    parser.add_argument("--model-path", required=True)
    parser.add_argument("--texts", required=True)
    parser.add_argument("--max-tokens", type=int, required=True)
    parser.add_argument("--out-dir", required=True)
    args = parser.parse_args()
    try:
        from sentence_transformers import SentenceTransformer

        kwargs = {}
        if args.backend == "openvino" and os.environ.get("ONEDNN_MAX_CPU_ISA") == "AVX2":
            # the bench emulates an AVX2-only CPU, where OpenVINO's default precision is f32 (here it
            # would pick bf16 from the CPU's flags and find no AVX2 kernel for it)
            config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
            kwargs["model_kwargs"] = {"ov_config": config}
        st = SentenceTransformer(args.model_path, device="cpu", backend=args.backend, local_files_only=True,
                                 **kwargs)
    except Exception as exc:  # noqa: BLE001 - the bench prints why this contender is missing
        answer({"error": f"{type(exc).__name__}: {exc}"[:400]})
        return
    st.max_seq_length = args.max_tokens
    texts = json.loads(Path(args.texts).read_text())
    answer({"ready": True, "config": backend_config(st)})
    for line in sys.stdin:
        n = json.loads(line)["n"]
        started = time.perf_counter()
        vectors = st.encode(texts[:n], batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
        took = time.perf_counter() - started
        np.save(Path(args.out_dir) / f"{args.backend}.npy", vectors)
        answer({"seconds": took})


if __name__ == "__main__":
    main()

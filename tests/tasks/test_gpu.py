"""The CUDA path (`pytest -m gpu` on a GPU machine): the engine's vectors at each precision match fp32
sentence-transformers, the precision policy follows the GPU, token batches reach the GPU through pinned
memory, and a worker started with `CUDA_VISIBLE_DEVICES=i` (as `make serve` starts one per GPU) embeds on
GPU i alone. Where no CUDA device exists these tests are skipped: there is nothing to run them on."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from embedline.tasks.embedding import Engine, choose_precision
from embedline.tasks.models import read_model_dir

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")]
TEXTS = ["tiling window manager", "Secure shell server: remote login with encryption " * 5, "x", "",
         "word " * 300, "dynamic window manager for X"]


@pytest.fixture(scope="module")
def spec(tiny_model_dir):
    return read_model_dir("tiny", tiny_model_dir)


NO_BF16 = not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 0)


@pytest.mark.parametrize("precision", [
    "fp32", "fp16",
    pytest.param("bf16", marks=pytest.mark.skipif(NO_BF16, reason="needs a GPU with native bf16 (sm_80+)"))])
def test_cuda_vectors_match_sentence_transformers_fp32(spec, tiny_model_dir, precision):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(tiny_model_dir), device="cpu", local_files_only=True)
    expected = st.encode(TEXTS, batch_size=32, convert_to_numpy=True)
    engine = Engine(spec, device="cuda", precision=precision)
    vectors = engine.embed(TEXTS)
    assert (engine.runtime, engine.spec.precision, engine.token_budget) == ("torch", precision, 32768)
    assert next(engine.model.parameters()).device.type == "cuda"
    cosines = (vectors * expected).sum(axis=1) / np.linalg.norm(expected, axis=1)
    assert cosines.min() >= 0.9999, cosines
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_the_precision_policy_takes_bf16_where_the_gpu_has_it_else_fp16():
    capability = torch.cuda.get_device_capability()
    assert choose_precision("cuda", "auto") == ("bf16" if capability >= (8, 0) else "fp16")
    assert choose_precision("cuda:0", "fp32") == "fp32"


def test_token_batches_reach_the_gpu_through_pinned_memory(spec):
    from torch.profiler import ProfilerActivity, profile

    engine = Engine(spec, device="cuda", precision="fp32")
    engine.embed(TEXTS)  # kernels built
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as trace:
        engine.embed(TEXTS * 20)
        torch.cuda.synchronize()
    copies = [event.name for event in trace.events() if "Memcpy HtoD" in event.name]
    assert any("Pinned" in name for name in copies), copies


def test_a_worker_per_gpu_embeds_on_its_own_gpu_only(tiny_model_dir):
    script = (
        "import json, torch; from embedline.tasks.embedding import Engine;"
        "from embedline.tasks.models import read_model_dir;"
        f"engine = Engine(read_model_dir('tiny', {str(tiny_model_dir)!r}),"
        " precision='fp32', runtime='torch');"
        "engine.embed(['x']); device = next(engine.model.parameters()).device;"
        "print(json.dumps([engine.device, torch.cuda.device_count(),"
        " str(torch.cuda.get_device_properties(device).uuid) if device.type == 'cuda' else None]))"
    )

    def worker(visible: str) -> list:
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": visible, "EMBEDLINE_DEVICE": "auto"}
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                             timeout=300, check=True).stdout
        return json.loads(out.strip().splitlines()[-1])  # [device, GPUs seen, GPU used]

    every_gpu = {str(torch.cuda.get_device_properties(i).uuid) for i in range(torch.cuda.device_count())}
    seen = [worker(str(i)) for i in range(torch.cuda.device_count())]
    assert all(device == "cuda" and count == 1 for device, count, _ in seen), seen
    assert {uuid for _, _, uuid in seen} == every_gpu  # each worker on a different GPU, none left out
    assert worker("")[:2] == ["cpu", 0]  # a cpu-pool worker (compose hides the GPUs from it)

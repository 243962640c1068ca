"""The forward-pass runtime: OpenVINO on CPU where installed, torch otherwise or when told; a fallback is
said once; the converted model is cached by its weights + precision; vectors match sentence-transformers."""

import logging
import sys
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

from embedline.errors import BadSetting
from embedline.tasks import runtime_openvino
from embedline.tasks.embedding import Engine, choose_runtime
from embedline.tasks.models import read_model_dir

HAS_OPENVINO = runtime_openvino.import_openvino() is not None
needs_openvino = pytest.mark.skipif(not HAS_OPENVINO,
                                    reason="openvino is not installed (the `openvino` extra)")
TEXTS = ["tiling window manager", "Secure shell server: remote login with encryption " * 5, "x", "",
         "word " * 300, "dynamic window manager for X"]


@pytest.fixture(scope="module")
def spec(tiny_model_dir):
    return read_model_dir("tiny", tiny_model_dir)


@pytest.fixture
def said(monkeypatch, caplog):
    """A fresh "said once" memory, and the runtime log's records."""
    monkeypatch.setattr(runtime_openvino, "_SAID", set())
    caplog.set_level(logging.INFO, logger="embedline.runtime")
    return caplog


def test_torch_is_chosen_off_cpu_when_told_and_where_openvino_is_absent(monkeypatch, said):
    assert choose_runtime("cuda", "auto") == "torch"
    assert choose_runtime("cuda:1", "openvino") == "torch"
    assert choose_runtime("cpu", "torch") == "torch"
    assert choose_runtime("cpu", "auto") == ("openvino" if HAS_OPENVINO else "torch")
    monkeypatch.setenv("EMBEDLINE_RUNTIME", "torch")
    assert choose_runtime("cpu") == "torch"
    monkeypatch.setenv("EMBEDLINE_RUNTIME", "onnx")
    with pytest.raises(BadSetting, match="EMBEDLINE_RUNTIME"):
        choose_runtime("cpu")
    monkeypatch.delenv("EMBEDLINE_RUNTIME")
    monkeypatch.setitem(sys.modules, "openvino", None)  # as where the extra is not installed
    assert choose_runtime("cpu", "auto") == "torch"
    assert choose_runtime("cpu", "auto") == "torch"
    assert [r.getMessage() for r in said.records].count(
        "openvino is not installed (pip install 'embedline[openvino]'): embedding with torch") == 1


def test_openvino_asked_for_but_absent_runs_torch_and_says_so_once(spec, monkeypatch, said, tmp_path):
    monkeypatch.setitem(sys.modules, "openvino", None)
    reference = Engine(spec, device="cpu", precision="fp32", runtime="torch").embed(TEXTS)
    engines = [Engine(spec, device="cpu", precision="fp32", runtime="openvino", cache_dir=tmp_path)
               for _ in range(2)]
    assert [e.runtime for e in engines] == ["torch", "torch"]
    np.testing.assert_array_equal(engines[1].embed(TEXTS), reference)
    warnings = [r for r in said.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "openvino is not installed" in warnings[0].getMessage()
    assert not list(tmp_path.iterdir())


def test_a_precision_openvino_does_not_run_here_falls_back_to_torch_once(spec, said, tmp_path):
    engines = [Engine(spec, device="cpu", precision="fp16", runtime="openvino", cache_dir=tmp_path)
               for _ in range(2)]
    assert [e.runtime for e in engines] == ["torch", "torch"]
    warnings = [r.getMessage() for r in said.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "embedding with torch" in warnings[0]


@needs_openvino
def test_the_converted_model_is_cached_by_its_weights_and_precision_and_a_damaged_one_is_converted_again(
        spec, tmp_path):
    import copy

    from embedline.tasks.runtime_openvino import OpenVinoForward

    first = Engine(spec, device="cpu", precision="fp32", runtime="openvino", cache_dir=tmp_path)
    again = Engine(spec, device="cpu", precision="fp32", runtime="openvino", cache_dir=tmp_path)
    bf16 = Engine(spec, device="cpu", precision="bf16", runtime="openvino", cache_dir=tmp_path)
    assert [e.runtime for e in (first, again, bf16)] == ["openvino"] * 3
    assert [e.openvino.converted for e in (first, again, bf16)] == [True, False, True]
    assert first.openvino.path == again.openvino.path != bf16.openvino.path
    assert "-fp32-" in first.openvino.path.name and "-bf16-" in bf16.openvino.path.name
    changed = copy.deepcopy(first.model)  # weights edited in place, the registered fingerprint unchanged
    next(iter(changed.parameters())).data[0, 0] += 1.0
    edited = OpenVinoForward(changed, spec.fingerprint, "fp32", tmp_path)
    assert edited.converted and edited.path != first.openvino.path
    weights = first.openvino.path.with_suffix(".bin")
    cut = weights.with_name("cut.bin")  # a cut file (a disk that filled); renamed in, as live engines map it
    cut.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    cut.replace(weights)
    repaired = Engine(spec, device="cpu", precision="fp32", runtime="openvino", cache_dir=tmp_path)
    assert repaired.runtime == "openvino" and repaired.openvino.converted
    np.testing.assert_allclose(repaired.embed(TEXTS), first.embed(TEXTS), atol=1e-6)
    np.testing.assert_allclose(again.embed(TEXTS), first.embed(TEXTS), atol=1e-6)


@needs_openvino
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_openvino_vectors_match_sentence_transformers_fp32(spec, tiny_model_dir, tmp_path, precision):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(tiny_model_dir), device="cpu", local_files_only=True)
    expected = st.encode(TEXTS, batch_size=32, convert_to_numpy=True)
    engine = Engine(spec, device="cpu", precision=precision, runtime="openvino", cache_dir=tmp_path,
                    token_budget=256)  # several batches, each padded to its own longest row
    vectors = engine.embed(TEXTS)
    assert engine.runtime == "openvino" and engine.openvino.tuning.precision == {"fp32": "f32"}.get(
        precision, precision)
    assert vectors.shape == expected.shape
    cosines = (vectors * expected).sum(axis=1) / np.linalg.norm(expected, axis=1)
    assert cosines.min() >= 0.9999, cosines
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


@needs_openvino
def test_requests_come_back_once_each_and_a_stopped_or_failed_run_leaves_none_in_flight(spec, tmp_path):
    from embedline.tasks.embedding import pad_batch

    engine = Engine(spec, device="cpu", precision="fp32", runtime="openvino", cache_dir=tmp_path)
    forward = engine.openvino
    ids = [engine.tokenizer(text)["input_ids"][:64] for text in TEXTS * 3]
    batches = [pad_batch(ids, np.array([row]), 0) for row in range(len(ids))]
    forward.tuning = replace(forward.tuning, requests=1)
    alone = [hidden for _, hidden in forward.run(batches)]
    forward.tuning = replace(forward.tuning, requests=4)
    stopped = forward.run(batches)
    first, _ = next(stopped)  # whichever of the four started ones finished first
    assert any(first is batch for batch in batches[:4])
    stopped.close()  # three requests still in flight: waited for, not freed under OpenVINO's feet
    broken = batches[:5] + [replace(batches[5], input_ids=batches[5].input_ids[None])] + batches[6:]
    with pytest.raises(Exception, match="(?i)shape|rank|dimension"):  # a 3-d batch, four in flight
        list(forward.run(broken))
    ring = list(forward.run(batches))  # in completion order
    assert Counter(id(batch) for batch, _ in ring) == Counter(map(id, batches))  # each batch once
    ring = {id(batch): hidden for batch, hidden in ring}
    for batch, expected in zip(batches, alone, strict=True):
        np.testing.assert_allclose(ring[id(batch)], expected, atol=1e-5)


@needs_openvino
def test_under_openvino_the_head_runs_on_one_torch_thread_and_the_count_comes_back(spec, tmp_path,
                                                                                  monkeypatch):
    import torch

    engine = Engine(spec, device="cpu", precision="fp32", runtime="openvino", cache_dir=tmp_path)
    seen, head = [], engine._head

    def counting_head(*args, **kwargs):
        seen.append(torch.get_num_threads())
        if len(seen) == 2:
            raise RuntimeError("a head that fails")
        return head(*args, **kwargs)

    monkeypatch.setattr(engine, "_head", counting_head)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        engine.embed(TEXTS)
        with pytest.raises(RuntimeError, match="a head that fails"):
            engine.embed(TEXTS)
        assert seen == [1, 1] and torch.get_num_threads() == 2  # restored, after a failure too
    finally:
        torch.set_num_threads(before)


def test_shards_of_a_mixed_pool_report_each_runtime(tmp_path):
    from embedline.tasks.batch import EmbeddedBatch

    def part(runtime: str) -> EmbeddedBatch:
        return EmbeddedBatch([str(tmp_path / runtime)], [], 10, 100, 1.0, 32, {}, "key", ["bf16"], [runtime])

    combined = EmbeddedBatch.combine([part("torch"), part("openvino"), part("openvino")], parallel=True)
    assert (combined.runtime, combined.precision, combined.model_key) == ("openvino+torch", "bf16", "key")


def test_converting_a_model_sends_no_openvino_telemetry(tmp_path):
    """OpenVINO's converter calls Google Analytics from a forked process unless told not to: a worker
    converting a model leaves no telemetry id in its home and runs the converter's no-op stub."""
    import os
    import subprocess

    code = (
        "from embedline.tasks.runtime_openvino import import_openvino\n"
        "import torch\n"
        "ov = import_openvino()\n"
        "ov.convert_model(torch.nn.Linear(4, 2), example_input=torch.zeros(1, 4))\n"
        "import openvino.tools.ovc.convert_impl as impl\n"
        "print(impl.tm.__name__)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "TF_BUILD", "JENKINS_URL")}
    result = subprocess.run([sys.executable, "-c", code], env={**env, "HOME": str(tmp_path)},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-1] == "openvino.tools.ovc.telemetry_stub"
    assert not (tmp_path / "intel").exists()  # openvino_telemetry keeps its client id there

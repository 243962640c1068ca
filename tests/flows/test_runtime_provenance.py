"""The runtime is provenance, like precision: each run records what ran its forward passes, and a run on
another runtime re-embeds nothing (the model key does not include it)."""

from embedline.flows.cli import format_summary
from embedline.storage import catalog
from embedline.tasks.runtime_openvino import import_openvino
from tests.conftest import ingest


def test_each_run_records_its_runtime_and_a_runtime_change_re_embeds_nothing(workspace, debian_case,
                                                                              monkeypatch):
    monkeypatch.setenv("EMBEDLINE_RUNTIME", "torch")
    first = ingest(workspace, debian_case, precision="fp32")
    monkeypatch.setenv("EMBEDLINE_RUNTIME", "auto")
    second = ingest(workspace, debian_case, precision="fp32")
    auto = "openvino" if import_openvino() is not None else "torch"

    assert first.chunks_embedded > 0 and first.promoted
    assert (second.docs_unchanged, second.docs_changed, second.chunks_embedded) == (120, 0, 0)
    assert (first.runtime, first.precision, second.runtime) == ("torch", "fp32", auto)
    with catalog.reading(workspace) as con:
        runs = con.execute("SELECT runtime, precision, device, model_key FROM runs ORDER BY run_id").fetchall()
    assert [r[:3] for r in runs] == [("torch", "fp32", "cpu"), (auto, "fp32", "cpu")]
    assert len({r[3] for r in runs}) == 1  # one model key, whatever the runtime
    assert "tokens in" in format_summary(first) and ", torch fp32); total" in format_summary(first)
    assert ", torch" not in format_summary(second) and "openvino" not in format_summary(second)  # nothing ran

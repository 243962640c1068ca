"""A failing gate records the version as failed, keeps it in Lance, and never moves the alias."""

import json

import pytest

import embedline
from embedline.storage import catalog, embeddings
from embedline.errors import ModelConflict, NotFound, ValidationFailed
from embedline.tasks.evaluation import save_golden
from embedline.tasks.models import add_model, read_model_dir
from tests.conftest import build_tiny_model, ingest, run_cli


def test_a_model_swapped_without_refresh_trips_the_drift_gate(workspace, debian_case, tmp_path):
    first = ingest(workspace, debian_case)
    other = build_tiny_model(tmp_path / "other-weights", seed=1)
    with pytest.raises(ModelConflict):  # `models add` refuses new weights under a name in use...
        add_model(workspace, "tiny", str(other))
    catalog.register_model(workspace, "tiny", read_model_dir("tiny", other).to_json())  # ...a catalog
    # written before it refused them holds them: the gate is the last line

    with pytest.raises(ValidationFailed, match="drift_min_cosine"):
        ingest(workspace, debian_case)

    alias = catalog.get_alias(workspace, "debian")
    assert alias["version"] == first.version  # prod did not move
    versions = catalog.list_versions(workspace, "debian")
    failed = versions[-1]
    assert failed["validation"] == "failed" and "drift_min_cosine" in failed["failures"]
    assert (
        embeddings.dataset_at(workspace, "debian__tiny", failed["version"]).count_rows() > 0
    )  # kept for inspection
    shown = run_cli("versions", "debian", home=workspace.home, check=True).stdout
    assert "failed" in shown and "drift_min_cosine" in shown


def test_golden_queries_gate_promotion_and_their_loss_is_an_error_not_a_pass(workspace, debian_case):
    records = [json.loads(line) for line in debian_case.read_text().splitlines()]
    short = [r for r in records if len(r["text"]) < 120][:10]
    save_golden(workspace, "debian", [{"query": r["text"], "doc_id": r["id"]} for r in short])
    good = ingest(workspace, debian_case)
    assert good.promoted
    (version,) = catalog.list_versions(workspace, "debian")
    assert version["validation"] == "passed"

    save_golden(workspace, "debian", [{"query": "anything", "doc_id": "no-such-package"}])
    records[0]["text"] += " (edited)"
    debian_case.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    with pytest.raises(ValidationFailed, match="golden_recall"):
        ingest(workspace, debian_case)
    assert catalog.get_alias(workspace, "debian")["version"] == good.version

    # gone (a host with another EMBEDLINE_STORE_URI, a lost file): not a gate that silently passes
    golden = workspace.golden_dir / "debian.jsonl"
    golden.unlink()
    db = embedline.connect(workspace.home)
    runs = len(db.sql("SELECT * FROM runs").fetchall())
    for check in (lambda: ingest(workspace, debian_case), lambda: db.validate("debian")):
        with pytest.raises(NotFound, match="no golden queries at .*debian.jsonl, but debian__tiny version .*"
                                           "measured with them.*EMBEDLINE_STORE_URI.*leave the file empty"):
            check()
    assert catalog.get_alias(workspace, "debian")["version"] == good.version
    assert len(db.sql("SELECT * FROM runs").fetchall()) == runs  # refused before it embedded a thing
    golden.write_text("")  # retired on purpose
    assert ingest(workspace, debian_case).promoted
    golden.unlink()
    db.gates("debian", min_golden_recall=0)  # or the gate turned off
    rewrite = debian_case.read_text().replace("(edited)", "(edited again)")
    debian_case.write_text(rewrite)
    assert ingest(workspace, debian_case).promoted


def test_validate_re_runs_the_gates_on_a_stored_version(workspace, debian_case):
    from embedline.flows.validate import validate_version

    summary = ingest(workspace, debian_case)
    space, version, report = validate_version("debian", home=str(workspace.home))
    assert (space, version, report.passed) == ("debian__tiny", summary.version, True)
    assert report.metrics["drift_shared_chunks"] == 0 and report.metrics["effective_rank"] > 2
    assert report.docs_url and (workspace.reports_dir / "gx").exists()
    with catalog.writing(workspace) as con:  # the catalog now disagrees with the table
        con.execute("UPDATE versions SET row_count = row_count + 1")
    _, _, again = validate_version("debian", summary.version, home=str(workspace.home))
    assert not again.passed and any("chunk_rows" in f for f in again.failures)
    assert catalog.list_versions(workspace, "debian")[0]["validation"] == "failed"


def test_a_runs_gates_apply_once_and_an_operators_setting_outlasts_the_deployments_defaults(
    workspace, debian_case
):
    from embedline.flows.deployments import render
    from embedline.tasks.gates import corpus_gates, run_gates

    corpus_gates(workspace, "debian", {"min_effective_rank": 3})  # `embedline gates debian --set ...`
    yaml_defaults = {"min_effective_rank": 50, "max_near_duplicate_rate": 0.4}
    gates = run_gates(workspace, "debian", deployment_defaults=yaml_defaults)
    assert (gates["min_effective_rank"], gates["max_near_duplicate_rate"]) == (3, 0.4)
    assert run_gates(workspace, "debian", {"min_effective_rank": 9}, yaml_defaults)["min_effective_rank"] == 9

    kept = corpus_gates(workspace, "debian")  # what backfills, swaps and `validate` judge by
    assert (kept["min_effective_rank"], kept["max_near_duplicate_rate"]) == (3, 0.4)
    with pytest.raises(ValidationFailed):
        ingest(workspace, debian_case, gates={"min_effective_rank": 10_000})  # above any dim
    only_failed = r"failed their gates .* promote debian VERSION --force` \(Python: force=True\)"
    with pytest.raises(NotFound, match=only_failed):
        embedline.connect(workspace.home).search("debian", "editor")  # only a failed version: not a typo
    with pytest.raises(embedline.BadInput, match="exist!: corpus 'debian' has versions, but none passed"):
        embedline.connect(workspace.home).sql("SELECT count(*) FROM Debian")
    assert catalog.get_gates(workspace, "debian") == {
        "min_effective_rank": 3
    }  # the run's own gate was not kept
    assert ingest(workspace, debian_case).promoted

    (ingest_deployment,) = [
        d
        for d in render({"corpora": {"debian": {"source": "x.jsonl", "gates": yaml_defaults}}})["deployments"]
        if d["name"] == "ingest-debian"
    ]
    assert ingest_deployment["parameters"]["default_gates"] == yaml_defaults
    assert "gates" not in ingest_deployment["parameters"]

"""Re-runs cost only what changed, converge after a kill -9 anywhere, and never duplicate a chunk."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from embedline.storage import catalog, sql
from embedline.storage.locks import SpaceBusy, space_lock
from embedline.workspace import Workspace
from embedline.tasks.models import add_model
from tests.conftest import DEBIAN_CASE, ingest


def table_state(ws) -> tuple[int, set[str], int]:
    """(rows, chunk ids, documents the catalog holds) of the debian__tiny space."""
    con = sql.connect(ws)
    rows = con.execute("SELECT count(*) FROM debian__tiny").fetchone()[0]
    ids = {r[0] for r in con.execute("SELECT chunk_id FROM debian__tiny").fetchall()}
    docs = con.execute("SELECT count(*) FROM documents WHERE space = 'debian__tiny'").fetchone()[0]
    con.close()
    return rows, ids, docs


def fresh_workspace(tmp_path, name, tiny_model_dir) -> Workspace:
    ws = Workspace.from_env(tmp_path / name).ensure()
    add_model(ws, "tiny", str(tiny_model_dir))
    return ws


def edit_source(path: Path) -> dict:
    """Change one document's text, delete one, add one; return which."""
    records = [json.loads(line) for line in path.read_text().splitlines()]
    changed, deleted = records[5]["id"], records[9]["id"]
    records[5]["text"] += " Now with a new paragraph about incremental ingest."
    del records[9]
    records.append(
        {"id": "brand-new", "title": "new", "text": "A package that did not exist before.", "section": "misc"}
    )
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return {"changed": changed, "deleted": deleted, "new": "brand-new"}


def test_only_new_and_changed_documents_are_embedded_and_deletions_remove_chunks(
    workspace, debian_case, tmp_path, tiny_model_dir
):
    ingest(workspace, debian_case)
    edits = edit_source(debian_case)

    summary = ingest(workspace, debian_case)

    assert (summary.docs_new, summary.docs_changed, summary.docs_deleted, summary.docs_unchanged) == (
        1,
        1,
        1,
        118,
    )
    con = sql.connect(workspace)
    embedded_now = {r[0] for r in con.execute(
        "SELECT DISTINCT doc_id FROM debian__tiny WHERE run_id = ?", [summary.run_id]).fetchall()}
    assert embedded_now == {edits["changed"], edits["new"]}
    assert (
        con.execute("SELECT count(*) FROM debian__tiny WHERE doc_id = ?", [edits["deleted"]]).fetchone()[0]
        == 0
    )
    reference = fresh_workspace(tmp_path, "reference", tiny_model_dir)
    ingest(reference, debian_case)
    assert table_state(workspace) == table_state(reference)


def test_keep_deleted_keeps_chunks_of_documents_gone_from_the_source(workspace, debian_case):
    ingest(workspace, debian_case)
    edits = edit_source(debian_case)
    summary = ingest(workspace, debian_case, keep_deleted=True)
    assert summary.docs_deleted == 0
    con = sql.connect(workspace)
    assert (
        con.execute("SELECT count(*) FROM debian__tiny WHERE doc_id = ?", [edits["deleted"]]).fetchone()[0]
        > 0
    )


def test_changing_the_chunk_size_re_embeds_everything_and_leaves_no_stale_chunks(
    workspace, debian_case, tmp_path, tiny_model_dir
):
    ingest(workspace, debian_case)
    summary = ingest(workspace, debian_case, chunk_tokens=24)
    assert (summary.docs_changed, summary.docs_unchanged) == (120, 0)
    reference = fresh_workspace(tmp_path, "reference", tiny_model_dir)
    ingest(reference, debian_case, chunk_tokens=24)
    assert table_state(workspace) == table_state(reference)


def test_a_second_writer_of_the_same_space_fails_with_a_clear_message(workspace, debian_case):
    with space_lock(workspace, "debian__tiny"):
        with pytest.raises(SpaceBusy, match="another run is writing space 'debian__tiny'"):
            ingest(workspace, debian_case)


def test_a_duckdb_query_is_a_source(workspace, debian_case):
    summary = ingest(workspace, f"query:SELECT * FROM read_json_auto('{debian_case}') WHERE section = 'libs'")
    expected = sum(
        1 for line in debian_case.read_text().splitlines() if json.loads(line)["section"] == "libs"
    )
    assert summary.docs_new == expected > 0


KILL_POINTS = {
    "planning": lambda staging, lance: any(staging.glob("run-*/documents.arrow")),
    "embedding": lambda staging, lance: any(staging.glob("run-*/chunks.arrow")),
    "publishing": lambda staging, lance: any(staging.glob("run-*/chunk_counts.arrow")),
    "recording": lambda staging, lance: (lance / "debian__tiny.lance" / "_refs" / "tags").exists(),
}


@pytest.mark.slow
@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_kill_9_at_any_point_then_rerun_converges_to_an_uninterrupted_run(point, tmp_path, tiny_model_dir):
    from prefect.settings import PREFECT_API_URL

    source = tmp_path / "big.jsonl"
    lines = DEBIAN_CASE.read_text().splitlines()
    source.write_text("\n".join(lines * 1) + "\n")
    reference = fresh_workspace(tmp_path, "reference", tiny_model_dir)
    ingest(reference, source)

    victim = fresh_workspace(tmp_path, "victim", tiny_model_dir)
    env = {**os.environ, "EMBEDLINE_HOME": str(victim.home), "PREFECT_API_URL": PREFECT_API_URL.value()}
    exe = Path(sys.executable).with_name("embedline")
    proc = subprocess.Popen([str(exe), "ingest", str(source), "--corpus", "debian", "--model", "tiny"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    reached = KILL_POINTS[point]
    deadline = time.monotonic() + 120
    while (
        not reached(victim.staging_dir, Path(victim.lance_uri))
        and proc.poll() is None
        and time.monotonic() < deadline
    ):
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    code = proc.wait()  # past the last point, a poll starved on a loaded machine may see it end first
    assert code == -signal.SIGKILL or (point == "recording" and code == 0 and reached(
        victim.staging_dir, Path(victim.lance_uri))), f"ended before reaching {point}"

    summary = ingest(victim, source)
    assert table_state(victim) == table_state(reference)
    assert summary.status == "succeeded"
    runs = {r["run_id"]: r["status"] for r in _runs(victim)}
    assert runs[summary.run_id] == "succeeded"
    assert set(runs.values()) <= {"succeeded", "abandoned"}


def _runs(ws):
    with catalog.reading(ws) as con:
        return [
            dict(zip(("run_id", "status"), r))
            for r in con.execute("SELECT run_id, status FROM runs").fetchall()
        ]

"""What serves (issue 14, serving side): only rows of runs that passed their gates, operators'
choices hold against scheduled runs, refresh triggers are opt-in, a swap covers prod, and the edges
of a run (retries, staging, maintain's lock, SQL writes, plots) cannot undo any of that."""

import gzip
import json
from pathlib import Path

import pytest
from prefect.states import Failed

from embedline.errors import BadName, CatalogBusy, SpaceBusy, SwapRefused, SwapStale, ValidationFailed
from embedline.flows import deployments
from embedline.storage import catalog, embeddings, sql
from embedline.storage.locks import space_lock
from embedline.tasks.gates import corpus_gates
from embedline.tasks.models import add_model
from tests.conftest import DEBIAN_CASE, ingest, run_cli

MORE_DEBIAN = Path(__file__).resolve().parents[2] / "embedline" / "data" / "debian-2k.jsonl.gz"


def further_records(count: int, skip: int = 0) -> list[dict]:
    """Real Debian records that are not in the 120-document case."""
    taken = {json.loads(line)["id"] for line in DEBIAN_CASE.read_text().splitlines()}
    with gzip.open(MORE_DEBIAN, "rt") as fh:
        records = [r for r in map(json.loads, fh) if r["id"] not in taken]
    return records[skip:skip + count]


def append(path: Path, records: list[dict]) -> set[str]:
    with path.open("a") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in records)
    return {r["id"] for r in records}


def rewrite(path: Path, index: int, text: str) -> None:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    records[index]["text"] = text
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def edit_and_delete(path: Path, edition: str) -> tuple[str, str]:
    """A scheduled ingest's change to the source: the first document edited, the second deleted."""
    records = [json.loads(line) for line in path.read_text().splitlines()]
    records[0]["text"] = f"{edition} {records[0]['text']}"
    deleted = records.pop(1)["id"]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return records[0]["id"], deleted


def served_texts(ws, corpus: str = "debian") -> dict[str, str]:
    """doc_id → first chunk's text, as the corpus's prod alias serves it."""
    prod = catalog.get_alias(ws, corpus)
    table = embeddings.dataset_at(ws, prod["space"], prod["version"]).to_table(
        columns=["doc_id", "text"], filter="chunk_index = 0")
    return dict(zip(table.column("doc_id").to_pylist(), table.column("text").to_pylist()))


def rows_of(ws, view: str) -> set[tuple[str, int]]:
    """(doc_id, run_id) of every chunk a SQL view shows."""
    return set(sql.connect(ws).execute(f"SELECT doc_id, run_id FROM {view}").fetchall())


def last_run_id(ws) -> int:
    with catalog.reading(ws) as con:
        return con.execute("SELECT max(run_id) FROM runs").fetchone()[0]


# -- C1: a failed run's rows never serve ---------------------------------------------------------
def test_a_failed_runs_rows_never_serve_and_its_documents_are_embedded_again(workspace, debian_case):
    ingest(workspace, debian_case)
    failing = append(debian_case, further_records(40))  # enough chunks for the quality gates
    corpus_gates(workspace, "debian", {"min_effective_rank": 1000})
    with pytest.raises(ValidationFailed, match="effective_rank"):
        ingest(workspace, debian_case)
    failed_run = last_run_id(workspace)
    failed = catalog.list_versions(workspace, "debian")[-1]
    assert (failed["run_id"], failed["validation"]) == (failed_run, "failed")
    assert {
        d for d, r in rows_of(workspace, f"debian__tiny__v{failed['version']}") if r == failed_run
    } == failing
    assert failed_run not in {
        r for _, r in rows_of(workspace, "debian__tiny")
    }  # the space's head is clean again

    corpus_gates(workspace, "debian", {"min_effective_rank": 2})
    good = append(debian_case, further_records(1, skip=40))
    passed = ingest(workspace, debian_case)

    assert passed.promoted and passed.docs_new == 41  # the failed run's documents were not taken as current
    served = rows_of(workspace, "debian")
    assert failed_run not in {r for _, r in served}
    assert {d for d, r in served if r == passed.run_id} == failing | good


def test_a_run_that_dies_between_commit_and_record_leaves_nothing_that_serves(
    workspace, debian_case, monkeypatch
):
    ingest(workspace, debian_case)
    rewrite(debian_case, 3, "text of a run whose catalog record never landed")

    def dies(*args, **kwargs):
        raise RuntimeError("killed after the Lance commit")

    with monkeypatch.context() as patch:
        patch.setattr(catalog, "finish_run", dies)
        with pytest.raises(RuntimeError, match="killed"):
            ingest(workspace, debian_case)
    dead_run = last_run_id(workspace)
    latest = embeddings.dataset_at(workspace, "debian__tiny").to_table(columns=["run_id"]).column("run_id")
    assert dead_run in set(latest.to_pylist())  # committed, never recorded
    assert dead_run not in {
        r for _, r in rows_of(workspace, "debian__tiny")
    }  # the space's view: its clean head

    rewrite(
        debian_case, 3, json.loads(DEBIAN_CASE.read_text().splitlines()[3])["text"]
    )  # back to what passed
    after = ingest(workspace, debian_case)
    assert dead_run not in {r for _, r in rows_of(workspace, "debian__tiny")}
    assert dead_run not in {r for _, r in rows_of(workspace, "debian")}
    assert (after.docs_changed, after.docs_unchanged) == (0, 120)


def test_documents_an_old_failed_run_deleted_come_back_as_orphans_and_the_next_run_settles_them(
        workspace, debian_case):
    """Before schema 8 a failed run applied its deletions to the catalog; the first restore after an
    upgrade brings their chunks back, and the next run must delete or replace them, never serve them stale."""
    ingest(workspace, debian_case)
    records = [json.loads(line) for line in debian_case.read_text().splitlines()]
    gone, edited = records[5]["id"], records[6]["id"]
    embeddings.open_space(workspace, "debian__tiny").delete(
        f"doc_id IN ('{gone}', '{edited}')"
    )  # as 0.1.0 did
    with catalog.writing(workspace) as con:
        con.execute("DELETE FROM documents WHERE doc_id IN (?, ?)", [gone, edited])
    records[6]["text"] = "a new text for a document an old failed run had deleted"
    debian_case.write_text("".join(json.dumps(r) + "\n" for r in records if r["id"] != gone))

    summary = ingest(workspace, debian_case)

    assert (summary.docs_deleted, summary.docs_changed, summary.docs_unchanged) == (1, 1, 118)
    served = sql.connect(workspace).execute("SELECT doc_id, text FROM debian WHERE doc_id IN (?, ?)",
                                            [gone, edited]).fetchall()
    assert {d for d, _ in served} == {edited} and all(t in records[6]["text"] for _, t in served)
    assert catalog.known_documents(workspace, "debian__tiny").get(gone) is None


# -- C4: operators win ---------------------------------------------------------------------------
def test_a_rollback_holds_prod_until_promote_releases_it(workspace, debian_case):
    v1 = ingest(workspace, debian_case).version
    rewrite(debian_case, 0, "second edition")
    ingest(workspace, debian_case)
    assert catalog.rollback(workspace, "debian")["version"] == v1

    rewrite(debian_case, 0, "third edition")
    held = ingest(workspace, debian_case)
    assert held.status == "succeeded" and not held.promoted
    assert catalog.get_alias(workspace, "debian")["version"] == v1
    assert [(v["aliases"], v["held"]) for v in catalog.list_versions(workspace, "debian")
            if v["version"] == v1] == [(["prod"], True)]
    assert any("prod is held (rolled back)" in n and f"`embedline promote debian {held.version}`" in n
               for n in held.notes)

    catalog.promote(workspace, "debian", held.version)
    rewrite(debian_case, 0, "fourth edition")
    released = ingest(workspace, debian_case)
    assert released.promoted and catalog.get_alias(workspace, "debian")["version"] == released.version


def test_a_run_of_another_model_writes_its_space_and_never_moves_prod(workspace, debian_case, tiny_model_dir):
    add_model(workspace, "small", str(tiny_model_dir), truncate_dim=16)
    first = ingest(workspace, debian_case, model=None, initial_model="tiny")  # a new corpus starts on it
    assert (first.space, first.promoted) == ("debian__tiny", True)

    other = ingest(workspace, debian_case, model="small")
    assert other.status == "succeeded" and other.version is not None and not other.promoted
    assert catalog.get_alias(workspace, "debian")["space"] == "debian__tiny"
    assert any("embedline refresh debian --model small" in n for n in other.notes)

    rewrite(debian_case, 1, "an edit a scheduled run picks up")
    scheduled = ingest(workspace, debian_case, model=None, initial_model="small")  # like the cron deployment
    assert (scheduled.space, scheduled.promoted) == ("debian__tiny", True)


# -- C5: refresh triggers are opt-in and exact ---------------------------------------------------
def test_refresh_triggers_are_opt_in_and_match_the_exact_model():
    rendered = deployments.render({"corpora": {
        "docs": {"source": "docs/*.md", "model": "minilm"},
        "tickets": {"source": "t.csv", "model": "minilm", "refresh": {"on_model": "mpnet"}},
    }})
    by_name = {d["name"]: d for d in rendered["deployments"]}
    assert "triggers" not in by_name["refresh-docs"]
    (trigger,) = by_name["refresh-tickets"]["triggers"]
    assert trigger["match"] == {"prefect.resource.id": "embedline.model.mpnet"}
    assert trigger["parameters"]["model"] == "mpnet"  # and the event's home (tests/flows/test_events.py)
    for corpus in ("docs", "tickets"):  # `model` only starts a new corpus: it never overrules a swap
        parameters = by_name[f"ingest-{corpus}"]["parameters"]
        assert "model" not in parameters and parameters["initial_model"] == "minilm"
    with pytest.raises(BadName):
        deployments.render({"corpora": {"docs": {"source": "x", "refresh": {"on_model": "mp*"}}}})


def test_a_refresh_to_the_model_prod_serves_completes_without_doing_anything(workspace, debian_case):
    from embedline.flows.refresh import refresh_model

    first = ingest(workspace, debian_case)
    assert refresh_model("debian", "tiny", wait=True, home=str(workspace.home)) == (None, None)
    assert catalog.get_alias(workspace, "debian")["version"] == first.version
    with catalog.reading(workspace) as con:
        assert con.execute("SELECT count(*) FROM adapters").fetchone()[0] == 0


# -- C8: a swap covers every document prod serves ------------------------------------------------
def test_a_swap_is_refused_when_the_new_space_lacks_documents_prod_serves(workspace, debian_case,
                                                                         tiny_model_dir, tmp_path):
    from embedline.tasks.refresh import swap_if_proven

    add_model(workspace, "small", str(tiny_model_dir), truncate_dim=16)
    ingest(workspace, debian_case)
    shrunk = tmp_path / "shrunk.jsonl"
    shrunk.write_text("".join(debian_case.read_text().splitlines(keepends=True)[:100]))
    partial = ingest(workspace, shrunk, model="small")
    with pytest.raises(SwapRefused, match="20 of the 120 documents prod serves"):
        swap_if_proven(workspace, "debian", "small", partial.version)
    assert catalog.get_alias(workspace, "debian")["space"] == "debian__tiny"

    whole = ingest(workspace, debian_case, model="small")
    assert swap_if_proven(workspace, "debian", "small", whole.version)["space"] == "debian__small"


def test_a_rollback_during_a_swap_wins(workspace, debian_case, tiny_model_dir, monkeypatch):
    from embedline.tasks import refresh

    add_model(workspace, "small", str(tiny_model_dir), truncate_dim=16)
    ingest(workspace, debian_case)
    rewrite(debian_case, 0, "second edition")
    ingest(workspace, debian_case)
    whole = ingest(workspace, debian_case, model="small")
    swap = catalog.promote

    def rollback_meanwhile(*args, **kwargs):  # an operator rolls back after the swap read prod
        catalog.rollback(workspace, "debian")
        return swap(*args, **kwargs)

    monkeypatch.setattr(catalog, "promote", rollback_meanwhile)
    with pytest.raises(SwapRefused, match="held"):
        refresh.swap_if_proven(workspace, "debian", "small", whole.version)
    prod = catalog.get_alias(workspace, "debian")
    assert (prod["space"], prod["held"]) == ("debian__tiny", True)


def test_a_swap_is_refused_when_prod_changed_and_deleted_documents_after_the_last_batch(
        workspace, debian_case, tiny_model_dir):
    from embedline.tasks.refresh import swap_if_proven

    add_model(workspace, "small", str(tiny_model_dir), truncate_dim=16)
    ingest(workspace, debian_case)
    ingest(workspace, debian_case, model="small", promote=False)  # the backfill's last batch: complete
    edited, deleted = edit_and_delete(debian_case, "REPLACED")
    assert ingest(workspace, debian_case).promoted  # a scheduled ingest lands before the swap
    with pytest.raises(SwapStale, match="debian__tiny changed its documents .* after debian__small last"):
        swap_if_proven(workspace, "debian", "small", None)
    served = served_texts(workspace)
    assert catalog.get_alias(workspace, "debian")["space"] == "debian__tiny"
    assert deleted not in served and served[edited].startswith("REPLACED")


def test_a_new_space_fresher_than_prod_swaps_and_serves_the_newer_text(workspace, debian_case,
                                                                        tiny_model_dir):
    from embedline.tasks.refresh import swap_if_proven

    add_model(workspace, "small", str(tiny_model_dir), truncate_dim=16)
    ingest(workspace, debian_case)
    edited = json.loads(debian_case.read_text().splitlines()[0])["id"]
    rewrite(debian_case, 0, "NEWER")  # the source moves on; prod's next scheduled run is later
    ingest(workspace, debian_case, model="small", promote=False)
    assert swap_if_proven(workspace, "debian", "small", None)["space"] == "debian__small"
    assert served_texts(workspace)[edited].startswith("NEWER")


def test_a_backfill_catches_up_with_prod_changed_before_its_swap(workspace, debian_case, tiny_model_dir,
                                                                 monkeypatch):
    from embedline.flows import refresh as refresh_flow

    add_model(workspace, "small", str(tiny_model_dir), truncate_dim=16)
    ingest(workspace, debian_case)
    revalidate, changed = refresh_flow.revalidate, []

    def scheduled_ingest_first(*args):  # lands after the backfill's last batch, before its swap
        if not changed:
            changed.append(edit_and_delete(debian_case, "REPLACED"))
            ingest(workspace, debian_case)
        return revalidate(*args)

    monkeypatch.setattr(refresh_flow, "revalidate", scheduled_ingest_first)
    swapped = refresh_flow.backfill_corpus("debian", "small", home=str(workspace.home))
    assert swapped["space"] == "debian__small"
    (edited, deleted), served = changed[0], served_texts(workspace)
    assert deleted not in served and served[edited].startswith("REPLACED") and len(served) == 119
    with catalog.reading(workspace) as con:
        assert con.execute("SELECT count(*) FROM runs WHERE space = 'debian__small'"
                           " AND status = 'succeeded'").fetchone()[0] == 2  # the batch, then a catch-up


def test_a_backfill_stops_retrying_when_prod_changes_before_every_swap(workspace, debian_case, tiny_model_dir,
                                                                      monkeypatch):
    from embedline.flows import refresh as refresh_flow

    add_model(workspace, "small", str(tiny_model_dir), truncate_dim=16)
    ingest(workspace, debian_case)
    revalidate, editions = refresh_flow.revalidate, []

    def scheduled_ingest_first(*args):
        editions.append(len(editions))
        rewrite(debian_case, 0, f"edition {len(editions)}")
        ingest(workspace, debian_case)
        return revalidate(*args)

    monkeypatch.setattr(refresh_flow, "revalidate", scheduled_ingest_first)
    with pytest.raises(SwapStale, match="refused 3 times.*debian__tiny changed its documents"):
        refresh_flow.backfill_corpus("debian", "small", home=str(workspace.home))
    assert len(editions) == refresh_flow.SWAP_ATTEMPTS == 3
    assert catalog.get_alias(workspace, "debian")["space"] == "debian__tiny"


def test_promote_hold_pins_prod_against_scheduled_runs(workspace, debian_case):
    first = ingest(workspace, debian_case).version
    rewrite(debian_case, 0, "second edition")
    ingest(workspace, debian_case)
    out = run_cli("promote", "debian", str(first), "--hold", home=workspace.home, check=True)
    assert out.stdout.strip().endswith(f"version {first} (held)")

    rewrite(debian_case, 0, "third edition")
    third = ingest(workspace, debian_case)

    assert third.status == "succeeded" and not third.promoted
    assert (
        catalog.get_alias(workspace, "debian")["version"],
        catalog.get_alias(workspace, "debian")["held"],
    ) == (first, True)
    catalog.promote(workspace, "debian", third.version)
    assert catalog.get_alias(workspace, "debian")["held"] is False


# -- C9: the edges of a run -------------------------------------------------------------------------
def test_only_transient_errors_are_retried():
    from embedline.flows import ingest as ingest_flow
    from embedline.flows import maintain as maintain_flow
    from embedline.flows.retries import retry_transient

    assert retry_transient(None, None, Failed(data=CatalogBusy("catalog locked")))
    assert not retry_transient(None, None, Failed(data=ValueError("tag run-3 already exists")))
    assert not retry_transient(None, None, Failed(data=SpaceBusy("another run writes the space")))
    for task in (ingest_flow.publish, ingest_flow.record, maintain_flow.maintain_space):
        assert task.retries and task.retry_condition_fn is retry_transient


def test_a_failed_run_leaves_no_staging_behind(workspace, debian_case, monkeypatch):
    from embedline.storage import embeddings

    leftover = workspace.staging_dir / "run-77"  # as a run killed long ago would have left it
    leftover.mkdir(parents=True)

    def disk_full(*args, **kwargs):
        raise OSError("no space left on device")

    monkeypatch.setattr(embeddings, "write_version", disk_full)
    with pytest.raises(OSError, match="no space left"):
        ingest(workspace, debian_case)
    assert catalog.get_run(workspace, last_run_id(workspace))["status"] == "failed"
    assert list(workspace.staging_dir.iterdir()) == []


def test_maintain_holds_the_space_lock(workspace, debian_case, monkeypatch):
    from embedline.flows.maintain import maintain_corpus
    from embedline.storage import maintenance

    ingest(workspace, debian_case)
    attempts = []
    real_open = maintenance.open_space

    def open_while_an_ingest_tries(ws, space):
        try:
            with space_lock(ws, space):
                attempts.append("acquired")
        except SpaceBusy:
            attempts.append("busy")
        return real_open(ws, space)

    monkeypatch.setattr(maintenance, "open_space", open_while_an_ingest_tries)
    lines = maintain_corpus("debian", home=str(workspace.home))
    assert attempts == ["busy"] and lines and lines[0].startswith("debian__tiny")


def test_sql_write_session_can_call_query_vector(workspace, debian_case):
    ingest(workspace, debian_case)
    query = ("SELECT doc_id FROM debian ORDER BY array_cosine_similarity(vector, query_vector('debian',"
             " 'window manager')) DESC LIMIT 3")
    done = run_cli("sql", query, "--write", "--format", "json", home=workspace.home)
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)) == 3


def test_a_plotting_failure_after_the_commit_leaves_the_run_succeeded(workspace, debian_case, monkeypatch):
    from embedline.tasks import plots

    def broken(*args, **kwargs):
        raise RuntimeError("matplotlib backend exploded")

    monkeypatch.setattr(plots, "pca_map", broken)
    summary = ingest(workspace, debian_case)
    assert summary.status == "succeeded" and summary.promoted
    assert catalog.get_run(workspace, summary.run_id)["status"] == "succeeded"
    assert catalog.get_alias(workspace, "debian")["version"] == summary.version


def test_a_run_after_a_rollback_embeds_again_what_the_undone_run_wrote(workspace, debian_case):
    """Rolled back because run 2's vectors were bad: the next run built on its rows as unchanged, and the
    held note sent the operator to a version that served them again."""
    ingest(workspace, debian_case)
    rewrite(debian_case, 0, "a second edition whose vectors the operator takes out of service")
    second = ingest(workspace, debian_case)
    catalog.rollback(workspace, "debian")
    third = ingest(workspace, debian_case)  # the scheduled run: the source has not changed since run 2
    assert (third.docs_changed, third.docs_unchanged) == (1, 119)
    rows = embeddings.dataset_at(workspace, "debian__tiny", third.version).to_table(
        columns=["run_id"]).column("run_id").to_pylist()
    assert second.run_id not in rows and third.run_id in rows
    assert catalog.get_alias(workspace, "debian")["held"]  # prod stays where the operator put it


def test_maintain_ends_a_killed_runs_record_and_clears_its_staging(workspace, debian_case):
    from embedline.flows.maintain import maintain_corpus
    from embedline.storage import files
    from embedline.tasks import publishing

    ingest(workspace, debian_case)
    killed = catalog.start_run(workspace, "debian", "tiny", "debian__tiny", str(debian_case), {}, "k", "c",
                               "cpu", "fp32")  # its process was killed mid-way: nothing else ran since
    files.open_store(workspace).write_text(f"staging/run-{killed}/documents.arrow", "staged full texts")
    lines = maintain_corpus("debian", home=str(workspace.home))
    assert lines[0].endswith("1 killed run(s) marked abandoned")
    assert catalog.get_run(workspace, killed)["status"] == "abandoned"
    assert f"staging/run-{killed}" not in files.open_store(workspace).list("staging")
    assert not publishing.scratch_dir(workspace, killed).exists()


def test_a_catalog_restored_from_a_backup_keeps_running(workspace, debian_case, tmp_path):
    """Run ids start again below the tags Lance kept: every run failed on 'tag run-2 already exists'."""
    import shutil

    ingest(workspace, debian_case)
    shutil.copy(workspace.catalog_path, tmp_path / "backup.duckdb")
    rewrite(debian_case, 0, "edited after the backup")
    ingest(workspace, debian_case)
    shutil.copy(tmp_path / "backup.duckdb", workspace.catalog_path)
    rewrite(debian_case, 1, "edited after the restore")
    again = ingest(workspace, debian_case)
    assert again.promoted and again.docs_changed == 2  # run 2's edit is news to the restored catalog
    assert embeddings.open_space(workspace, "debian__tiny").tags.list()[f"run-{again.run_id}"]["version"] == (
        again.version)


def test_a_catalog_that_never_saw_a_space_refuses_to_empty_its_table(
    workspace, debian_case, tmp_path, monkeypatch
):
    """A host without the shared catalog URL, over the shared Lance: its first run emptied the table."""
    from embedline.errors import CatalogMismatch
    from embedline.workspace import Workspace

    served = ingest(workspace, debian_case)
    monkeypatch.setenv("EMBEDLINE_LANCE_URI", workspace.lance_uri)
    stranger = Workspace.from_env(tmp_path / "other").ensure()
    add_model(stranger, "tiny", catalog.list_models(workspace)[0]["path"])
    with pytest.raises(CatalogMismatch, match="EMBEDLINE_CATALOG_URL"):
        ingest(stranger, debian_case)
    assert embeddings.open_space(workspace, "debian__tiny").count_rows() == served.chunks_embedded


def test_a_run_that_changes_nothing_after_a_failed_one_is_recorded_at_the_version_it_found_good(
    workspace, debian_case
):
    first = ingest(workspace, debian_case)
    original = debian_case.read_text()
    rewrite(debian_case, 0, "an edit the gates refuse")
    catalog.set_gates(workspace, "debian", {"norm_tolerance": -1.0})  # no chunk passes
    with pytest.raises(ValidationFailed):
        ingest(workspace, debian_case)
    catalog.set_gates(workspace, "debian", {})
    debian_case.write_text(original)
    quiet = ingest(workspace, debian_case)
    assert quiet.version is None or quiet.version == first.version
    assert catalog.get_run(workspace, quiet.run_id)["version"] == first.version  # was the failed version

"""Integrity under random operation sequences: what serves is exactly what passed, and nothing is lost.

A hypothesis state machine drives one corpus through what operators do every day — edits, deletions,
additions, malformed lines, empty-text records, duplicates, metadata type changes, gates that fail,
rollbacks, promotions (pinned or not), maintenance, and ingests and maintenance killed with SIGKILL at a
random moment — and after every
step checks the invariants against a small model of what prod should serve:

- I1 prod serves only rows written by runs that passed their gates;
- I2 prod serves exactly the documents the model expects (every source document unless a clean run
     deleted it), each with the text of its last passing ingest;
- I3 every run's counts reconcile (read = new + changed + unchanged + quarantined + deferred);
- I4 the catalog equals the table: the documents and chunk counts it records for the space are those
     of the space's clean head.
- I5 after a rollback, a run that passes serves none of the undone runs' rows (it embeds their documents
     again), but for documents it quarantined or could not delete.
- I6 maintenance prunes only what nothing reaches: every version an alias serves, and every recorded
     version not marked pruned, opens; rollback to a pruned version is refused and changes nothing.

CI runs a bounded number of steps; `make soak SOAK_MINUTES=20` runs machines back to back for as long as
asked and prints the steps done and invariants checked.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from embedline.errors import BadInput, NotFound, ValidationFailed
from embedline.storage import catalog, embeddings
from embedline.tasks.models import add_model
from embedline.workspace import Workspace
from tests.conftest import DEBIAN_CASE, build_tiny_model, ingest

POOL = [json.loads(line) for line in DEBIAN_CASE.read_text().splitlines()]
CORPUS, MODEL, SPACE = "debian", "tiny", "debian__tiny"
STATS = {"steps": 0, "invariants": 0, "ingests": 0, "failed_gates": 0, "refused": 0, "kills": 0,
         "after_rollbacks": 0, "pruned": 0, "rollbacks_to_pruned": 0}


def _clean(record: dict) -> dict:
    return {k: record[k] for k in ("id", "title", "text", "section")}


class Integrity(RuleBasedStateMachine):
    """One workspace, one corpus, the tiny model; `self.expected` is what prod must serve."""

    model_dir: Path = None  # set by the test before the machine runs
    base: Path = None
    api_url: str = ""  # the session's Prefect server, so a killed subprocess does not start its own

    def __init__(self):
        super().__init__()
        self.root = Path(self.base) / f"m{time.monotonic_ns()}"
        self.ws = Workspace.from_env(self.root / "home").ensure()
        add_model(self.ws, MODEL, str(self.model_dir))
        self.source = self.root / "source.jsonl"
        self.records = [_clean(r) for r in POOL[:10]]
        self.reserve = [_clean(r) for r in POOL[10:60]]
        self.defects: list[str] = []  # malformed or rejected lines, present until fixed
        self.junk: list[dict] = []  # a batch the near-duplicate gate refuses, present until fixed
        self.head: dict[
            str, str
        ] = {}  # doc_id → text of the space's clean head (what the next run diffs against)
        self.history: list[tuple[int, dict[str, str]]] = []  # prod's (version, documents) after each move
        self.held = False
        self.force_failure = False
        self.undone: set[int] = set()  # runs a rollback took out of service

    # -- the model's view of a source ---------------------------------------------------------------
    def write_source(self) -> None:
        lines = [json.dumps(r) for r in self.records + self.junk] + self.defects
        self.source.write_text("".join(line + "\n" for line in lines))

    def after_pass(self, quarantined: set[str]) -> dict[str, str]:
        """What the space holds after a run over the current source passes its gates, given the ids
        the run quarantined (a metadata value of a conflicting type is quarantined too)."""
        rejected_lines = {json.loads(d)["id"] for d in self.defects if not d.startswith("{not json")}
        assert rejected_lines <= quarantined, rejected_lines - quarantined  # every bad record is quarantined
        after = {r["id"]: r["text"] for r in self.records + self.junk if r["id"] not in quarantined}
        for doc_id in quarantined & set(self.head):
            after[doc_id] = self.head[doc_id]  # a rejected record of a known document keeps its chunks
        if any(d.startswith("{not json") for d in self.defects):  # an unreadable id: the run deletes nothing
            for doc_id, text in self.head.items():
                after.setdefault(doc_id, text)
        return after

    @property
    def prod(self) -> dict[str, str]:
        return self.history[-1][1] if self.history else {}

    # -- rules ---------------------------------------------------------------------------------------
    @initialize()
    def first_ingest(self):
        self.write_source()
        self._ingest()

    @precondition(lambda self: self.records)
    @rule(data=st.data())
    def edit(self, data):
        index = data.draw(st.integers(0, len(self.records) - 1))
        self.records[index] = {
            **self.records[index],
            "text": self.records[index]["text"] + f" Edit {time.time_ns()}.",
        }
        self.run_ingest()

    @precondition(lambda self: len(self.records) > 4)
    @rule(data=st.data())
    def delete(self, data):
        self.records.pop(data.draw(st.integers(0, len(self.records) - 1)))
        self.run_ingest()

    @precondition(lambda self: self.reserve)
    @rule(count=st.integers(1, 3))
    def add(self, count):
        for _ in range(min(count, len(self.reserve))):
            self.records.append(self.reserve.pop(0))
        self.run_ingest()

    @rule()
    def malformed_line(self):
        self.defects.append('{not json, "id": "x"')
        self.run_ingest()

    @precondition(lambda self: len(self.records) > 4)
    @rule(data=st.data())
    def empty_text_for_a_known_document(self, data):
        doc = self.records.pop(data.draw(st.integers(0, len(self.records) - 1)))
        self.defects.append(json.dumps({**doc, "text": "   "}))
        self.run_ingest()

    @precondition(lambda self: self.records)
    @rule(data=st.data())
    def metadata_type_change(self, data):
        index = data.draw(st.integers(0, len(self.records) - 1))
        value = data.draw(st.sampled_from([7, "unknown", None, ["a", "b"], 2.5]))
        record = {k: v for k, v in self.records[index].items() if k != "section"}
        record["priority" if index % 2 else "section"] = value
        self.records[index] = dict(reversed(list(record.items())))  # field order must not matter
        self.run_ingest()

    @rule()
    def fix_defects(self):
        self.defects, self.junk = [], []
        self.run_ingest()

    @precondition(lambda self: self.records)
    @rule()
    def force_gate_failure(self):
        """Arm a gate no chunk passes (a norm tolerance below zero) and change a document to judge."""
        self.force_failure = True
        self.records[0] = {**self.records[0], "text": self.records[0]["text"] + " Gate."}
        self.run_ingest()

    @rule()
    def junk_batch(self):
        """40 near-identical documents: the near-duplicate gate fails every run that embeds them, and
        since a failed run's documents stay unknown, every run until they are removed (fix_defects)."""
        self.junk = [{"id": f"junk-{i}", "title": "offer", "text": f"Buy cheap pills now, offer {i % 2}.",
                      "section": "junk"} for i in range(40)]
        self.run_ingest()

    @rule()
    def run_ingest(self):
        """The scheduled ingest: every rule that changes the source (or arms a gate) ends with one."""
        self.write_source()
        self._ingest()

    @rule()
    def rollback(self):
        if len(self.history) < 2:
            with pytest.raises(NotFound):
                catalog.rollback(self.ws, CORPUS)
            return
        if self.history[-2][0] in self._pruned():
            with pytest.raises(NotFound, match="removed by `embedline maintain`"):
                catalog.rollback(self.ws, CORPUS)
            STATS["rollbacks_to_pruned"] += 1
            return
        moved = catalog.rollback(self.ws, CORPUS)
        assert moved["version"] == self.history[-2][0]
        self.history.pop()
        self.held = True
        with catalog.reading(self.ws) as con:  # runs whose rows prod was moved back past
            self.undone |= {r for (r,) in con.execute(
                "SELECT run_id FROM versions WHERE space = ? AND version > ? AND validation = 'passed'",
                [moved["space"], moved["version"]]).fetchall()}

    @rule()
    def promote_head(self):
        version = catalog.latest_passed_version(self.ws, SPACE)
        if version is None:
            return
        catalog.promote(self.ws, CORPUS, version, space=SPACE)
        self.history.append((version, dict(self.head)))
        self.held = False

    @rule()
    def promote_and_hold(self):
        """An operator pins prod at the clean head: scheduled runs must leave it there."""
        version = catalog.latest_passed_version(self.ws, SPACE)
        if version is None:
            return
        catalog.promote(self.ws, CORPUS, version, space=SPACE, hold=True)
        self.history.append((version, dict(self.head)))
        self.held = True

    @rule(delay=st.floats(0.5, 8.0))
    def kill_maintain(self, delay):
        """Compaction and cleanup (of every untagged version) killed at a random moment."""
        self._killed(["maintain", CORPUS, "--retention-days", "0"], delay)

    @rule(keep=st.integers(1, 3))
    def maintain(self, keep):
        """Nightly upkeep that prunes every version older than the newest `keep` passed ones."""
        from embedline.flows.maintain import maintain_corpus

        if self.history:
            before = len(self._pruned())
            maintain_corpus(CORPUS, retention_days=0, keep_versions=keep, home=str(self.ws.home))
            STATS["pruned"] += len(self._pruned()) - before
            tags = embeddings.open_space(self.ws, SPACE).tags.list()
            assert not {f"run-{r}" for r in self._pruned(runs=True)} & set(tags)  # I6

    @rule(delay=st.floats(0.5, 10.0))
    def kill_an_ingest(self, delay):
        self.write_source()
        before = self._last_run_id()
        self._killed(["ingest", CORPUS, str(self.source), "--model", MODEL], delay)
        run = self._last_run()
        if run and run["run_id"] != before and run["status"] == "succeeded":  # it finished before the kill
            self._passed(run["run_id"])

    # -- helpers -------------------------------------------------------------------------------------
    def _killed(self, args: list[str], delay: float) -> None:
        """Run `embedline ARGS` and SIGKILL it after `delay` seconds unless it finished first."""
        exe = Path(sys.executable).with_name("embedline")
        env = {**os.environ, "EMBEDLINE_HOME": str(self.ws.home), "PREFECT_API_URL": self.api_url}
        process = subprocess.Popen(
            [str(exe), *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            process.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait()
            STATS["kills"] += 1

    def _ingest(self):
        STATS["ingests"] += 1
        # a tolerance below zero fails every chunk: `gates --set` refuses it, the catalog keeps it
        catalog.set_gates(self.ws, CORPUS, {"norm_tolerance": -1.0 if self.force_failure else 1e-3})
        try:
            summary = ingest(self.ws, self.source, CORPUS, MODEL)
        except ValidationFailed:
            STATS["failed_gates"] += 1
            assert self._last_run()["status"] == "failed"
        except BadInput as exc:  # the deletion guard, or an empty source
            STATS["refused"] += 1
            assert "delete" in str(exc) or "empty" in str(exc), exc
        else:
            assert not (self.force_failure and summary.chunks_embedded), "a run passed a gate it cannot pass"
            self._passed(summary.run_id)
            assert summary.promoted == (summary.version is not None and not self.held)
        finally:
            self.force_failure = False

    def _passed(self, run_id: int):
        with catalog.reading(self.ws) as con:
            quarantined = {d for (d,) in con.execute("SELECT doc_id FROM quarantine WHERE run_id = ?",
                                                       [run_id]).fetchall() if d is not None}
            wrote = con.execute("SELECT version FROM versions WHERE run_id = ?", [run_id]).fetchone()
        self.head = self.after_pass(quarantined)
        self.no_undone_rows_outlive_a_run(run_id, quarantined)
        if wrote and not self.held:  # a run that changed nothing makes no version and moves no alias
            self.history.append((wrote[0], dict(self.head)))

    def no_undone_rows_outlive_a_run(self, run_id: int, quarantined: set[str]) -> None:
        """I5: a run that passed after a rollback embedded again every document the undone runs wrote
        (but those it quarantined, which keep their chunks): no version it builds serves their rows."""
        if not self.undone or run_id in self.undone:
            return
        head = embeddings.dataset_at(self.ws, SPACE, catalog.clean_version(self.ws, SPACE))
        rows = head.to_table(columns=["doc_id", "run_id"]).to_pylist()
        kept = {r["doc_id"] for r in rows if r["run_id"] in self.undone} - quarantined
        if any(d.startswith("{not json") for d in self.defects):  # an unreadable id: nothing was deleted
            kept &= {r["id"] for r in self.records + self.junk}
        assert not kept, f"run {run_id} kept rows of rolled-back runs {sorted(self.undone)}: {sorted(kept)}"
        STATS["after_rollbacks"] += 1

    def _pruned(self, runs: bool = False) -> set[int]:
        """The space's versions (or their runs) maintenance marked pruned."""
        with catalog.reading(self.ws) as con:
            rows = con.execute(f"SELECT {'run_id' if runs else 'version'} FROM versions"
                               " WHERE space = ? AND pruned_at IS NOT NULL", [SPACE]).fetchall()
        return {r for (r,) in rows}

    def _last_run(self) -> dict | None:
        with catalog.reading(self.ws) as con:
            row = con.execute(
                "SELECT run_id, status, version FROM runs ORDER BY run_id DESC LIMIT 1"
            ).fetchone()
        return {"run_id": row[0], "status": row[1], "version": row[2]} if row else None

    def _last_run_id(self) -> int | None:
        run = self._last_run()
        return run["run_id"] if run else None

    # -- invariants ----------------------------------------------------------------------------------
    @invariant()
    def count_step(self):
        STATS["steps"] += 1

    @invariant()
    def prod_serves_only_passed_rows_and_exactly_the_expected_documents(self):
        alias = catalog.get_alias(self.ws, CORPUS)
        if alias is None:
            assert not self.history
            return
        rows = embeddings.dataset_at(self.ws, alias["space"], alias["version"]).to_table(
            columns=["doc_id", "chunk_index", "text", "run_id"]).to_pylist()
        with catalog.reading(self.ws) as con:
            passed = {
                r for (r,) in con.execute("SELECT run_id FROM runs WHERE status = 'succeeded'").fetchall()
            }
        assert {r["run_id"] for r in rows} <= passed  # I1
        first_chunks = {r["doc_id"]: r["text"] for r in rows if r["chunk_index"] == 0}
        assert set(first_chunks) == set(self.prod)  # I2
        for doc_id, text in first_chunks.items():
            assert self.prod[doc_id].strip().startswith(text), doc_id
        STATS["invariants"] += 2

    @invariant()
    def what_is_not_pruned_opens(self):
        with catalog.reading(self.ws) as con:
            kept = con.execute("SELECT version FROM versions WHERE space = ? AND pruned_at IS NULL",
                               [SPACE]).fetchall()
            served = con.execute("SELECT version FROM aliases WHERE space = ?", [SPACE]).fetchall()
        assert not {v for (v,) in served} & self._pruned()  # I6
        for (version,) in kept:
            embeddings.dataset_at(self.ws, SPACE, version).count_rows()
        STATS["invariants"] += 1

    @invariant()
    def counts_reconcile(self):
        with catalog.reading(self.ws) as con:
            bad = con.execute(
                "SELECT run_id FROM runs WHERE status IN ('succeeded', 'failed') AND docs_read <> docs_new"
                " + docs_changed + docs_unchanged + docs_quarantined + coalesce(docs_deferred, 0)").fetchall()
        assert bad == []  # I3
        STATS["invariants"] += 1

    @invariant()
    def catalog_equals_the_clean_head(self):
        version = catalog.clean_version(self.ws, SPACE)
        with catalog.reading(self.ws) as con:
            recorded = dict(
                con.execute("SELECT doc_id, chunk_count FROM documents WHERE space = ?", [SPACE]).fetchall()
            )
        if version is None:
            assert recorded == {} and self.head == {}
            return
        table = embeddings.dataset_at(self.ws, SPACE, version).to_table(columns=["doc_id"]).column("doc_id")
        counts: dict[str, int] = {}
        for doc_id in table.to_pylist():
            counts[doc_id] = counts.get(doc_id, 0) + 1
        assert recorded == counts  # I4
        assert set(recorded) == set(self.head)
        STATS["invariants"] += 1


def run_machine(tmp_path: Path, model_dir: Path, examples: int, steps: int, derandomize: bool) -> None:
    Integrity.model_dir, Integrity.base = model_dir, tmp_path
    run_state_machine_as_test(
        Integrity,
        settings=settings(
            max_examples=examples,
            stateful_step_count=steps,
            deadline=None,
            derandomize=derandomize,
            database=None,
            suppress_health_check=list(HealthCheck),
            print_blob=True,
        ),
    )


@pytest.mark.slow
def test_random_operation_sequences_keep_every_invariant(tmp_path, tiny_model_dir, prefect_api_url):
    Integrity.api_url = prefect_api_url
    before = dict(STATS)
    run_machine(tmp_path, tiny_model_dir, examples=4, steps=10, derandomize=True)
    steps = STATS["steps"] - before["steps"]
    print(f"integrity machine: {STATS}")
    assert steps > 0 and STATS["invariants"] - before["invariants"] == 5 * steps


SOAK_SECONDS = float(os.environ.get("EMBEDLINE_SOAK_SECONDS", "0"))


@pytest.mark.skipif(SOAK_SECONDS <= 0, reason="a soak runs only when asked: make soak SOAK_MINUTES=N")
def test_soak(tmp_path, tiny_model_dir, prefect_api_url):
    """`make soak SOAK_MINUTES=N`: machines back to back until the time is up; prints the figures."""
    Integrity.api_url = prefect_api_url
    started, rounds = time.monotonic(), 0
    while time.monotonic() - started < SOAK_SECONDS:
        # Hypothesis's first example of a run is its simplest (one rule over and over): run several.
        run_machine(tmp_path / f"round-{rounds}", tiny_model_dir, examples=5, steps=25, derandomize=False)
        rounds += 1
        print(f"soak: {time.monotonic() - started:.0f} s, {rounds} machines, {STATS}", flush=True)
    print(f"soak done: {rounds} machines, {STATS['steps']} steps, {STATS['invariants']} invariants checked, "
          f"{STATS['ingests']} ingests ({STATS['failed_gates']} failed a gate, {STATS['refused']} refused), "
          f"{STATS['kills']} killed with SIGKILL", flush=True)
    assert STATS["steps"] > 0

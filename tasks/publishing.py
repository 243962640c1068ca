"""Publish a batch: one Lance commit + tag, then one catalog transaction that records the run and,
if the batch passed its gates and prod may move, moves it; say why when it may not."""

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from embedline.errors import TransientError
from embedline.storage import catalog, embeddings, files
from embedline.workspace import Workspace
from embedline.tasks.batch import EmbeddedBatch
from embedline.tasks.changes import ChangePlan
from embedline.tasks.storage import keep_inherited_choice, storage_choice, storage_pending
from embedline.validation.suite import ValidationReport


@dataclass
class RunSummary:
    run_id: int
    corpus: str
    space: str
    status: str
    version: int | None
    promoted: bool
    docs_read: int
    docs_new: int
    docs_changed: int
    docs_unchanged: int
    docs_deleted: int
    docs_quarantined: int
    docs_deferred: int  # left for a later run by a cap on documents embedded per run (backfill batches)
    chunks_embedded: int
    tokens_embedded: int
    embed_seconds: float
    seconds: float
    failures: list[str]
    quarantine_reasons: list[str]
    notes: list[str] = field(default_factory=list)  # what an operator should know: prod held, not moved, ...
    precision: str = ""  # what the forward passes ran under (provenance)
    runtime: str = ""  # torch or openvino (provenance)

    def to_json(self) -> str:
        return json.dumps(asdict(self), default=str)


def known_metadata_types(ws: Workspace, corpus: str, space: str) -> dict[str, str]:
    """column → type of the corpus's metadata as the catalog keeps it, plus any column the space's
    clean head holds that the catalog does not know (a space written before it kept them, or a run that died
    between its Lance commit and its catalog record): a run never writes a column with another type."""
    types = catalog.metadata_types(ws, corpus)
    # the clean head's columns only: a failed first run's guesses must not outlive it
    for column, kind in embeddings.metadata_types(ws, space, catalog.clean_version(ws, space)).items():
        types.setdefault(column, kind)
    return types


def publish_batch(
    ws: Workspace, space: str, run_id: int, plan: ChangePlan, batch: EmbeddedBatch
) -> dict | None:
    """Write the batch and drop stale chunks as one Lance version tagged `run-<id>`, laid out as the
    space's storage choice says; None if nothing changed (neither documents nor the layout)."""
    storage = storage_choice(ws, space)
    if batch.chunk_count == 0 and not plan.replace_doc_ids and not storage_pending(ws, space, storage):
        return None
    keep_inherited_choice(ws, space, storage)
    return embeddings.write_version(
        ws, space, batch.schema(), batch.read_chunks(), plan.replace_doc_ids, tag=f"run-{run_id}",
        storage=storage,
    )


def record_run(
    ws: Workspace,
    corpus: str,
    space: str,
    run_id: int,
    plan: ChangePlan,
    batch: EmbeddedBatch,
    report: ValidationReport,
    version: dict | None,
    seconds: float,
    promote_to: str | None = "prod",
) -> RunSummary:
    """Record counts, documents, quarantine and the version; move `promote_to` if the gates passed."""
    counts = {**plan.counts, "chunks_embedded": batch.chunk_count, "tokens_embedded": batch.tokens,
              "embed_seconds": batch.seconds, "chunks_deleted": (version or {}).get("chunks_deleted", 0)}
    if version is not None:
        version = {**version, "validation": "passed" if report.passed else "failed",
                   "failures": "; ".join(report.failures) or None, "metrics": report.metrics}
    _save_quarantine(ws, run_id, plan.quarantined)
    outcome = catalog.finish_run(
        ws, run_id, counts=counts, seconds=seconds, documents_arrow=batch.read_documents(),
        deleted_doc_ids=plan.deleted_doc_ids, quarantined=plan.quarantined, version=version,
        promote_to=promote_to, metadata_types=plan.metadata_types, runtime=batch.runtime,
    )
    number = version["version"] if version else None
    return RunSummary(
        run_id=run_id,
        corpus=corpus,
        space=space,
        status="succeeded" if report.passed else "failed",
        version=version["version"] if version else None,
        promoted=outcome["promoted"],
        **{
            k: plan.counts[k]
            for k in (
                "docs_read",
                "docs_new",
                "docs_changed",
                "docs_unchanged",
                "docs_deleted",
                "docs_quarantined",
            )
        },
        docs_deferred=plan.counts.get("docs_deferred", 0),
        chunks_embedded=batch.chunk_count,
        tokens_embedded=batch.tokens,
        embed_seconds=round(batch.seconds, 3),
        seconds=round(seconds, 3),
        failures=report.failures,
        quarantine_reasons=[q["reason"] for q in plan.quarantined[:20]],
        notes=serving_notes(corpus, space, outcome["model"], number, report.passed, outcome, promote_to),
        precision=batch.precision,
        runtime=batch.runtime,
    )


def serving_notes(corpus: str, space: str, model: str, version: int | None, passed: bool, outcome: dict,
                  promote_to: str | None) -> list[str]:
    """Why prod did not move to this run's version, and what an operator can do about it."""
    prod, shown = outcome["prod"], version if version is not None else "VERSION"
    where = f"at {prod['space']} version {prod['version']}" if prod else "without a version"
    if not passed:
        return [f"prod stays {where}: this run's documents are not taken as current, and the next run "
                f"embeds and checks them again. Fix them, relax the gate (`embedline gates {corpus} --set "
                f"NAME=VALUE`), or serve version {shown} as it is "
                f"(`embedline promote {corpus} {shown} --space {space} --force`)"]
    if outcome["promoted"] or promote_to is None or prod is None:
        return []
    if prod["held"]:
        return [f"prod is held (rolled back) {where}: `embedline promote {corpus} {shown}` releases it"]
    if prod["space"] != space:
        return [
            f"prod serves {prod['space']}, not {space}: only `embedline refresh {corpus} --model {model}` "
            f"swaps models (or `embedline promote {corpus} {shown} --space {space}`)"
        ]
    return []


def staging_uri(ws: Workspace, run_id: int) -> str:
    """Where a run stages its documents, chunks and shard results: `<store>/staging/run-<id>`."""
    return files.open_store(ws).uri_of(f"staging/run-{run_id}")


def scratch_dir(ws: Workspace, run_id: int) -> Path:
    """A run's local scratch folder (the diff's DuckDB tables): never shared, swept like staging."""
    return ws.home / "scratch" / f"run-{run_id}"


def clear_staging(ws: Workspace) -> list[str]:
    """Remove the staging folders of every run that is no longer running (this one once it is recorded,
    failed ones, and ones a killed process left behind), in the file store, and their local scratch
    folders; returns the staging URIs removed. Called where a run ends: a store error only warns (naming
    the folder), never replaces its outcome."""
    local = list((ws.home / "scratch").glob("run-*"))  # listed before reading who runs (as below)
    try:
        store = files.open_store(ws)
        folders = store.list("staging")  # before reading who runs: a run starting now is not here
    except (OSError, TransientError) as err:
        print(f"warning: could not list {files.store_uri(ws)}/staging to clear old runs' staging ({err}); "
              "the next run clears it")
        store, folders = None, []
    running = {f"run-{run_id}" for run_id in catalog.running_run_ids(ws)}
    for path in local:
        if path.name not in running:
            shutil.rmtree(path, ignore_errors=True)
    stale = [key for key in folders if key.startswith("staging/run-") and key.split("/")[1] not in running]
    removed = []
    for key in stale:
        try:
            store.delete(key)
            removed.append(store.uri_of(key))
        except (OSError, TransientError) as err:
            print(f"warning: could not clear {store.uri_of(key)} ({err}); the next run clears it")
    return removed


def quarantine_key(run_id: int) -> str:
    return f"quarantine/run-{run_id}.jsonl"


def _save_quarantine(ws: Workspace, run_id: int, rows: list[dict]) -> None:
    """Keep every rejected record whole in the file store; the catalog row holds a truncated copy."""
    if not rows:
        return
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    files.open_store(ws).write_text(quarantine_key(run_id), text)


def read_quarantine(ws: Workspace, corpus: str, run_id: int | None = None) -> list[dict]:
    """The whole records a run of `corpus` rejected, with why (`run_id` None: its latest run that
    rejected any), read from the file store; each row carries its run_id."""
    from embedline.errors import NotFound

    runs = catalog.quarantined_runs(ws, corpus)
    if run_id is None and not runs:
        return []
    chosen = runs[-1] if run_id is None else run_id
    if chosen not in runs:
        raise NotFound(f"run {chosen} of corpus {corpus!r} quarantined no records: runs that did: "
                       f"{', '.join(map(str, runs)) or 'none'}")
    lines = files.open_store(ws).read_text(quarantine_key(chosen)).splitlines()
    return [{"run_id": chosen, **json.loads(line)} for line in lines if line]

"""ingest-corpus: read → diff → chunk + embed → publish → evaluate → validate → record →
promote.

The version is written before it is validated so that a failing one stays inspectable (its tag stays);
the space's head then goes back to its clean head, so only rows that passed are ever built on, and the
alias moves only within its own space, only when not held, and only if the gates passed.
"""

import time

from pydantic import SecretStr
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from embedline.flows.embed import embed_plan
from embedline.flows.reports import publish_validation_artifacts, publish_version_artifacts
from embedline.flows.retries import retry_transient
from embedline.storage import catalog, maintenance, store_identity
from embedline.storage.locks import space_lock
from embedline.names import check_name, space_name
from embedline.workspace import Workspace
from embedline.tasks import changes, chunking, evaluation, publishing, refresh
from embedline.tasks.embedding import resolve_runtime
from embedline.errors import ValidationFailed
from embedline.tasks.gates import run_gates
from embedline.tasks.models import DEFAULT_MODEL, resolve_model
from embedline.tasks.sources import FieldMap, canonical_source
from embedline.validation.gate import require
from embedline.validation.suite import Expectations

plan_changes = task(changes.plan_changes, name="plan-changes", cache_policy=NO_CACHE)
clean_head = task(maintenance.restore_clean_head, name="restore-clean-head", cache_policy=NO_CACHE)
publish = task(publishing.publish_batch, name="publish-version", cache_policy=NO_CACHE, retries=2,
               retry_condition_fn=retry_transient)
record = task(publishing.record_run, name="record-run", cache_policy=NO_CACHE, retries=2,
              retry_condition_fn=retry_transient)
evaluate = task(evaluation.evaluate_version, name="evaluate-version", cache_policy=NO_CACHE)
validate = task(evaluation.validate_with_report, name="validate-batch", cache_policy=NO_CACHE)


@flow(name="ingest-corpus", log_prints=True)
def ingest_corpus(
    source: str | SecretStr,
    corpus: str,
    model: str | None = None,
    id_field: str = "id",
    text_field: str = "text",
    title_field: str = "title",
    keep_deleted: bool = False,
    overlap: int = 32,
    chunk_tokens: int | None = None,
    promote: bool = True,
    shard_size: int | None = None,
    precision: str | None = None,
    max_embed: int | None = None,
    order: str = "source",
    gates: dict | None = None,
    default_gates: dict | None = None,
    max_delete_share: float = 0.5,
    initial_model: str | None = None,
    home: str | None = None,
) -> publishing.RunSummary:
    """`model`: the registered model to embed with; None means the one prod serves (for a new corpus:
    `initial_model`, else the default model), so a scheduled run never undoes a model swap. A run with
    another model writes that model's space and never moves prod (only `refresh` swaps), and no run
    moves a prod that a rollback holds. `shard_size`: documents to embed above which the work is split
    into shards run in parallel (default `$EMBEDLINE_SHARD_SIZE` or 50,000; 0 never splits).
    `precision`: fp32|bf16|fp16, else the device's policy (`$EMBEDLINE_PRECISION`); given, every shard
    embeds under it, else under its worker's policy (precision is recorded on the run, not part of the
    model key: switching it re-embeds nothing). `max_embed`: embed at most this many documents, `order`
    deciding which (source, recent, residual); the rest are counted as deferred, for the next run
    (backfill batches). `gates`: validation thresholds for this run only; `default_gates`: the
    deployment's (corpora.yaml), below those set with `embedline gates --set` (see `tasks.gates`).
    `max_delete_share`: a run that would delete more than this share
    of the space's documents is refused (1.0 allows all). `initial_model`: the model a new corpus starts
    with (deploy/corpora.yaml's `model`); ignored once prod serves one. `source` may be a `SecretStr`
    (the API passes one when it carries a credential): Prefect stores and shows it as ********, and the
    catalog keeps it redacted."""
    started = time.perf_counter()
    check_name(corpus, "corpus name")
    ws = Workspace.from_env(home).ensure()
    if max_embed is not None:  # here, not after the source's diff
        refresh.check_backfill(max_embed, order, what="max_embed")
    fields = FieldMap(id_field, text_field, title_field)
    source = canonical_source(source.get_secret_value() if isinstance(source, SecretStr) else source)
    model = model or catalog.serving_model(ws, corpus) or initial_model or DEFAULT_MODEL
    spec, device = resolve_runtime(
        resolve_model(ws, model), precision=precision
    )  # 1. the model's identity on this machine
    params = chunking.params_for(spec, overlap, chunk_tokens)
    expect = Expectations(
        spec.out_dim, spec.key(), spec.normalize, **run_gates(ws, corpus, gates, default_gates)
    )
    store_identity.bind_file_store(ws, evaluation.kept_files)  # the catalog's file store, or nothing is done
    evaluation.require_golden_queries(ws, corpus, expect.min_golden_recall > 0)  # before embedding
    space = space_name(corpus, model)
    with space_lock(ws, space) as lease:  # 2. one writer per space
        store_identity.require_own_store(ws)  # this catalog's Lance store, or no run is recorded
        run_id = catalog.start_run(ws, corpus, model, space, source, fields.__dict__, spec.key(),
                                   params.key(), device, spec.precision)
        staging = publishing.staging_uri(ws, run_id)  # the file store: shards on other machines reach it
        try:
            clean_head(ws, space)  # 3. build on passed rows only: undo a failed or killed run's commit
            known = catalog.space_documents(ws, space)  # what the clean head holds (streamed by the diff)
            plan = plan_changes(
                source,
                fields,
                known,
                spec.key(),
                params.key(),
                staging,
                keep_deleted,  # 4. diff
                max_delete_share,
                publishing.known_metadata_types(ws, corpus, space),
                scratch=publishing.scratch_dir(ws, run_id),  # the diff's tables: local, swept when it ends
            )
            if max_embed:
                plan = changes.defer_beyond(plan, max_embed, refresh.embed_priority(ws, corpus, model, order))
            embedded = embed_plan(
                ws,
                plan,
                model,
                spec,
                device,
                params,
                run_id,
                staging,
                shard_size,  # 5. chunk + embed
                precision=precision,
            )
            lease.confirm()  # still this space's writer (a Postgres lock ends with its connection)
            version = publish(ws, space, run_id, plan, embedded)  # 6. one Lance version, tagged, indexed
            metrics = evaluate(ws, corpus, space, embedded, version, spec, expect)  # 7. drift + golden recall
            report = validate(ws, space, f"run-{run_id}", embedded.read_chunks(), plan.counts,  # 8. GX gates
                              embedded.chunk_count, expect, metrics)  # results + Data Docs: the file store
            lease.confirm()
            summary = record(
                ws,
                corpus,
                space,
                run_id,
                plan,
                embedded,
                report,
                version,  # 9. catalog; alias if passed
                time.perf_counter() - started,
                "prod" if promote else None,
            )
            clean_head(ws, space)  # 10. a failed version leaves the head at once (its tag stays)
        except BaseException as exc:
            catalog.fail_run(ws, run_id, f"{type(exc).__name__}: {exc}")
            raise
        finally:
            publishing.clear_staging(ws)
    create_table_artifact(
        [summary.__dict__], key=f"run-summary-{corpus.replace('_', '-')}", description=f"ingest run {run_id}"
    )
    publish_validation_artifacts(report, space, run_id)
    try:  # pictures of a recorded run: a failed plot is logged, it never fails the run
        publish_version_artifacts(ws, space, run_id, summary.version, plan.changed_doc_ids)
    except Exception as exc:
        get_run_logger().warning(f"plots of {space} run {run_id} failed, the run stands: {exc!r}")
    for note in summary.notes:  # 11. why prod did not move, and what an operator can do
        print(note)
    try:
        require(report)  # a failed gate fails the flow run (after it is recorded)
    except ValidationFailed as exc:
        exc.summary = summary  # the CLI prints the recorded run before the error
        raise
    return summary

"""refresh-model and backfill-corpus: change a corpus's model without search going dark.

1. fit adapters on a sample embedded by the new model and paired with the old vectors it already has
   (new-model queries are served at once, over the old index, through the new→old adapter);
2. backfill the corpus into the new space: the ingest flow, not promoted, in committed batches;
3. swap prod to it only if the whole version passes the same gates, holds exactly the documents prod
   serves (ids and content, checked in the swap's transaction: else a catch-up batch and a retry), and
   prod is not held by a rollback.
A refresh to the model prod already serves (its files registered again) does nothing; other files under
that name are refused at `models add`, so they come here under a new name.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

from prefect import flow, task
from prefect.deployments import run_deployment
from prefect.cache_policies import NO_CACHE

from embedline.flows.ingest import ingest_corpus
from embedline.flows.progress import Progress
from embedline.flows.shards import deployment_exists
from embedline.storage import catalog, store_identity
from embedline import defaults
from embedline.errors import BadInput, NotFound, SwapStale
from embedline.names import space_name
from embedline.redaction import is_redacted
from embedline.settings import settings_environment
from embedline.workspace import Workspace
from embedline.tasks import evaluation, refresh

fit_adapters = task(refresh.fit_refresh_adapters, name="fit-adapters", cache_policy=NO_CACHE)
swap = task(refresh.swap_if_proven, name="swap-if-proven", cache_policy=NO_CACHE)
revalidate = task(evaluation.revalidate_version, name="revalidate-version", cache_policy=NO_CACHE)


# Swaps tried in one backfill, a catch-up batch before each retry: an ingest that changes prod after the
# last batch (a scheduled run) is caught up with; prod changing after every one of them is reported.
SWAP_ATTEMPTS = 3


@flow(name="backfill-corpus", log_prints=True)
def backfill_corpus(corpus: str, model: str, batch_docs: int = defaults.BATCH_DOCS,
                    order: str = "source", home: str | None = None) -> dict | None:
    """Embed the corpus into the new space `batch_docs` documents per committed run, in `order`
    (source, recent, residual), so a crash loses one batch at most and a re-run resumes; swap prod
    once nothing is left, the whole version passes the gates and it read the source after prod last
    changed (else a catch-up batch and another try, `SWAP_ATTEMPTS` in all)."""
    refresh.check_backfill(batch_docs, order)
    ws = Workspace.from_env(home)
    space = space_name(corpus, model)
    for attempt in range(1, SWAP_ATTEMPTS + 1):
        recorded = recorded_source(ws, corpus)  # each try: an ingest meanwhile may have moved the source
        version = embed_batches(ws, recorded, model, batch_docs, order)  # 1. batches until none is left
        if version is not None:  # 2. each batch passed on its own rows (some maybe in an earlier process)
            _, version, report = revalidate(ws, corpus, version, space)
            if not report.passed:
                print(f"backfilled version {version} failed its gates: prod stays "
                      f"({'; '.join(report.failures)})")
                return None
        try:
            return swap(ws, corpus, model, version)  # 3. only if prod did not change since its last read
        except SwapStale as exc:
            if attempt == SWAP_ATTEMPTS:
                raise SwapStale(f"the swap was refused {SWAP_ATTEMPTS} times, a catch-up batch before "
                                f"each retry; run the backfill again once prod's ingests are quieter: {exc}"
                                ) from exc
            print(f"prod changed since the last batch, catching up ({exc})")


def recorded_source(ws: Workspace, corpus: str) -> dict:
    """The corpus's catalog row: the source and fields its last successful run read."""
    recorded = catalog.get_corpus(ws, corpus)
    if recorded is None:
        raise NotFound(f"corpus {corpus!r} is not in the catalog")
    if is_redacted(recorded["source"]):
        raise BadInput(
            f"corpus {corpus!r} was ingested from a source with credentials, recorded redacted"
            f" ({recorded['source']}): give them through the environment or a DuckDB secret instead"
            " (README: Credentials) and ingest once more, then backfill"
        )
    return recorded


def embed_batches(ws: Workspace, recorded: dict, model: str, batch_docs: int, order: str) -> int | None:
    """Ingest runs into the new space, unpromoted, `batch_docs` documents each, until none is deferred;
    the version the last one left (None: nothing new to embed)."""
    corpus, fields = recorded["name"], json.loads(recorded["fields"])
    space, total = (
        space_name(corpus, model),
        catalog.space_progress(ws, catalog.get_alias(ws, corpus)["space"])["documents"],
    )
    key = f"backfill-{corpus}-{model}".replace("_", "-")
    progress = Progress(total, key=key, description=f"backfill {corpus} → {model}")
    batches = 0
    try:
        while True:
            summary = ingest_corpus(
                recorded["source"],
                corpus,
                model,
                fields["id_field"],
                fields["text_field"],
                fields["title_field"],
                promote=False,
                max_embed=batch_docs,
                order=order,
                home=str(ws.home),
            )
            batches += 1
            progress(catalog.space_progress(ws, space)["documents"], 0)
            print(f"backfill batch {batches}: {summary.docs_new + summary.docs_changed} embedded, "
                  f"{summary.docs_deferred} left")
            if summary.docs_deferred == 0:
                break
    finally:
        progress.close()
    return summary.version or catalog.latest_passed_version(ws, space)


@flow(name="refresh-model", log_prints=True)
def refresh_model(corpus: str, model: str, sample: int = defaults.SAMPLE, wait: bool = False,
                  batch_docs: int = defaults.BATCH_DOCS, order: str = "source",
                  query_sample: int = defaults.QUERY_SAMPLE,
                  home: str | None = None, passage_sample: int = defaults.PASSAGE_SAMPLE,
                  catalog_id: str | None = None):
    """`catalog_id`: the catalog a `models add` event came from (the trigger passes it): a worker whose
    home or settings reach another catalog refuses, rather than refresh that one."""
    refresh.check_backfill(batch_docs, order)  # before the fit: a detached backfill would fail unseen
    ws = Workspace.from_env(home)
    store_identity.require_catalog(ws, catalog_id)
    if catalog.serving_model(ws, corpus) == model:
        print(f"{corpus} already serves {model}: nothing to refresh")
        return None, None
    # from here on, `--model NEW` queries are served
    fitted = fit_adapters(ws, corpus, model, sample, query_sample, passage_sample)
    if not wait:
        start_background_backfill(ws, corpus, model, batch_docs, order)
        return fitted, None
    return fitted, backfill_corpus(corpus, model, batch_docs, order, home=str(ws.home))


def start_background_backfill(ws: Workspace, corpus: str, model: str,
                              batch_docs: int = defaults.BATCH_DOCS,
                              order: str = "source") -> str:
    """Start the backfill without waiting for it, and say where to follow it. Where the Prefect API
    serves the corpus's `backfill-<corpus>` deployment (`make serve`, compose, k8s), it is a flow run
    of that deployment, on whichever cpu-pool worker takes it; else `embedline backfill` detached from
    this process on this machine, its log under <home>/logs."""
    deployment = f"backfill-corpus/backfill-{corpus}"
    if deployment_exists(deployment):
        parameters = {"corpus": corpus, "model": model, "batch_docs": batch_docs, "order": order}
        if ws.settings.catalog_url is None:  # the catalog is a file in this home: the worker reads it there
            parameters["home"] = str(ws.home)
        run = run_deployment(deployment, parameters=parameters, timeout=0)
        where = f"flow run {run.name} of deployment {deployment}"
    else:
        where = str(_backfill_here(ws, corpus, model, batch_docs, order))
    print(f"backfilling {corpus} with {model} in the background: {where}")
    return where


def _backfill_here(ws: Workspace, corpus: str, model: str, batch_docs: int, order: str) -> Path:
    logs = ws.home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"backfill-{corpus}-{model}.log"
    command = [sys.executable, "-m", "embedline.flows.cli", "backfill", corpus, "--model", model,
               "--batch-docs", str(batch_docs), "--order", order, "--home", str(ws.home)]
    env = {**os.environ, **settings_environment()}  # what `embedline.connect(...)` was given, too
    with log.open("ab") as out:
        subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         start_new_session=True)
    return log

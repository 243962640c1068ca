"""refresh-model and backfill-corpus: change a corpus's model without search going dark.

1. fit adapters on a sample embedded by both models (new-model queries are served at once, over the
   old index, through the new→old adapter); 2. backfill the corpus into the new space (the ingest
   flow, not promoted); 3. swap prod to it only if its version passed the same gates.
"""

import json
import subprocess
import sys
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.ingest import ingest_corpus
from storage import catalog
from storage.errors import NotFound
from storage.workspace import Workspace
from tasks import refresh

fit_adapters = task(refresh.fit_refresh_adapters, name="fit-adapters", cache_policy=NO_CACHE)
swap = task(refresh.swap_if_proven, name="swap-if-proven", cache_policy=NO_CACHE)


@flow(name="backfill-corpus", log_prints=True)
def backfill_corpus(corpus: str, model: str, home: str | None = None) -> dict | None:
    ws = Workspace.from_env(home)
    recorded = catalog.get_corpus(ws, corpus)
    if recorded is None:
        raise NotFound(f"corpus {corpus!r} is not in the catalog")
    fields = json.loads(recorded["fields"])
    summary = ingest_corpus(recorded["source"], corpus, model, fields["id_field"], fields["text_field"],
                            fields["title_field"], promote=False, home=str(ws.home))
    return swap(ws, corpus, model, summary.version)


@flow(name="refresh-model", log_prints=True)
def refresh_model(corpus: str, model: str, sample: int = 5000, wait: bool = False, home: str | None = None):
    ws = Workspace.from_env(home)
    fitted = fit_adapters(ws, corpus, model, sample)  # from here on, `--model NEW` queries are served
    if not wait:
        start_background_backfill(ws, corpus, model)
        return fitted, None
    return fitted, backfill_corpus(corpus, model, home=str(ws.home))


def start_background_backfill(ws: Workspace, corpus: str, model: str) -> Path:
    """Run `embedline backfill` detached from this process; its log goes under <home>/logs."""
    logs = ws.home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"backfill-{corpus}-{model}.log"
    exe = Path(sys.executable).with_name("embedline")
    with log.open("ab") as out:
        subprocess.Popen([str(exe), "backfill", corpus, "--model", model, "--home", str(ws.home)],
                         stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    return log

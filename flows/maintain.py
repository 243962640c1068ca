"""maintain-corpus: compact, re-index and clean every space of a corpus (meant for a nightly schedule).

Each space is maintained under its lock, like an ingest: compaction racing a run's commit could
conflict, or fold in rows that are about to be undone.
"""

from datetime import timedelta

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from embedline.errors import BadInput
from embedline.flows.retries import retry_transient
from embedline.storage import catalog, maintenance
from embedline.storage.locks import space_lock
from embedline.names import check_name
from embedline.tasks import publishing
from embedline.tasks.storage import storage_choice
from embedline.workspace import Workspace

MAX_RETENTION_DAYS = 36_500  # a century: past it `timedelta` overflows
MAX_KEEP_VERSIONS = 1_000_000
maintain_space = task(maintenance.maintain_space, name="maintain-space", cache_policy=NO_CACHE, retries=2,
                      retry_condition_fn=retry_transient)


def check_settings(retention_days: float, keep_versions: int) -> None:
    """`BadInput` unless both are in range (the API checks before Prefect coerces "3" or True to 3)."""
    if not (isinstance(retention_days, int | float) and 0 <= retention_days <= MAX_RETENTION_DAYS):
        raise BadInput(f"retention_days={retention_days!r}: give days from 0 to {MAX_RETENTION_DAYS:,}")
    if not (isinstance(keep_versions, int) and not isinstance(keep_versions, bool)
            and 1 <= keep_versions <= MAX_KEEP_VERSIONS):
        raise BadInput(f"keep_versions={keep_versions!r}: give a whole number, 1 to {MAX_KEEP_VERSIONS:,}")


@flow(name="maintain-corpus", log_prints=True)
def maintain_corpus(corpus: str, retention_days: float = 7, keep_versions: int = 10,
                    home: str | None = None) -> list[str]:
    """Versions older than `retention_days` go, but each space's newest `keep_versions` passed ones (what
    rollback and time travel reach) and every version an alias serves."""
    ws = Workspace.from_env(home)
    check_settings(retention_days, keep_versions)
    spaces = sorted({v["space"] for v in catalog.list_versions(ws, check_name(corpus, "corpus name"))})
    lines = []
    for space in spaces:
        with space_lock(ws, space):  # while it is held, an ingest of this space fails fast (SpaceBusy)
            choice = storage_choice(ws, space)
            done = maintain_space(ws, space, timedelta(days=retention_days), choice, keep_versions)
        lines.append(
            f"{space}: versions {done['versions_before']} → {done['versions_after']}, "
            f"{done['bytes_removed']:,} bytes removed, tags kept: {len(done['tags'])}"
            + (f"; {done['pruned']} old run version(s) pruned" if done["pruned"] else "")
            + (f"; {done['abandoned']} killed run(s) marked abandoned" if done["abandoned"] else "")
            + (
                f"; head laid out as {choice.vectors} + {choice.index_type} (prod moves to it with the "
                "next run)"
                if done["relaid"]
                else ""
            )
        )
    if spaces:
        publishing.clear_staging(ws)  # killed runs' staging (full texts, vectors) goes with them
    return lines

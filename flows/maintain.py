"""maintain-corpus: compact, re-index and clean every space of a corpus (meant for a nightly schedule)."""

from datetime import timedelta

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from embedline.storage import catalog, maintenance
from embedline.names import check_name
from embedline.workspace import Workspace

maintain_space = task(maintenance.maintain_space, name="maintain-space", cache_policy=NO_CACHE, retries=2)


@flow(name="maintain-corpus", log_prints=True)
def maintain_corpus(corpus: str, retention_days: float = 7, home: str | None = None) -> list[str]:
    ws = Workspace.from_env(home)
    spaces = sorted({v["space"] for v in catalog.list_versions(ws, check_name(corpus, "corpus name"))})
    lines = []
    for space in spaces:
        done = maintain_space(ws, space, timedelta(days=retention_days))
        lines.append(f"{space}: versions {done['versions_before']} → {done['versions_after']}, "
                     f"{done['bytes_removed']:,} bytes removed, tags kept: {len(done['tags'])}")
    return lines

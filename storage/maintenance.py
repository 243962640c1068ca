"""Upkeep of a space: keep its head clean, compact fragments, fold new rows into indexes, drop old
untagged versions.

Every run's version is tagged (`run-<n>`) and aliases only point at run versions, so cleaning
untagged versions never removes a version a user can name. See STACK-NOTES for the tag trap that
`forever()` avoids: optimize() must not try to prune tagged versions itself.

A space's clean head (kept in the catalog) is the Lance version holding exactly what passed its gates.
Runs merge onto the table's latest version, so before a run writes, and after one fails, the latest
version must be the clean head: otherwise a failed (or killed) run's rows would ride along into the
next version that passes, and serve.
"""

from datetime import timedelta

from embedline.errors import CatalogMismatch
from embedline.storage import catalog, embeddings
from embedline.storage.embeddings import open_space
from embedline.storage.index import forever, refresh_indexes, vector_index_type
from embedline.storage.vectors import StorageChoice
from embedline.workspace import Workspace


def restore_clean_head(ws: Workspace, space: str) -> int | None:
    """If the space's latest version is not its clean head, restore the clean head's content as a new
    latest version (no clean head yet: empty the table) and record that version as the clean head.

    Returns the new version, or None when the head was already clean. Call it holding the space's lock.
    A failed run's tagged version stays readable for inspection; only the head moves.

    Documents the restored head holds but the catalog does not list are adopted as orphans, so the next
    run replaces or deletes them: before schema 8, failed runs applied their deletions to `documents`,
    and the first restore after an upgrade brings those documents' chunks back.
    """
    latest = embeddings.latest_version(ws, space)
    clean = catalog.clean_version(ws, space)
    if latest is None or latest == clean:
        return None
    if clean is None:
        _require_known_runs(ws, space)
    restored = embeddings.restore_version(ws, space, clean)
    held = embeddings.doc_ids(ws, space, restored) if clean is not None else None
    catalog.restored_head(ws, space, restored, held)
    return restored


def _require_known_runs(ws: Workspace, space: str) -> None:
    """Refuse to empty a table whose tagged runs this catalog never started: it is another catalog's
    (a host without the shared EMBEDLINE_CATALOG_URL, pointed at the shared Lance), not a failed first run."""
    known = catalog.ended_run_ids(ws, space)
    foreign = sorted(t for t in embeddings.open_space(ws, space).tags.list()
                     if t.startswith("run-") and t[4:].isdigit() and int(t[4:]) not in known)
    if foreign:
        raise CatalogMismatch(
            f"space {space!r} in {ws.lance_uri} has versions of runs this catalog never started "
            f"({', '.join(foreign[:3])}{'...' if len(foreign) > 3 else ''}) and no clean head: check "
            "EMBEDLINE_CATALOG_URL (every host must share one catalog); nothing was changed")


def maintain_space(ws: Workspace, space: str, retention: timedelta,
                   storage: StorageChoice | None = None) -> dict:
    """Compact and clean the space (hold its lock): the head is made clean first, so compaction never
    folds a failed run's rows in, and the compacted version becomes the clean head. With `storage`, the
    head is laid out as chosen first (vectors converted, vector index of the chosen kind); prod moves to
    that layout with the next run, which validates it. Runs still marked running died (the lock is
    held): they are marked abandoned, so the caller's `clear_staging` removes their staging."""
    abandoned = catalog.abandon_runs(ws, space)
    restore_clean_head(ws, space)
    table = open_space(ws, space)
    before = len(table.list_versions())
    relaid = storage is not None and _lay_out(table, storage)
    table.optimize(cleanup_older_than=forever())  # compaction + index fold-in; prunes nothing
    table.checkout_latest()
    catalog.set_clean_version(ws, space, table.version)  # before cleanup may remove the old clean head
    stats = table.to_lance().cleanup_old_versions(older_than=retention, error_if_tagged_old_versions=False)
    table.checkout_latest()
    return {
        "space": space,
        "versions_before": before,
        "versions_after": len(table.list_versions()),
        "bytes_removed": stats.bytes_removed,
        "tags": sorted(table.tags.list()),
        "relaid": relaid,
        "abandoned": abandoned,
    }


def _lay_out(table, storage: StorageChoice) -> bool:
    """Convert the table's vectors and rebuild its vector index as `storage` says; True if it changed."""
    converted = embeddings.convert_vectors(table, storage.vectors)
    kind = vector_index_type(table)
    if converted or kind not in (None, storage.index_type):
        refresh_indexes(table, index_type=storage.index_type)
        return True
    return False

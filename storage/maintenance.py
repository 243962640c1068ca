"""Upkeep of a space: keep its head clean, compact fragments, fold new rows into indexes, drop old
versions no one can reach.

Every run's version is tagged (`run-<n>`) and aliases only point at run versions, so cleaning
untagged versions never removes a version a user can name. A run version leaves when the catalog marks it
pruned (older than the retention and than the space's newest `keep` passed versions, and no alias's):
its tag is dropped, then its data. See STACK-NOTES for the tag trap that `forever()` avoids: optimize()
must not try to prune tagged versions itself.

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
from embedline.storage.store_identity import require_known_runs, require_own_store
from embedline.storage.vectors import StorageChoice
from embedline.workspace import Workspace


def restore_clean_head(ws: Workspace, space: str) -> int | None:
    """If the space's latest version is not its clean head, restore the clean head's content as a new
    latest version (no clean head yet: empty the table) and record that version as the clean head.

    Returns the new version, or None when the head was already clean. Call it holding the space's lock,
    once `store_identity.require_own_store` said the store is this catalog's.
    A failed run's tagged version stays readable for inspection; only the head moves.

    Documents the restored head holds but the catalog does not list are adopted as orphans, so the next
    run replaces or deletes them: before schema 8, failed runs applied their deletions to `documents`,
    and the first restore after an upgrade brings those documents' chunks back.
    """
    latest = embeddings.latest_version(ws, space)
    clean = catalog.clean_version(ws, space)
    _require_named_versions(ws, space, clean, latest is not None)
    if latest is None or latest == clean:
        return None
    if clean is None:  # refuse to empty a table of another catalog's runs: not a failed first run
        require_known_runs(ws, space, catalog.ended_run_ids(ws, space), " and no clean head")
    restored = embeddings.restore_version(ws, space, clean)
    held = embeddings.doc_ids(ws, space, restored) if clean is not None else None
    catalog.restored_head(ws, space, restored, held)
    return restored


def _require_named_versions(ws: Workspace, space: str, clean: int | None, table_exists: bool) -> None:
    """Refuse a catalog whose clean head or aliases name versions the table no longer holds: it is older
    than the table (restored from a backup taken before `maintain` pruned them), and a run would build on,
    or serve, data that is gone. No table at all, for a space the catalog has a clean head of, is the
    wrong store (a run would trust the catalog's documents and embed only the changed ones)."""
    if not table_exists:
        if clean is not None:
            raise CatalogMismatch(
                f"the catalog has a clean head (version {clean}) of space {space!r}, but {ws.lance_uri} has "
                "no such table: check EMBEDLINE_LANCE_URI (every host must share one store); nothing was "
                "changed")
        return
    named = {a["version"] for a in catalog.list_aliases(ws) if a["space"] == space} | {clean} - {None}
    missing = sorted(v for v in named if not embeddings.has_version(ws, space, v))
    if missing:
        raise CatalogMismatch(
            f"the catalog names versions {missing} of space {space!r} (its clean head or an alias) that are "
            f"no longer in {ws.lance_uri}: the catalog is older than the table (restored from a backup taken "
            "before `maintain` pruned them?); nothing was changed: restore a newer backup of the catalog")


def maintain_space(ws: Workspace, space: str, retention: timedelta,
                   storage: StorageChoice | None = None, keep_versions: int = 10) -> dict:
    """Compact and clean the space (hold its lock): the head is made clean first, so compaction never
    folds a failed run's rows in, and the compacted version becomes the clean head. With `storage`, the
    head is laid out as chosen first (vectors converted, vector index of the chosen kind); prod moves to
    that layout with the next run, which validates it. Runs still marked running died (the lock is
    held): they are marked abandoned, so the caller's `clear_staging` removes their staging. Run versions
    older than `retention` and than the newest `keep_versions` passed ones, and no alias's, are pruned."""
    require_own_store(ws)  # this catalog's store, or nothing changes
    abandoned = catalog.abandon_runs(ws, space)
    restore_clean_head(ws, space)
    table = open_space(ws, space)
    before = len(table.list_versions())
    relaid = storage is not None and _lay_out(table, storage)
    table.optimize(cleanup_older_than=forever())  # compaction + index fold-in; prunes nothing
    table.checkout_latest()
    catalog.set_clean_version(ws, space, table.version)  # before cleanup may remove the old clean head
    pruned = _prune(ws, table, space, keep_versions, retention)
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
        "pruned": pruned,
    }


def _prune(ws: Workspace, table, space: str, keep: int, retention: timedelta) -> int:
    """Drop the tags of the versions the catalog marks pruned (marked first: a maintain killed in between
    leaves tags the next one drops, never a catalog row naming removed data); returns how many it marked."""
    marked, pruned = catalog.prune_versions(ws, space, keep, catalog.now() - retention)
    tags = table.tags.list()
    for version, tag in pruned:  # a reused run id's tag names a newer version: it stays
        if tag in tags and version in (None, tags[tag]["version"]):
            table.tags.delete(tag)
    return marked


def _lay_out(table, storage: StorageChoice) -> bool:
    """Convert the table's vectors and rebuild its vector index as `storage` says; True if it changed."""
    converted = embeddings.convert_vectors(table, storage.vectors)
    kind = vector_index_type(table)
    if converted or kind not in (None, storage.index_type):
        refresh_indexes(table, index_type=storage.index_type)
        return True
    return False

"""Nightly upkeep of a space: compact fragments, fold new rows into indexes, drop old untagged versions.

Every run's version is tagged (`run-<n>`) and aliases only point at run versions, so cleaning
untagged versions never removes a version a user can name. See STACK-NOTES for the tag trap that
`forever()` avoids: optimize() must not try to prune tagged versions itself.
"""

from datetime import timedelta

from embedline.storage.embeddings import open_space
from embedline.storage.index import forever
from embedline.workspace import Workspace


def maintain_space(ws: Workspace, space: str, retention: timedelta) -> dict:
    table = open_space(ws, space)
    before = len(table.list_versions())
    table.optimize(cleanup_older_than=forever())  # compaction + index fold-in; prunes nothing
    stats = table.to_lance().cleanup_old_versions(older_than=retention, error_if_tagged_old_versions=False)
    table.checkout_latest()
    return {
        "space": space,
        "versions_before": before,
        "versions_after": len(table.list_versions()),
        "bytes_removed": stats.bytes_removed,
        "tags": sorted(table.tags.list()),
    }

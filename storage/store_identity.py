"""Which catalog a Lance store belongs to: every host must pair the same catalog with the same store.

The catalog has an id (made by its migration); the store keeps it in `_embedline/catalog-id` under its
root (LanceDB lists only `<name>.lance` folders as tables, so that file never shows up as one). Before a
run writes, the two must agree. A host pointed at another store (a stale local `<home>/lance`, another
team's bucket, an empty prefix) would otherwise create a new space there, a new model's backfill say,
and a swap to it would serve a table no other host can open.

A store without the file is bound to the catalog at its first run: when it holds every table the catalog
serves and only tables of runs the catalog started (an empty store and a catalog that serves nothing yet,
or a store written before catalogs had ids). A Lance on gs:// or az:// is not checked (the file store
reaches local folders and S3 only).
"""

from embedline.errors import CatalogMismatch
from embedline.storage import catalog, embeddings, files
from embedline.workspace import Workspace

MARKER = "_embedline/catalog-id"


def require_own_store(ws: Workspace) -> None:
    """`CatalogMismatch`, before anything is written, unless the Lance store is this catalog's (binding
    a store that has no catalog id yet; see the module)."""
    root = ws.lance_uri.split("?", 1)[0]
    if files.is_remote(root) and not root.startswith(("s3://", "s3a://")):
        return  # the file store reaches local folders and S3 only: a Lance on gs:// or az:// is not checked
    own = catalog.catalog_id(ws)
    store = files.Store(root, ws.lance_storage_options)
    found = store.read_text(MARKER).strip() if store.exists(MARKER) else ""  # empty: killed mid-write
    if found == own:
        return
    if found:
        raise CatalogMismatch(
            f"{ws.lance_uri} is the Lance store of another catalog (id {found}; this one's is {own}): check "
            "EMBEDLINE_LANCE_URI and EMBEDLINE_CATALOG_URL (every host must pair the same two); nothing was "
            "changed")
    _require_bindable(ws)
    store.write_text(MARKER, own)


def _require_bindable(ws: Workspace) -> None:
    tables = set(embeddings.space_names(ws))
    missing = sorted(catalog.served_spaces(ws) - tables)
    if missing:
        raise CatalogMismatch(
            f"the catalog serves spaces {missing}, which {ws.lance_uri} has no tables for: check "
            "EMBEDLINE_LANCE_URI (every host must share one store); nothing was changed")
    for space in sorted(tables):
        require_known_runs(ws, space, catalog.run_ids(ws, space))


def require_known_runs(ws: Workspace, space: str, known: set[int], why: str = "") -> None:
    """`CatalogMismatch` when the space's table has versions tagged by runs not in `known`: another
    catalog's (a host without the shared EMBEDLINE_CATALOG_URL, pointed at the shared Lance)."""
    foreign = sorted(t for t in embeddings.open_space(ws, space).tags.list()
                     if t.startswith("run-") and t[4:].isdigit() and int(t[4:]) not in known)
    if foreign:
        raise CatalogMismatch(
            f"space {space!r} in {ws.lance_uri} has versions of runs this catalog never started "
            f"({', '.join(foreign[:3])}{'...' if len(foreign) > 3 else ''}){why}: check "
            "EMBEDLINE_CATALOG_URL and EMBEDLINE_LANCE_URI (every host must pair the same two); nothing was changed")

"""Which catalog a Lance store belongs to: every host must pair the same catalog with the same store.

The catalog has an id (made by its migration); the store keeps it in `_embedline/catalog-id` under its
root (LanceDB lists only `<name>.lance` folders as tables, so that file never shows up as one). Before a
run writes, and before a read serves rows, the two must agree. A host pointed at another store (a stale
local `<home>/lance`, another team's bucket, an empty prefix) would otherwise serve that store's rows, or
write a new space there (a new model's backfill, say) that a swap would then serve, though no other host
can open it.

A store without the id (an empty one, or one written before catalogs had ids) is bound by the first run
whose catalog shows it wrote the store: the store has a table for every space the catalog serves, and
(if it has spaces) at least one `run-<n>` tag names the version this catalog's run n recorded, committed
while that run ran; none names another version or time (another catalog's run n). Tags of runs the
catalog has no version of (runs after its backup was taken, runs killed before their record) prove
nothing either way. Run ids alone prove nothing: every catalog counts from 1 (a window of minutes
tells two catalogs apart unless their runs ran at the same times). Two different catalogs
binding one empty bucket in the same second could both succeed (S3 has no create-if-absent here); a local
store takes the first. A Lance on gs:// or az:// is not checked (the file store reaches local folders and
S3 only).

The file store (`EMBEDLINE_STORE_URI`: golden queries, adapters, pushed models, staging, quarantine, GX
reports) is bound the other way round: it keeps a `store-id` of its own (this catalog's id, a dash and 16
hex digits) and the catalog records the one its runs use, and where it was. The first run (or push, or
refresh) after the catalog records none binds the store it finds, once its Lance store is its own and the
store holds the golden queries and adapters the catalog's history names (adopting the store's id when it
is this catalog's, writing a new one when it has none), in the catalog's write turn, so binders on every
host take turns; from then on every use of another store is refused, with the recorded store named.
Without it, a host that forgot the setting (its store then follows the Lance root or the home) would gate
on stale golden queries, write a quarantine or a report no other host sees, or stage a run its shards
cannot find. Limits: a catalog with no such history binds the first store a run uses (a wrong one is
undone by removing its `store-id` and `embedline sql --write "UPDATE catalog_identity SET file_store =
NULL"`), and a stale copy of the files in a wrong store passes for them. Binding holds the catalog's write
turn for the store's reads and a write (a hung S3 endpoint: ~11 s).
"""

import contextlib
import os
import re
import tempfile
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from embedline.errors import CatalogMismatch, TransientError
from embedline.names import check_space, is_name
from embedline.redaction import redact
from embedline.storage import catalog, embeddings, files
from embedline.workspace import Workspace, private_files

MARKER = "_embedline/catalog-id"
STORE_ID = "store-id"  # in the file store's root
CLOCK_SLACK = timedelta(minutes=5)  # a run's times come from the clock of the host that ran it
CHECK = "check EMBEDLINE_LANCE_URI and EMBEDLINE_CATALOG_URL (every host must pair the same two)"
FILE_CHECK = ("check EMBEDLINE_STORE_URI (unset, the store follows EMBEDLINE_LANCE_URI or the home): every "
              "host must use the same")
WRITE, READ = "nothing was changed", "nothing was read"
_READABLE: set[tuple[str, str, str]] = set()  # (Lance root, its options, catalog): found to agree here
_FILE_STORE_CHECKS: dict[tuple[str, str, str], str | None] = {}  # (file store, options, catalog) → error
_EARLY_BINDINGS: dict[str, tuple[str, str] | None] = {}  # catalog → its file store, read before an attach


def require_own_store(ws: Workspace) -> None:
    """`CatalogMismatch`, before anything is written, unless the Lance store is this catalog's (binding
    a store that has no catalog id yet; see the module)."""
    root = _marker_root(ws.lance_uri)
    if root is None:
        return
    own = catalog.catalog_id(ws)
    store = files.Store(root, ws.lance_storage_options)
    found = _read_id(store)
    if found is None:
        _require_bindable(ws, WRITE)
        _write_id(store, own)
        found = _read_id(store)  # another catalog may have bound it meanwhile
    if found != own:
        raise _foreign(ws, found, own, f"{WRITE} (a new catalog needs an empty EMBEDLINE_LANCE_URI)")


def require_readable_store(ws: Workspace) -> None:
    """`CatalogMismatch` before a search, a SQL session's views, a validation, a footprint or an adapter
    fit reads rows from a Lance store that is not this catalog's (a stale `<home>/lance`, another team's
    bucket): its id, or for a store without one the binding rule. Nothing is written, not even a missing
    local folder (a reading host may hold read-only credentials). Checked once per process for each pair
    of settings (a catalog read costs ~25 ms, a search ~3 ms); a catalog replaced by another one's under a
    running process is not seen."""
    root = _marker_root(ws.lance_uri)
    if root is None:
        return
    local = not files.is_remote(root)
    pair = (os.path.abspath(root) if local else root, repr(sorted((ws.lance_storage_options or {}).items())),
            ws.settings.catalog_url or str(ws.catalog_path.resolve()))
    if pair in _READABLE:
        return
    own = catalog.catalog_id(ws, create=False)
    if own is None:
        return  # no catalog yet: it serves nothing
    absent = local and not os.path.isdir(root)  # a mistyped folder: listing it would create it
    found = None if absent else _read_id(files.Store(root, ws.lance_storage_options))
    if found is None:
        _require_bindable(ws, READ, tables=[] if absent else None)
    elif found != own:
        raise _foreign(ws, found, own, READ)
    _READABLE.add(pair)


def bind_file_store(ws: Workspace, kept: Callable[[Workspace], list[str]] | None = None) -> None:
    """Record the file store in the catalog when it records none (see the module), then
    `require_own_file_store`: called where a run, or a command that writes the store, starts. `kept`: the
    store keys the catalog's history says its store holds (golden queries in use, adapters)."""
    store = files.Store(files.store_uri(ws), ws.lance_storage_options)
    if catalog.file_store(ws) is None:
        require_own_store(ws)  # a host on another Lance (or catalog) binds nothing
        own, keys = catalog.catalog_id(ws), kept(ws) if kept else []  # read now: the bind holds the catalog
        catalog.bind_file_store(ws, lambda: (_store_id_to_bind(store, own, keys), redact(store.uri)))
    _FILE_STORE_CHECKS.pop(_file_store_pair(ws, store), None)
    _EARLY_BINDINGS.pop(_catalog_key(ws), None)
    require_own_file_store(ws, store)


def _store_id_to_bind(store: files.Store, own: str, kept: list[str]) -> str:
    """The store's id, or a new one written there; `CatalogMismatch` for another catalog's store, or one
    without the files this catalog's store kept (the first binder may be a host that forgot the setting)."""
    found = _read_store_id(store)
    chosen = found or f"{own}-{uuid.uuid4().hex[:16]}"
    missing = [key for key in kept if not store.exists(key)] if chosen.startswith(own) else []
    if missing:  # also for a store with this catalog's id: a wrong bind undone leaves its store-id behind
        raise CatalogMismatch(
            f"the file store {store.uri} lacks {', '.join(missing[:3])}{'...' * (len(missing) > 3)}, "
            f"which this catalog's runs kept in theirs: {FILE_CHECK}. If those files are lost for good, "
            f"bind this store: write {chosen} into {store.uri_of(STORE_ID)} and run embedline sql --write "
            f"\"UPDATE catalog_identity SET file_store = '{chosen}', file_store_uri = "
            f"'{redact(store.uri)}'\"; {WRITE}")
    if found is None:
        _write_once(store, STORE_ID, chosen, _read_store_id)
        found = _read_store_id(store)  # another catalog's host may have written it first
    if found is None or not found.startswith(own):
        raise CatalogMismatch(
            f"the file store {store.uri} is another catalog's (store id {found}; this catalog's id is "
            f"{own}): {FILE_CHECK}. A new catalog needs a store without a store-id: where the catalog that "
            f"wrote it is gone for good, remove {store.uri_of(STORE_ID)}; {WRITE}")
    return found


def require_own_file_store(ws: Workspace, store: files.Store) -> None:
    """`CatalogMismatch` unless `store` is the file store the catalog records (nothing to check while it
    records none). Decided once per process for each pair of settings, like `require_readable_store`, and
    before a SQL session attaches the catalog file (`check_file_store_early`): it could not read it then."""
    pair = _file_store_pair(ws, store)
    if pair not in _FILE_STORE_CHECKS:
        _FILE_STORE_CHECKS[pair] = _file_store_error(ws, store)
    if _FILE_STORE_CHECKS[pair]:
        raise CatalogMismatch(_FILE_STORE_CHECKS[pair])


def check_file_store_early(ws: Workspace) -> None:
    """Decide the file store check now, before a `--write` SQL session attaches the catalog file (see above):
    a mismatch, or a store out of reach, is raised where the store is used (a SQL session's adapter)."""
    _EARLY_BINDINGS[_catalog_key(ws)] = catalog.file_store(ws)  # what a later check reads instead
    with contextlib.suppress(CatalogMismatch, TransientError):
        require_own_file_store(ws, files.Store(files.store_uri(ws), ws.lance_storage_options))


def _file_store_error(ws: Workspace, store: files.Store) -> str | None:
    key = _catalog_key(ws)
    bound = _EARLY_BINDINGS[key] if key in _EARLY_BINDINGS else catalog.file_store(ws)
    if bound is None:
        return None  # no catalog, or no run since it could record one: the next run binds a store
    recorded, where = bound
    found = _read_store_id(store)
    if found == recorded:
        return None
    return (f"the file store {store.uri} (store id {found}) is not the one this catalog's runs use: "
            f"{where} (store id {recorded}): {FILE_CHECK}; nothing was done. If {where} is lost for good, "
            f"adopt this store: write {recorded} into {store.uri_of(STORE_ID)}. If the catalog bound the "
            f"wrong store, unbind it: remove {where}/{STORE_ID}, then embedline sql --write \"UPDATE "
            f"catalog_identity SET file_store = NULL\" (the next run binds its store). A process decides "
            f"this once: start a new one after the fix")


def _file_store_pair(ws: Workspace, store: files.Store) -> tuple[str, str, str]:
    where = store.uri if store.remote else os.path.abspath(store.uri)
    return where, repr(sorted((store.options or {}).items())), _catalog_key(ws)


def _catalog_key(ws: Workspace) -> str:
    return ws.settings.catalog_url or str(ws.catalog_path.resolve())


def _read_store_id(store: files.Store) -> str | None:
    """The file store's own id; None for none, or for a file a killed write left short."""
    found = store.read_text(STORE_ID).strip() if store.exists(STORE_ID) else ""
    return found if re.fullmatch(r"[0-9a-f]{32}-[0-9a-f]{16}", found) else None


def require_catalog(ws: Workspace, expected: str | None) -> None:
    """`CatalogMismatch` unless the workspace's catalog has id `expected` (None: any): a run an event of
    one catalog started on a worker whose home or settings reach another."""
    found = catalog.catalog_id(ws, create=False)
    if expected and found != expected:
        raise CatalogMismatch(f"this run was started for catalog {expected}, but {catalog.location(ws)} is "
                              f"{'catalog ' + found if found else 'no catalog'}: run it on a worker whose "
                              f"EMBEDLINE_HOME or EMBEDLINE_CATALOG_URL reaches that catalog; {WRITE}")


def _foreign(ws: Workspace, found: str, own: str, outcome: str) -> CatalogMismatch:
    return CatalogMismatch(f"{ws.lance_uri} is the Lance store of another catalog (id {found}; this one's is "
                           f"{own}): {CHECK}; {outcome}")


def require_known_runs(ws: Workspace, space: str, known: set[int], why: str = "") -> None:
    """`CatalogMismatch` when the space's table has versions tagged by runs not in `known`: another
    catalog's (a host without the shared EMBEDLINE_CATALOG_URL, pointed at the shared Lance)."""
    foreign = sorted(f"run-{n}" for n in embeddings.run_tags(ws, space) if n not in known)
    if foreign:
        raise CatalogMismatch(
            f"space {space!r} in {ws.lance_uri} has versions of runs this catalog never started "
            f"({', '.join(foreign[:3])}{'...' if len(foreign) > 3 else ''}){why}: {CHECK}; nothing was "
            "changed")


def _marker_root(lance_uri: str) -> str | None:
    """Where the id lives: the Lance root as the file store reaches it (None: a scheme it cannot)."""
    root = lance_uri.split("?", 1)[0]
    if root.startswith("s3+ddb://"):  # S3 with a DynamoDB commit store: the files are plain S3
        return "s3://" + root.removeprefix("s3+ddb://")
    if files.is_remote(root) and not root.startswith(("s3://", "s3a://")):
        return None
    return root


def _read_id(store: files.Store) -> str | None:
    """The id the store keeps; None for none, or for a file a killed write left short."""
    found = store.read_text(MARKER).strip() if store.exists(MARKER) else ""
    return found if re.fullmatch(r"[0-9a-f]{32}", found) else None


def _write_id(store: files.Store, own: str) -> None:
    """Write the id; on a local store only where no other catalog's id landed first."""
    _write_once(store, MARKER, own, _read_id)


def _write_once(store: files.Store, key: str, value: str, read) -> None:
    """Write `value` at `key`; on a local store only where no valid value (`read`) landed first."""
    if store.remote:
        store.write_text(key, value)
        return
    path = f"{store.root}/{key}"
    with files.store_errors(store.uri_of(key)), private_files():  # the owner's alone, like the home
        os.makedirs(os.path.dirname(path), exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=os.path.dirname(path), prefix=f".{os.path.basename(key)}.")
        try:
            with os.fdopen(handle, "w") as out:
                out.write(value)
            os.link(temporary, path)  # fails if it exists: the first writer wins
        except FileExistsError:
            if read(store) is None:  # a short file a killed write left: take its place
                os.replace(temporary, path)
        finally:
            if os.path.exists(temporary):
                os.unlink(temporary)


def _require_bindable(ws: Workspace, outcome: str, tables: list[str] | None = None) -> None:
    """`CatalogMismatch` unless the store's `tables` (None: listed) are this catalog's (see the module)."""
    tables = sorted(embeddings.space_names(ws) if tables is None else tables)
    missing = sorted(catalog.served_spaces(ws) - set(tables))
    if missing:
        raise CatalogMismatch(f"the catalog serves spaces {missing}, which {ws.lance_uri} has no tables for: "
                              f"{CHECK}; {outcome}")
    recorded = catalog.run_versions(ws)
    spaces = [t for t in tables if is_name(t, check_space)]  # another tool's tables prove nothing either way
    proven = sum(_proven_tags(ws, space, recorded, outcome) for space in spaces)
    if spaces and not proven:
        raise CatalogMismatch(f"{ws.lance_uri} holds tables ({', '.join(spaces[:3])}) of runs this catalog "
                              f"never recorded: {CHECK}; {outcome}")


def _proven_tags(ws: Workspace, space: str, recorded: dict, outcome: str) -> int:
    """How many of the space's run tags name the version this catalog recorded for that run, committed
    while it ran; `CatalogMismatch` for one that names another version or time (another catalog's run)."""
    now = datetime.now(timezone.utc)
    proven = 0
    for run_id, (version, committed) in sorted(embeddings.run_tags(ws, space).items()):
        if (space, run_id) not in recorded:
            continue  # a run after this catalog's backup was taken, a run killed before its record, ...
        own_version, started, finished = recorded[(space, run_id)]
        started, finished = started.astimezone(timezone.utc), (finished or now).astimezone(timezone.utc)
        if version != own_version or not any(
                started - CLOCK_SLACK <= when <= finished + CLOCK_SLACK for when in committed):
            raise CatalogMismatch(
                f"space {space!r} in {ws.lance_uri} has run-{run_id} on version {version}, committed at "
                f"{committed[0]:%Y-%m-%d %H:%M:%S} UTC, but this catalog's run {run_id} recorded version "
                f"{own_version} and ran from {started:%Y-%m-%d %H:%M:%S} UTC: another catalog's store; "
                f"{CHECK}; {outcome}")
        proven += 1
    return proven

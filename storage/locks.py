"""One writer per space: a second ingest of the same space fails fast with a clear message.

With a local catalog the lock is a file in `<home>/locks`; with a Postgres catalog
(`EMBEDLINE_CATALOG_URL`) it is a Postgres advisory lock held by a connection of its own, so writers on
different hosts (no shared disk) exclude each other, and a holder that dies releases it with its connection.
"""

from contextlib import contextmanager

from filelock import FileLock, Timeout

from embedline.errors import SpaceBusy
from embedline.storage import postgres
from embedline.workspace import Workspace


@contextmanager
def space_lock(ws: Workspace, space: str, wait_seconds: float = 0):
    """Hold the space's lock for the block; released even if the process dies."""
    if ws.settings.catalog_url:
        with postgres.advisory_lock(ws.settings.catalog_url, f"embedline-space:{space}", wait_seconds) as got:
            if not got:
                raise _busy(space)
            yield
        return
    locks = ws.home / "locks"
    locks.mkdir(mode=0o700, parents=True, exist_ok=True)
    lock = FileLock(str(locks / f"{space}.lock"), mode=0o600)  # the owner's alone, like the whole workspace
    try:
        lock.acquire(timeout=wait_seconds)
    except Timeout as exc:
        raise _busy(space) from exc
    try:
        yield
    finally:
        lock.release()


def _busy(space: str) -> SpaceBusy:
    return SpaceBusy(f"another run is writing space {space!r}; wait for it to finish and run this again")

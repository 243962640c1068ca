"""One writer per space: a second ingest of the same space fails fast with a clear message.

With a local catalog the lock is a file in `<home>/locks`; with a Postgres catalog
(`EMBEDLINE_CATALOG_URL`) it is a Postgres advisory lock held by a connection of its own, so writers on
different hosts (no shared disk) exclude each other, and a holder that dies releases it with its connection.
"""

from collections.abc import Iterator
from contextlib import contextmanager

from filelock import FileLock, Timeout

from embedline.errors import SpaceBusy
from embedline.storage import postgres
from embedline.workspace import Workspace


class Lease:
    """A held space lock. `confirm()` before each step that writes: a Postgres lock ends with its
    connection (a network blip, a server restart), after which another host may take the space."""

    def __init__(self, space: str, connection=None):
        self.space, self.connection = space, connection

    def confirm(self) -> None:
        if self.connection is not None and not postgres.still_held(self.connection):
            raise SpaceBusy(f"this run lost the lock of space {self.space!r} (its connection to PostgreSQL "
                            "dropped) and stopped before writing: run it again")


@contextmanager
def space_lock(ws: Workspace, space: str, wait_seconds: float = 0) -> Iterator[Lease]:
    """Hold the space's lock for the block; released even if the process dies."""
    if ws.settings.catalog_url:
        name = f"embedline-space:{space}"
        with postgres.advisory_lock(ws.settings.catalog_url, name, wait_seconds,
                                    password=ws.settings.catalog_password_text) as conn:
            if conn is None:
                raise _busy(space)
            yield Lease(space, conn)
        return
    locks = ws.home / "locks"
    locks.mkdir(mode=0o700, parents=True, exist_ok=True)
    lock = FileLock(str(locks / f"{space}.lock"), mode=0o600)  # the owner's alone, like the whole workspace
    try:
        lock.acquire(timeout=wait_seconds)
    except Timeout as exc:
        raise _busy(space) from exc
    try:
        yield Lease(space)
    finally:
        lock.release()


def _busy(space: str) -> SpaceBusy:
    return SpaceBusy(f"another run is writing space {space!r}; wait for it to finish and run this again")

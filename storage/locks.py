"""One writer per space: a second ingest of the same space fails fast with a clear message."""

from contextlib import contextmanager

from filelock import FileLock, Timeout

from embedline.errors import SpaceBusy
from embedline.workspace import Workspace


@contextmanager
def space_lock(ws: Workspace, space: str, wait_seconds: float = 0):
    """Hold the space's lock file for the block; released even if the process dies."""
    locks = ws.home / "locks"
    locks.mkdir(mode=0o700, parents=True, exist_ok=True)
    lock = FileLock(str(locks / f"{space}.lock"), mode=0o600)  # the owner's alone, like the whole workspace
    try:
        lock.acquire(timeout=wait_seconds)
    except Timeout as exc:
        raise SpaceBusy(
            f"another run is writing space {space!r}; wait for it to finish and run this again"
        ) from exc
    try:
        yield
    finally:
        lock.release()

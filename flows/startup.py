"""Prefect's API for a one-shot command, ready by the time the command has loaded what it needs.

Without `PREFECT_API_URL`, Prefect starts a temporary server at a process's first flow run and waits
for it (~7-15 s here) before anything else happens. A command that runs flows instead uses a server
already answering on this machine's default address (`make serve`), else starts the temporary one on a
thread; an ingest meanwhile imports its libraries and loads its model here, so the two waits overlap.
"""

import base64
import contextvars
import hashlib
import json
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from functools import partial
from pathlib import Path

START_LOCK = "embedline-server-start.lock"  # in $PREFECT_HOME, next to the temporary server's database


def local_server(url: str, timeout: float = 3.0) -> str | None:
    """`url` when a Prefect server of this release there answers this process (nothing listening: None at
    once). It asks `/admin/version`, not `/health`: a server with an auth string answers health checks
    to anyone, and a command without the credential must not take it for its own."""
    from prefect.settings import PREFECT_API_AUTH_STRING

    request = urllib.request.Request(f"{url}/admin/version")
    if credential := PREFECT_API_AUTH_STRING.value():
        request.add_header("Authorization", "Basic " + base64.b64encode(credential.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.loads(response.read(256)) if response.status == 200 else None
    except (OSError, ValueError):  # refused, timed out, an HTTP error status (401, 503, ...), not JSON
        return None
    return url if same_minor_version(answer) else None


def running_local_server(local_url: str | None = None) -> str | None:
    """The API of a Prefect server this process may use at `local_url` (default
    `$EMBEDLINE_LOCAL_PREFECT_URL`, `make serve`'s address; empty: none), or None."""
    from embedline import settings

    local_url = settings.load().local_prefect_url if local_url is None else local_url
    return local_server(local_url) if local_url else None


def same_minor_version(answer) -> bool:
    """Whether `/admin/version` answered this Prefect's major.minor: another web server on the port (a
    dev server answering every path) or another Prefect release is not taken for ours."""
    import prefect

    return isinstance(answer, str) and answer.split(".")[:2] == prefect.__version__.split(".")[:2]


def temporary_server():
    """The temporary server Prefect's first flow run would start (one per process; `.start()` is
    idempotent). Imported here, not on the starting thread: its imports hold the GIL for seconds,
    and once `start()` has spawned the server process it only sleeps while waiting for it. (Its usage
    data is off unless asked for: see `embedline/__init__.py`.)"""
    from prefect.server.api.server import SubprocessASGIServer

    return SubprocessASGIServer()


def start_temporary_server(server) -> None:
    """Start `temporary_server()`. The first start on a Prefect database (and the first after a Prefect
    upgrade) migrates it, and two such starts at once collide halfway (`duplicate column name`, 1 try in
    5 here), so a start holds a lock in `$PREFECT_HOME` until one has succeeded on that database; later
    starts run at once. A start that fails stops its server process, which may still be migrating,
    before the lock goes. A running server: no-op."""
    if server.running:
        return
    marker = migrated_marker()
    with first_start_lock(lambda: is_migrated(marker)):
        try:
            server.start()
        except BaseException:
            server.stop()
            raise
    with suppress(OSError):
        marker.touch()


@contextmanager
def first_start_lock(migrated: Callable[[], bool]) -> Iterator[None]:
    """The home's server-start lock while the database is not `migrated()` (asked again once the lock is
    had: the holder's start may have done it). A lock that cannot be had (its holder stuck past the
    startup timeout, a home that cannot be written) is done without."""
    from filelock import FileLock, Timeout
    from prefect.settings import PREFECT_HOME, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

    lock = FileLock(PREFECT_HOME.value() / START_LOCK,
                    timeout=PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value() + 30)
    try:
        if not migrated():
            lock.acquire()
            if migrated():
                lock.release()
    except (Timeout, OSError):
        pass
    try:
        yield
    finally:
        if lock.is_locked:
            lock.release()


def migrated_marker() -> Path:
    """The mark a successful start leaves in `$PREFECT_HOME` for its database: this Prefect release's
    migrations, at this database URL."""
    import prefect
    from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL, PREFECT_HOME

    key = hashlib.sha256(f"{prefect.__version__} {PREFECT_API_DATABASE_CONNECTION_URL.value()}".encode())
    return PREFECT_HOME.value() / f"embedline-server-{key.hexdigest()[:16]}.migrated"


def is_migrated(marker: Path) -> bool:
    """Whether `marker` is there and, for a SQLite database, the file it stands for too (a user who
    deletes `prefect.db` to start afresh gets the lock again)."""
    from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(str(PREFECT_API_DATABASE_CONNECTION_URL.value()))
    except ArgumentError:  # Prefect itself will say what is wrong with it
        return marker.exists()
    if url.get_backend_name() == "sqlite" and not Path(url.database or "").is_file():
        return False
    return marker.exists()


def stop_temporary_server() -> None:
    """Send this process's pending Prefect events and logs, and stop the temporary server it started, now:
    Prefect does both at exit, and its log of them would follow the CLI's closing `error:` line. A server
    the settings name (a user's, a test harness's) is left alone, and so is a process that started none."""
    server = sys.modules.get("prefect.server.api.server")
    if server is None or not server.SubprocessASGIServer().running:
        return
    from prefect._internal.concurrency.services import QueueService
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return
    try:
        QueueService.drain_all(timeout=10)  # every queue service: events, API logs
        server.SubprocessASGIServer().stop()
    except Exception:  # noqa: BLE001 - Prefect tries both again at exit; the error line must still come
        pass


@contextmanager
def prefect_api(warm: Callable[[], None] | None = None, local_url: str | None = None) -> Iterator[str]:
    """Run the block against a Prefect API that is up: `$PREFECT_API_URL` as Prefect reads it, else a
    server answering at `local_url` (default `$EMBEDLINE_LOCAL_PREFECT_URL`, `make serve`'s address;
    empty: none is reused), else the temporary server, started on a thread while `warm()` (imports,
    model load) runs here. Yields which one: "configured", "local" or "temporary". `warm` runs only in
    the last case, where it can overlap the wait: elsewhere the run may not load a model here at all
    (shards on a gpu pool)."""
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED, temporary_settings

    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        yield "configured"  # (a missing URL with ephemeral mode off: Prefect itself says what to set)
        return
    url = running_local_server(local_url)
    if url is not None:
        with temporary_settings({PREFECT_API_URL: url}):
            yield "local"
        return
    failure: list[BaseException] = []
    start = partial(start_temporary_server, temporary_server())  # its imports here, before the thread
    starter = threading.Thread(target=contextvars.copy_context().run, args=(_capture, start, failure),
                               daemon=True, name="prefect-server-start")  # with this block's Prefect settings
    starter.start()
    try:
        _run(warm)
    finally:
        starter.join()
    if failure:
        raise failure[0]
    yield "temporary"


def _run(warm: Callable[[], None] | None) -> None:
    """Warm up; an error it meets (an unknown model, a bad name, unreadable weights) is left for the flow
    to meet again, report and record as a failed run, as it would be without the warm-up."""
    if warm is None:
        return
    try:
        warm()
    except Exception:  # noqa: BLE001 - the run itself raises it, after recording it
        pass


def _capture(work: Callable[[], None], failure: list[BaseException]) -> None:
    try:
        work()
    except BaseException as exc:  # handed to the caller's thread, which raises it
        failure.append(exc)


def warm_ingest(home: str, corpus: str, model: str | None, precision: str | None) -> None:
    """What an ingest run loads anyway, loaded early: LanceDB, great-expectations and the engine of the
    model the run will embed with (the one cache `get_engine` keeps per process)."""
    from embedline.storage import catalog, embeddings  # noqa: F401  (lancedb)
    from embedline.tasks.embedding import get_engine, resolve_runtime
    from embedline.tasks.models import DEFAULT_MODEL, resolve_model
    from embedline.validation.suite import preload_library
    from embedline.workspace import Workspace

    preload_library()  # validation always runs
    ws = Workspace.from_env(home).ensure()
    if model is None:
        model = catalog.serving_model(ws, corpus)
    engine = get_engine(resolve_runtime(resolve_model(ws, model or DEFAULT_MODEL), precision=precision)[0])
    engine.embed(["warm up"])  # the first forward pass builds the CPU kernels (seconds under bf16)

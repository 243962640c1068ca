"""A one-shot command's Prefect API: configured, a local server reused, or the temporary one started
while the command loads its model (flows/startup.py)."""

import socket
import threading
from contextlib import contextmanager, suppress
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from embedline.flows import startup


def closed_url() -> str:
    """An address where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/api"


@pytest.fixture
def locked_server():
    """A real HTTP server that answers 401, as a Prefect server with an auth string does a caller
    without the credential (its health check answers anyone)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/api/health" else 401)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/api"
    server.shutdown()
    server.server_close()


@pytest.fixture
def no_api_url():
    """Prefect settings as a user's shell has them without PREFECT_API_URL."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert not PREFECT_API_URL.value()
        yield


def test_local_server_is_reused_only_when_it_answers_this_process(prefect_api_url, locked_server):
    assert startup.local_server(prefect_api_url) == prefect_api_url
    assert startup.local_server(closed_url()) is None
    assert startup.local_server(locked_server) is None
    for body in (b"<html>a dev server answers every path</html>", b'"2.19.0"'):  # not ours: another release
        with answering(body) as url:
            assert startup.local_server(url) is None


@contextmanager
def answering(body: bytes):
    """A web server on a free loopback port answering every GET with 200 and `body`."""
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/api"
    finally:
        server.shutdown()


def test_a_configured_api_is_used_as_is_and_nothing_is_warmed(prefect_api_url):
    warmed = []
    with startup.prefect_api(lambda: warmed.append(1), local_url=closed_url()) as kind:
        from prefect.settings import PREFECT_API_URL

        assert kind == "configured" and PREFECT_API_URL.value() == prefect_api_url
    assert warmed == []


def test_a_running_local_server_is_reused_and_the_run_appears_there(
    no_api_url, prefect_api_url, workspace, debian_case
):
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL

    from tests.conftest import ingest

    warmed, started = [], datetime.now(timezone.utc)
    with startup.prefect_api(lambda: warmed.append(1), local_url=prefect_api_url) as kind:
        assert kind == "local" and PREFECT_API_URL.value() == prefect_api_url
        summary = ingest(workspace, debian_case, corpus="reused")
    assert warmed == [] and not PREFECT_API_URL.value()
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterStartTime

    with get_client(sync_client=True, httpx_settings={"base_url": prefect_api_url}) as client:
        since = FlowRunFilter(start_time=FlowRunFilterStartTime(after_=started))  # the server holds many
        runs = [r for r in client.read_flow_runs(flow_run_filter=since, limit=50)
                if r.parameters.get("corpus") == "reused"]
    assert summary.status == "succeeded" and [r.state_name for r in runs] == ["Completed"]


def test_without_a_server_the_temporary_one_starts_while_the_model_loads(
    no_api_url, workspace, debian_case, monkeypatch
):
    """The temporary server is the harness's here (Prefect keeps one per process): it answers when the
    block starts, the warm-up ran before it, and the ingest's engine is the one the warm-up loaded."""
    from embedline.tasks import embedding
    from tests.conftest import ingest

    monkeypatch.setenv("EMBEDLINE_LOCAL_PREFECT_URL", "")  # a developer's `make serve` must not count
    order = []
    with startup.prefect_api(lambda: order.append("warm")) as kind:
        order.append(kind)
        assert startup.local_server(startup.temporary_server().api_url) is not None
    assert order == ["warm", "temporary"]

    embedding._ENGINES.clear()
    with startup.prefect_api(lambda: startup.warm_ingest(str(workspace.home), "warmed", "tiny", None)):
        warmed = list(embedding._ENGINES.values())
        summary = ingest(workspace, debian_case, corpus="warmed")
    assert [engine.spec.name for engine in warmed] == ["tiny"]
    assert summary.status == "succeeded" and summary.chunks_embedded > 0
    assert list(embedding._ENGINES.values()) == warmed  # the run embedded with the engine warmed up


def test_a_user_error_met_while_warming_is_reported_by_the_run(no_api_url, workspace, debian_case,
                                                                 monkeypatch):
    import embedline
    from embedline.errors import NotFound

    monkeypatch.setenv("EMBEDLINE_LOCAL_PREFECT_URL", closed_url())
    with pytest.raises(NotFound, match="models add"):
        embedline.connect(workspace.home).ingest(debian_case, "nomodel", model="missing")


def test_a_one_shot_validate_reuses_a_running_server_and_its_run_appears_there(
    prefect_api_url, workspace, debian_case
):
    """Every command that runs flows takes the same path as `ingest` (a `make serve` reused), not only
    `ingest`: before, `validate` started a temporary server of its own and its run never reached this one."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterStartTime

    from tests.conftest import ingest, run_cli

    ingest(workspace, debian_case, corpus="revalidated")
    started = datetime.now(timezone.utc)
    result = run_cli("validate", "revalidated", home=workspace.home, own_server=True,
                     local_server=prefect_api_url)
    assert result.returncode == 0, result.stderr
    with get_client(sync_client=True, httpx_settings={"base_url": prefect_api_url}) as client:
        since = FlowRunFilter(start_time=FlowRunFilterStartTime(after_=started))
        runs = [r for r in client.read_flow_runs(flow_run_filter=since, limit=50)
                if r.parameters.get("corpus") == "revalidated"]
    assert [r.state_name for r in runs] == ["Completed"]


@contextmanager
def prefect_home(path: str):
    """Prefect settings with their home (and its default SQLite database, not the harness's) at `path`."""
    from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL, PREFECT_HOME, temporary_settings

    with temporary_settings({PREFECT_HOME: path}, restore_defaults={PREFECT_API_DATABASE_CONNECTION_URL}):
        yield


class RecordingServer:
    """Stands in for Prefect's temporary server to see what `start()` runs under (the lock is a real one);
    a start that succeeds leaves the SQLite database file, as Prefect's does."""

    def __init__(self, fail: bool = False):
        self.running, self.fail, self.starts = False, fail, []

    def start(self):
        from filelock import FileLock, Timeout
        from prefect.settings import PREFECT_HOME

        try:
            FileLock(PREFECT_HOME.value() / startup.START_LOCK, timeout=0).acquire()  # as another process
            self.starts.append(("unlocked", PREFECT_HOME.value()))
        except Timeout:
            self.starts.append(("locked", PREFECT_HOME.value()))
        except OSError:
            self.starts.append(("no lock", PREFECT_HOME.value()))
        if self.fail:
            raise RuntimeError("Timed out while attempting to connect to ephemeral Prefect API server")
        with suppress(OSError):
            (PREFECT_HOME.value() / "prefect.db").touch()
        self.running = True

    def stop(self):
        self.starts.append(("stopped", None))
        self.running = False


def test_server_starts_hold_the_lock_until_one_has_migrated_the_database(tmp_path):
    """Two first starts at once on a fresh Prefect database collide in its migrations (`duplicate column
    name`): a start holds the home's lock until one has succeeded on that database (a failed one stops
    its server, then releases it); then starts run side by side, until the database file is deleted."""
    home = tmp_path / "prefect-home"
    with prefect_home(str(home)):
        failing, first, later, afresh = (RecordingServer(fail=True), RecordingServer(), RecordingServer(),
                                         RecordingServer())
        with pytest.raises(RuntimeError, match="Timed out"):
            startup.start_temporary_server(failing)
        startup.start_temporary_server(first)
        startup.start_temporary_server(first)  # running: no second start
        startup.start_temporary_server(later)
        (home / "prefect.db").unlink()  # a user starting Prefect afresh
        startup.start_temporary_server(afresh)
    assert [kind for kind, _ in failing.starts] == ["locked", "stopped"]
    assert [kind for server in (first, later, afresh) for kind, _ in server.starts] == [
        "locked", "unlocked", "locked"]


def test_a_home_that_cannot_hold_the_lock_still_starts_the_server(tmp_path):
    (tmp_path / "a-file").write_text("")
    with prefect_home(str(tmp_path / "a-file" / "home")):
        server = RecordingServer()
        startup.start_temporary_server(server)
    assert server.running and [kind for kind, _ in server.starts] == ["no lock"]


def test_the_server_starts_with_the_prefect_settings_of_the_block(no_api_url, tmp_path, monkeypatch):
    """The start runs on a thread: it sees the caller's `temporary_settings` (its home, its database)."""
    server = RecordingServer()
    monkeypatch.setattr(startup, "temporary_server", lambda: server)
    with prefect_home(str(tmp_path / "prefect-home")):
        with startup.prefect_api(local_url="") as kind:
            assert kind == "temporary"
    assert server.starts == [("locked", tmp_path / "prefect-home")]


"""A one-shot command's Prefect API: configured, a local server reused, or the temporary one started
while the command loads its model (flows/startup.py)."""

import socket
import threading
from contextlib import contextmanager
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


class RecordingServer:
    """Stands in for Prefect's temporary server to see what `start()` runs under: the lock is a real one."""

    def __init__(self, lock_path, fail: bool = False):
        self.running, self.lock_path, self.fail, self.starts = False, lock_path, fail, []

    def start(self):
        from filelock import FileLock, Timeout

        try:
            FileLock(self.lock_path, timeout=0).acquire()  # another process's view: its own open file
            self.starts.append("unlocked")
        except Timeout:
            self.starts.append("locked")
        if self.fail:
            raise RuntimeError("Timed out while attempting to connect to ephemeral Prefect API server")
        self.running = True


def test_temporary_servers_start_one_process_at_a_time(tmp_path):
    """Two first starts at once on a fresh Prefect home collide in its migrations (`duplicate column name`):
    a start runs holding the home's lock, which a failed start releases and a running server never takes."""
    from filelock import FileLock
    from prefect.settings import PREFECT_HOME, temporary_settings

    home = tmp_path / "prefect-home"
    with temporary_settings({PREFECT_HOME: str(home)}):
        lock_path = home / startup.START_LOCK
        failing = RecordingServer(lock_path, fail=True)
        with pytest.raises(RuntimeError, match="Timed out"):
            startup.start_temporary_server(failing)
        server = RecordingServer(lock_path)
        startup.start_temporary_server(server)
        startup.start_temporary_server(server)  # running: no second start
    assert failing.starts == ["locked"] and server.starts == ["locked"]
    FileLock(lock_path, timeout=0).acquire()  # released after each start

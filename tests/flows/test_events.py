"""The model-registered event: the refresh trigger renders from any event, and a server that cannot take
the event does not fail the registration that sent it."""

import copy
import http.server
import json
import logging
import threading
from pathlib import Path

import prefect
import pytest
import yaml

from embedline.flows.events import emit_model_registered

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("payload, home, catalog_id", [
    ({"home": "/srv/embedline", "catalog": "c" * 32}, "/srv/embedline", "c" * 32),
    ({"home": None, "catalog": "c" * 32}, None, "c" * 32),
    ({"dim": 384}, None, None)])  # an older embedline's event
def test_the_refresh_trigger_renders_the_home_of_any_event(payload, home, catalog_id):
    from prefect.server.events.actions import RunDeployment
    from prefect.utilities.schema_tools.hydration import HydrationContext, hydrate

    refresh = next(d for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
                   if d["name"] == "refresh-debian")
    parameters = copy.deepcopy(refresh["triggers"][0]["parameters"])
    RunDeployment._upgrade_v1_templates(parameters)  # what the server does with a trigger's templates
    context = HydrationContext(raise_on_error=True, render_jinja=True,
                               jinja_context={"event": {"payload": payload}})
    assert hydrate(parameters, context) == {"model": "mpnet", "home": home, "catalog_id": catalog_id}


def test_a_refresh_started_for_another_catalog_refuses_before_it_reads_a_thing(workspace, debian_case):
    """A dev machine's `models add` on prod's Prefect server: prod's worker must not refresh prod."""
    from embedline.errors import CatalogMismatch
    from embedline.flows.refresh import refresh_model
    from embedline.storage import catalog
    from tests.conftest import ingest

    ingest(workspace, debian_case)
    with pytest.raises(CatalogMismatch, match=f"started for catalog {'d' * 32}, but {workspace.catalog_path} "
                                              f"is catalog {catalog.catalog_id(workspace)}.*EMBEDLINE_HOME"):
        refresh_model("debian", "other", home=str(workspace.home), catalog_id="d" * 32)
    assert refresh_model("debian", "tiny", home=str(workspace.home),  # its own: on to the refresh's checks
                         catalog_id=catalog.catalog_id(workspace)) == (None, None)


@pytest.fixture
def server_without_events():
    """Answers /admin/version as a Prefect server of this release would, and nothing else."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps(prefect.__version__).encode() if self.path.endswith("/admin/version") else b"no"
            self.send_response(200 if body != b"no" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/api"
    server.shutdown()


def test_an_event_the_server_cannot_take_is_a_warning_not_a_failure(server_without_events, monkeypatch,
                                                                    caplog):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.setenv("EMBEDLINE_LOCAL_PREFECT_URL", server_without_events)
    with temporary_settings({PREFECT_API_URL: None}), caplog.at_level(logging.WARNING, "embedline.events"):
        assert emit_model_registered("mpnet", 768, "f" * 16, "/srv/embedline") is False
    assert f"embedline.model.registered not sent to {server_without_events}" in caplog.text

"""`make serve` for real: a Prefect server with its UI, the cpu/gpu pools, every deployment of
prefect.yaml, a cpu and a gpu worker. An ingest deployment run embeds on the gpu pool; headless Chromium
then finds the run and its artifacts in the UI. (Shards on two hosts: tests/hosts/test_multi_host.py.)"""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from embedline.storage import catalog
from embedline.workspace import Workspace
from embedline.tasks.models import add_model
from tests.conftest import DEBIAN_CASE
from tests.flows.test_shards import table_content

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
OUTPUT = ROOT / "tests" / "output"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("served")
    ws = Workspace.from_env(root / "home").ensure()
    add_model(ws, "tiny", str(tiny_model_dir))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(EMBEDLINE_SERVE_DIR=str(root / "serve"), EMBEDLINE_HOME=str(ws.home), PREFECT_PORT=str(port),
               GPU_WORKERS="1", PREFECT_WORKER_QUERY_SECONDS="2", VENV=sys.prefix,
               PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED="false")  # no cron run (06:00 UTC) in the tests'
    started = subprocess.run(
        [str(ROOT / "deploy/local/serve.sh")], env=env, capture_output=True, text=True, timeout=300
    )
    api = f"http://127.0.0.1:{port}/api"
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield {"ws": ws, "api": api, "ui": f"http://127.0.0.1:{port}", "env": {**env, "PREFECT_API_URL": api},
               "serve_dir": root / "serve"}
    finally:
        subprocess.run([str(ROOT / "deploy/local/stop.sh")], env=env, capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def sharded_run(served):
    """The ingest deployment, run the way the UI's "Run" button runs it; its embedding goes to the gpu pool
    (shards on two hosts, and equal to a one-process run: tests/hosts/test_multi_host.py)."""
    params = {"source": str(DEBIAN_CASE), "model": "tiny"}
    args = [
        str(Path(sys.prefix) / "bin" / "prefect"),
        "deployment",
        "run",
        "ingest-corpus/ingest-debian",
        "--watch",
        "--watch-timeout",
        "300",
    ] + [a for k, v in params.items() for a in ("--param", f"{k}={v}")]
    result = subprocess.run(args, env=served["env"], capture_output=True, text=True, timeout=360)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return flow_runs(served["api"], "ingest-corpus")[0]


def flow_runs(api: str, flow: str) -> list[dict]:
    body = {"flows": {"name": {"any_": [flow]}}, "sort": "START_TIME_DESC"}
    return httpx.post(f"{api}/flow_runs/filter", json=body, timeout=30).raise_for_status().json()


def test_every_deployment_of_prefect_yaml_is_served_with_pools_and_the_gpu_limit(served):
    api = served["api"]
    expected = {
        d["name"]: d["work_pool"]["name"]
        for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
    }
    deployments = httpx.post(f"{api}/deployments/filter", json={}, timeout=30).raise_for_status().json()
    assert {d["name"]: d["work_pool_name"] for d in deployments} == expected
    assert any(d["name"] == "ingest-debian" and d["schedules"] for d in deployments)
    limits = httpx.post(f"{api}/concurrency_limits/filter", json={}, timeout=30).raise_for_status().json()
    assert [(c["tag"], c["concurrency_limit"]) for c in limits] == [("gpu", 1)]


def test_served_ingest_embeds_on_the_gpu_pool_and_promotes(served, sharded_run):
    assert sharded_run["state_type"] == "COMPLETED"
    (shard,) = flow_runs(served["api"], "embed-shard")
    assert shard["state_type"] == "COMPLETED" and shard["parent_task_run_id"] is not None  # under the ingest
    # The worker that won the run's Pending transition labels it (an aborted submission labels nothing):
    assert shard["labels"].get("prefect.worker.name") == "gpu-0"
    ws = served["ws"]
    prod = catalog.get_alias(ws, "debian")
    assert prod["space"] == "debian__tiny"
    assert table_content(ws, "debian__tiny")["keys"]  # the shard's rows were committed by the parent


def test_the_ui_shows_the_run_and_its_artifacts(served, sharded_run):
    from playwright.sync_api import sync_playwright

    OUTPUT.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{served['ui']}/runs/flow-run/{sharded_run['id']}")
        page.get_by_text(sharded_run["name"]).first.wait_for(timeout=60_000)
        page.wait_for_load_state("networkidle")
        page.get_by_text("Artifacts", exact=True).first.click()
        for key in (
            "run-summary-debian",
            "validation-debian--tiny",
            "plots-debian--tiny",
            "lance-debian--tiny",
        ):
            page.get_by_text(key, exact=True).first.wait_for(timeout=30_000)
        page.screenshot(path=str(OUTPUT / "ui-flow-run-artifacts.png"), full_page=True)

        page.get_by_text("plots-debian--tiny", exact=True).first.click()
        image = page.locator("img[alt='pca']").first
        image.wait_for(timeout=30_000)
        assert image.evaluate("img => img.complete && img.naturalWidth") > 100  # the PNG renders in the UI
        page.screenshot(path=str(OUTPUT / "ui-plots-artifact.png"), full_page=True)
        browser.close()
    assert (OUTPUT / "ui-flow-run-artifacts.png").stat().st_size > 10_000


def test_models_add_on_the_served_machine_starts_the_refresh_in_its_own_home(served, sharded_run,
                                                                             tiny_model_dir):
    """No PREFECT_API_URL in the shell: the event still reaches `make serve`'s server, whose automation
    starts the opted-in refresh with the home the model was registered in (a copy of the served one), not
    the worker's. The cpu pool is paused meanwhile: with prefect.yaml's sample sizes the refresh takes
    minutes on 2 cores, and a run cancelled mid-way outlived the worker. (The refresh itself, with a home:
    tests/flows/test_refresh.py and test_integrity_serving.py.)"""
    ws, api = served["ws"], served["api"]
    other = served["serve_dir"].parent / "other-home"
    shutil.copytree(ws.home, other)
    env = {k: v for k, v in served["env"].items() if k != "PREFECT_API_URL"}
    env["EMBEDLINE_LOCAL_PREFECT_URL"] = api
    command = [str(Path(sys.prefix) / "bin" / "embedline"), "models", "add", "mpnet", str(tiny_model_dir),
               "--home", str(other)]
    pause(api, "cpu", True)
    try:
        added = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert added.returncode == 0 and "emitted embedline.model.registered" in added.stdout, added.stderr
        run = wait_for_run(api, "refresh-model", ("SCHEDULED",))
        assert run["parameters"]["home"] == str(other) and run["parameters"]["model"] == "mpnet"
        assert run["parameters"]["catalog_id"] == catalog.catalog_id(ws)  # a copy: the same catalog
        assert run["deployment_id"] is not None and run["work_pool_name"] == "cpu"
        httpx.delete(f"{api}/flow_runs/{run['id']}", timeout=30).raise_for_status()
    finally:
        pause(api, "cpu", False)
    assert catalog.get_alias(ws, "debian")["space"] == "debian__tiny"  # the worker's home is untouched


def pause(api: str, pool: str, paused: bool) -> None:
    httpx.patch(f"{api}/work_pools/{pool}", json={"is_paused": paused}, timeout=30).raise_for_status()


def wait_for_run(api: str, flow: str, states: tuple[str, ...], seconds: float = 300) -> dict:
    """The flow's only run once it is in one of `states` (the last one seen when time is up)."""
    deadline = time.monotonic() + seconds
    while True:
        runs = flow_runs(api, flow)
        if (runs and runs[0]["state_type"] in states) or time.monotonic() > deadline:
            assert len(runs) == 1, f"{len(runs)} runs of {flow}"
            return runs[0]
        time.sleep(1)

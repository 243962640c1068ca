"""The multi-host harness: PostgreSQL (catalog + the Prefect server's database), an S3-compatible server
(moto), one Prefect server on that Postgres, and hosts — each a folder of its own (`home/` is its
`EMBEDLINE_HOME`, `prefect/` its `PREFECT_HOME`) and, where namespaces can be made, a network and mount
namespace of its own. Hosts share nothing but Postgres, S3 and the Prefect API; `gpu` workers run on
hosts, and `embedline` commands run on any of them as a user would run them there.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.hosts.namespaces import Namespace, in_namespace

BUCKET = "embeddings"
KEYS = {"aws_access_key_id": "embedline", "aws_secret_access_key": "embedline"}
POOL = "gpu"
SHARD_DEPLOYMENT = "embed-shard"
# torch fp32 everywhere: no per-host OpenVINO conversion, and vectors comparable with a run in the test
ENGINE = {"EMBEDLINE_RUNTIME": "torch", "EMBEDLINE_PRECISION": "fp32"}


@dataclass
class Host:
    name: str
    folder: Path  # everything this host keeps; deleting it is losing the host's disk
    namespace: Namespace | None
    worker: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def home(self) -> Path:
        return self.folder / "home"

    @property
    def worker_name(self) -> str:
        return f"host-{self.name}"


@dataclass
class Cluster:
    root: Path  # hidden from every host but for its own folder and `data/`
    service: str  # the address Postgres, S3 and the Prefect API listen on
    catalog_url: str
    lance_env: dict[str, str]
    api: str
    hosts: dict[str, Host]
    mode: str  # "netns" or "loopback"
    ws: object = None  # the test's Workspace on the shared catalog and Lance (no host's home)
    commands: list[subprocess.Popen] = field(default_factory=list, repr=False)

    @property
    def data(self) -> Path:
        return self.root / "data"

    def env(self, host: Host, **extra: str) -> dict[str, str]:
        """What a process on `host` is told: its own folders, and the shared services."""
        base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "EMBEDLINE_"))}
        return {**base, "EMBEDLINE_HOME": str(host.home), "EMBEDLINE_CATALOG_URL": self.catalog_url,
                **self.lance_env, "PREFECT_API_URL": self.api, "PREFECT_HOME": str(host.folder / "prefect"),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1",
                "GX_ANALYTICS_ENABLED": "false", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
                **ENGINE, **extra}

    def command(self, host: Host, argv: list[str]) -> list[str]:
        if host.namespace is None:
            return argv
        return in_namespace(host.namespace, self.root, [host.folder, self.data], argv)

    def start(self, host: Host, argv: list[str], log: Path, **extra: str) -> subprocess.Popen:
        """`argv` on `host` in a process group of its own (so it can be killed with its children)."""
        with open(log, "ab") as out:
            return subprocess.Popen(self.command(host, argv), env=self.env(host, **extra), stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)

    def start_embedline(self, host: Host, *args: str, **extra: str) -> subprocess.Popen:
        """The `embedline` command on `host`, as a user there runs it (stopped at teardown if running)."""
        exe = str(Path(sys.executable).with_name("embedline"))
        process = subprocess.Popen(self.command(host, [exe, *args]), env=self.env(host, **extra),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                   text=True, start_new_session=True)
        self.commands.append(process)
        return process

    def stop_commands(self) -> None:
        for process in self.commands:
            stop_process(process)

    def start_worker(self, host: Host) -> None:
        argv = [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL,
                "--name", host.worker_name, "--limit", "1"]
        host.worker = self.start(host, argv, self.root / "logs" / f"worker-{host.name}.log",
                                 PREFECT_WORKER_QUERY_SECONDS="1", PREFECT_WORKER_HEARTBEAT_SECONDS="5")

    def kill_worker(self, host: Host) -> None:
        """SIGKILL the worker's process group: the worker and any flow run it started, with no goodbye."""
        if host.worker is not None and host.worker.poll() is None:
            os.killpg(host.worker.pid, signal.SIGKILL)
            host.worker.wait(timeout=30)
        host.worker = None

    def wait_online(self, hosts: list[Host], timeout: float = 120) -> None:
        wanted = {h.worker_name for h in hosts}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            workers = self.post(f"/work_pools/{POOL}/workers/filter", {})
            if wanted <= {w["name"] for w in workers if w["status"] == "ONLINE"}:
                return
            dead = [h.name for h in hosts if h.worker is None or h.worker.poll() is not None]
            if dead:
                raise RuntimeError(f"workers of hosts {dead} exited:\n{self.log_tail('worker-' + dead[0])}")
            time.sleep(0.5)
        raise RuntimeError(f"workers {sorted(wanted)} not online after {timeout:g} s")

    def post(self, path: str, body: dict):
        return httpx.post(f"{self.api}{path}", json=body, timeout=30).raise_for_status().json()

    def shard_runs(self, run_id: int) -> list[dict]:
        """The `embed-shard` flow runs of embedline run `run_id` (named `run-<id>-shard-<n>`)."""
        body = {"flow_runs": {"name": {"like_": f"run-{run_id}-shard-"}}, "sort": "NAME_ASC"}
        return self.post("/flow_runs/filter", body)

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.root / "logs" / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"

    def lost(self, host: Host) -> None:
        """The host is gone: its worker killed and its folder deleted."""
        self.kill_worker(host)
        shutil.rmtree(host.folder)


def free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def start_prefect_server(root: Path, service: str, database_url: str) -> tuple[subprocess.Popen, str]:
    """`prefect server start` on `service` with its database in PostgreSQL: (process, API URL) at once;
    `wait_healthy` before using it."""
    port = free_port(service)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(root / "server"), PREFECT_API_DATABASE_CONNECTION_URL=database_url,
               PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1")
    argv = [sys.executable, "-m", "prefect", "server", "start", "--host", service, "--port", str(port),
            "--no-ui", "--no-scheduler"]
    with open(root / "logs" / "server.log", "ab") as log:
        server = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, start_new_session=True)
    return server, f"http://{service}:{port}/api"


def wait_healthy(server: subprocess.Popen, api: str, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the Prefect server exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the Prefect server is not healthy after {timeout:g} s:\n{log.read_text()[-3000:]}")


def stop_process(process: subprocess.Popen | None) -> None:
    """Stop a process started in its own group, with its children."""
    if process is None or process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=15)
    except ProcessLookupError:
        pass


def create_shard_deployment(api: str) -> None:
    """The `gpu` process pool and the `embed-shard` deployment on it, as `make serve` makes them."""
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.workers.process import ProcessWorker

    with SyncPrefectClient(api) as client:
        client.create_work_pool(WorkPoolCreate(
            name=POOL, type="process", base_job_template=ProcessWorker.get_default_base_job_template()))
        flow_id = client.create_flow_from_name(SHARD_DEPLOYMENT)
        client.create_deployment(flow_id, SHARD_DEPLOYMENT, work_pool_name=POOL,
                                 entrypoint="embedline.flows.embed:embed_shard")


def storage_env(endpoint: str) -> dict[str, str]:
    options = {"aws_endpoint": endpoint, "aws_region": "us-east-1", "allow_http": "true", **KEYS}
    return {"EMBEDLINE_LANCE_URI": f"s3://{BUCKET}/lance",
            "EMBEDLINE_LANCE_STORAGE_OPTIONS": json.dumps(options)}

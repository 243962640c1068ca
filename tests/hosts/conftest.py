"""One multi-host cluster per module: hosts in network namespaces where they can be made here, else
processes on loopback (the namespace variant then skips, saying why). `HOSTS_LOOPBACK=1` runs the
loopback variant instead where namespaces work (to check the fallback; its hosts can see each other's files).
"""

import functools
import os
import shutil
from contextlib import ExitStack
from pathlib import Path

import boto3
import httpx
import psycopg
import pytest
from moto.server import ThreadedMotoServer

from embedline.settings import load
from embedline.tasks.model_store import push_model
from embedline.tasks.models import add_model
from embedline.workspace import Workspace
from tests.postgres_server import running_postgres
from tests.hosts.cluster import (BUCKET, KEYS, Cluster, Host, create_shard_deployment, start_prefect_server,
                                 storage_env, stop_process, wait_healthy)
from tests.hosts.namespaces import make_namespaces, namespace_problem, remove_namespaces

HOSTS = ("a", "b", "c")  # a and b run gpu workers; c is a fresh host that joins later


@functools.cache
def host_modes() -> list:
    """Namespaces where they can be made (then only them: the loopback run would add nothing); else the
    namespace variant skipped with the reason, and the same scenarios on loopback."""
    if os.environ.get("HOSTS_LOOPBACK") == "1":
        return ["loopback"]
    problem = namespace_problem()
    if problem is None:
        return ["netns"]
    why = f"{problem}: the loopback variant runs the same scenarios"
    skip = pytest.mark.skipif(problem is not None, reason=why)
    return [pytest.param("netns", marks=skip), "loopback"]


def pytest_generate_tests(metafunc):
    if "host_mode" in metafunc.fixturenames:
        metafunc.parametrize("host_mode", host_modes(), scope="module")


@pytest.fixture(scope="module")
def cluster(host_mode, tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("hosts")
    (root / "logs").mkdir()
    (root / "data").mkdir()
    with ExitStack() as stack:
        namespaces = []
        if host_mode == "netns":
            namespaces = make_namespaces(len(HOSTS))
            stack.callback(remove_namespaces, namespaces)
            service, trusted = namespaces[0].root_address, ("10.231.0.0/16",)
        else:
            service, trusted = "127.0.0.1", ()
        server_url = stack.enter_context(running_postgres(listen=(service,), trusted=trusted))
        with psycopg.connect(f"{server_url}/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE catalog")
            conn.execute("CREATE DATABASE prefect")

        prefect, api = start_prefect_server(  # it boots while the rest is set up
            root, service, server_url.replace("postgresql://", "postgresql+asyncpg://") + "/prefect")
        stack.callback(stop_process, prefect)

        moto = ThreadedMotoServer(ip_address=service, port=0, verbose=False)
        moto.start()
        stack.callback(moto.stop)
        endpoint = "http://{}:{}".format(*moto.get_host_and_port())
        reset_moto(endpoint)  # moto keeps buckets per process, across servers: start empty
        stack.callback(reset_moto, endpoint)  # and leave nothing to the next test in this process
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **KEYS)
        s3.create_bucket(Bucket=BUCKET)

        lance_env = storage_env(endpoint)
        cluster = Cluster(root, service, f"{server_url}/catalog", lance_env, api, {}, host_mode)
        stack.callback(cluster.stop_commands)
        cluster.ws = register_model(cluster, tiny_model_dir)
        wait_healthy(prefect, api, root / "logs" / "server.log")
        create_shard_deployment(api)
        for name, ns in zip(HOSTS, namespaces or [None] * len(HOSTS)):
            host = Host(name, root / "hosts" / name, ns)
            host.home.mkdir(parents=True)  # empty: hosts fetch the model's files from the store
            cluster.hosts[name] = host
            stack.callback(cluster.kill_worker, host)
        for name in ("a", "b"):
            cluster.start_worker(cluster.hosts[name])
        cluster.wait_online([cluster.hosts["a"], cluster.hosts["b"]])
        yield cluster


def reset_moto(endpoint: str) -> None:
    httpx.post(f"{endpoint}/moto-api/reset", timeout=30).raise_for_status()


def register_model(cluster: Cluster, tiny_model_dir: Path) -> Workspace:
    """`tiny` registered from a folder no host can see, and pushed to the file store, where hosts find it
    by name + fingerprint. The returned workspace (the test's) reads the shared catalog, store and Lance."""
    setup = cluster.root / "setup"
    shutil.copytree(tiny_model_dir, setup / "tiny")
    settings = load(home=str(setup / "home"), catalog_url=cluster.catalog_url,
                    lance_uri=cluster.lance_env["EMBEDLINE_LANCE_URI"],
                    lance_storage_options=cluster.lance_env["EMBEDLINE_LANCE_STORAGE_OPTIONS"])
    ws = Workspace.from_env(setup / "home", settings=settings).ensure()
    add_model(ws, "tiny", str(setup / "tiny"))
    push_model(ws, "tiny")
    return ws

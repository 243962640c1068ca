"""A `--query` source reads Postgres tables and S3 files with the extensions embedline installs, on a
machine that cannot download DuckDB extensions (no home folder to install them into, no network)."""

import io

import boto3
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from moto.server import ThreadedMotoServer

from embedline.storage.query_source import iter_query_rows


@pytest.fixture
def no_extension_downloads(tmp_path, monkeypatch):
    """No extension cached under HOME, and none can be installed there (DuckDB's autoinstall fails on a
    missing home): what loads must come from the packages."""
    monkeypatch.setenv("HOME", str(tmp_path / "no-such-home"))


def test_a_query_source_reads_a_postgres_table_offline(postgres_url, no_extension_downloads):
    with psycopg.connect(postgres_url) as pg:
        pg.execute("CREATE TABLE tickets (id int, body text)")
        pg.execute("INSERT INTO tickets VALUES (1, 'disk full'), (2, 'printer on fire')")
    rows = list(iter_query_rows(  # (the test server trusts local users: no password in its URL)
        f"SELECT id, body AS text FROM postgres_scan('{postgres_url}', 'public', 'tickets') ORDER BY id"
    ))
    assert rows == [{"id": 1, "text": "disk full"}, {"id": 2, "text": "printer on fire"}]


def test_a_query_source_reads_parquet_from_s3_with_the_credential_chain(no_extension_downloads, monkeypatch):
    """The README's pattern: the secret reads the environment (the aws extension), the query holds none."""
    for name, value in (("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"),
                        ("AWS_REGION", "us-east-1")):
        monkeypatch.setenv(name, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        s3 = boto3.client("s3", endpoint_url=f"http://{host}:{port}", region_name="us-east-1",
                          aws_access_key_id="test", aws_secret_access_key="test")
        s3.create_bucket(Bucket="corpus")
        body = io.BytesIO()
        pq.write_table(pa.table({"id": ["a", "b"], "text": ["one", "two"]}), body)
        s3.put_object(Bucket="corpus", Key="docs.parquet", Body=body.getvalue())
        rows = list(iter_query_rows(
            "CREATE SECRET (TYPE s3, PROVIDER credential_chain, CHAIN 'env', "
            f"ENDPOINT '{host}:{port}', URL_STYLE 'path', USE_SSL false); "
            "SELECT id, text FROM read_parquet('s3://corpus/docs.parquet') ORDER BY id"
        ))
    finally:
        server.stop()
    assert rows == [{"id": "a", "text": "one"}, {"id": "b", "text": "two"}]

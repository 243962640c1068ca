"""The file store runs share (`storage.files`): with Lance on an object store, staging, shard hand-offs,
quarantine records, GX reports, adapters and pushed model files live in the bucket, never on one
machine's disk."""

import json
import os
import shutil
import threading
import urllib.request
from types import SimpleNamespace

import boto3
import numpy as np
import pytest
from moto.server import ThreadedMotoServer

from embedline.api import connect
from embedline.errors import BadInput, EmbedlineError, NotFound, TransientError
from embedline.storage import catalog, embeddings, files
from embedline.tasks.adapter_files import cache_path, fetch_adapter, load_adapter, save_adapter
from embedline.tasks.adapters import Adapter
from embedline.tasks.model_store import fetch_model, manifest_key, model_key
from embedline.tasks.models import add_model, resolve_model
from embedline.tasks.publishing import clear_staging
from embedline.workspace import Workspace
from tests.conftest import ingest, run_cli

STORE = "lance/_embedline"  # the store's prefix in the bucket when only EMBEDLINE_LANCE_URI is set


@pytest.fixture
def s3(workspace, monkeypatch):
    """A moto S3 server with bucket `embeddings`; Lance at s3://embeddings/lance, the store beside it."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    reset_moto(endpoint)  # moto keeps buckets per process, across servers: start empty
    keys = {"aws_access_key_id": "embedline", "aws_secret_access_key": "embedline"}
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **keys)
    client.create_bucket(Bucket="embeddings")
    monkeypatch.setenv("EMBEDLINE_LANCE_URI", "s3://embeddings/lance")
    monkeypatch.setenv("EMBEDLINE_LANCE_STORAGE_OPTIONS", json.dumps(
        {"aws_endpoint": endpoint, "aws_region": "us-east-1", "allow_http": "true", **keys}))

    def objects(prefix: str) -> list[str]:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket="embeddings", Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    yield SimpleNamespace(ws=Workspace.from_env(workspace.home), client=client, objects=objects)
    reset_moto(endpoint)  # and leave nothing for the next test's server
    server.stop()


def reset_moto(endpoint: str) -> None:
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")).close()


def local_files(folder) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_the_store_is_the_home_locally_and_beside_lance_on_an_object_store(tmp_path, monkeypatch):
    monkeypatch.delenv("EMBEDLINE_LANCE_URI", raising=False)
    monkeypatch.delenv("EMBEDLINE_STORE_URI", raising=False)
    local = Workspace.from_env(tmp_path / "home")
    assert files.store_uri(local) == str(local.home)  # today's layout: <home>/staging, <home>/quarantine
    monkeypatch.setenv("EMBEDLINE_LANCE_URI", "s3://bucket/lance/")
    assert files.store_uri(Workspace.from_env(tmp_path / "home")) == "s3://bucket/lance/_embedline"
    monkeypatch.setenv("EMBEDLINE_STORE_URI", "s3://other/shared/")
    assert files.store_uri(Workspace.from_env(tmp_path / "home")) == "s3://other/shared"
    monkeypatch.setenv("EMBEDLINE_STORE_URI", "gs://bucket/x")
    with pytest.raises(BadInput, match="EMBEDLINE_STORE_URI='gs://bucket/x': use s3://"):
        Workspace.from_env(tmp_path / "home")


def test_a_sharded_run_hands_off_through_the_bucket_and_leaves_nothing_on_local_disk(s3, debian_case,
                                                                                     monkeypatch):
    from embedline.flows import embed

    shard_calls, seen_during = [], []
    original = embed.embed_shard

    def shard_on_another_machine(**parameters):
        """Run the shard, then return nothing: the parent must read its result from the bucket."""
        shard_calls.append(parameters)
        original(**parameters)
        seen_during.append((local_files(s3.ws.staging_dir), s3.objects(f"{STORE}/staging/")))

    monkeypatch.setattr(embed, "embed_shard", shard_on_another_machine)
    summary = ingest(s3.ws, debian_case, shard_size=50)  # 120 documents → 3 shards, here in turn

    assert summary.status == "succeeded" and summary.docs_new == 120 and len(shard_calls) == 3
    staging = f"s3://embeddings/{STORE}/staging/run-{summary.run_id}"
    assert [call["docs_uri"] for call in shard_calls] == [
        f"{staging}/shard-{i}/documents.arrow" for i in range(3)]
    assert all(call["home"] == str(s3.ws.home) for call in shard_calls)  # run here: the run's own home
    assert all(found == [] for found, _ in seen_during)  # nothing staged on this machine's disk
    last_objects = seen_during[-1][1]
    prefix = f"{STORE}/staging/run-{summary.run_id}"
    assert {f"{prefix}/documents.arrow", f"{prefix}/shard-2/chunks.arrow",
            f"{prefix}/shard-2/chunk_counts.arrow", f"{prefix}/shard-2/embedded.json"} <= set(last_objects)
    assert s3.objects(f"{STORE}/staging/run-") == []  # cleared once the run was recorded
    assert local_files(s3.ws.staging_dir) == []

    reports = s3.objects(f"{STORE}/reports/gx/debian__tiny/run-{summary.run_id}/")
    assert any(key.endswith("data_docs/local_site/index.html") for key in reports)
    assert any("/validations/" in key for key in reports)  # GX's results, beside its Data Docs
    assert local_files(s3.ws.reports_dir) == []
    assert embeddings.connect(s3.ws).table_names() == ["debian__tiny"]  # the store is not a table


def test_quarantined_records_land_in_the_bucket_and_read_back(s3, tmp_path):
    source = tmp_path / "bad.jsonl"
    good = [json.dumps({"id": f"d{i}", "text": f"document {i} about tiling window managers"})
            for i in range(4)]
    source.write_text("\n".join(good[:2] + ['{"id": "broken", "text": '] + good[2:]) + "\n")

    summary = ingest(s3.ws, source, corpus="bad")

    assert summary.docs_quarantined == 1
    assert s3.objects(f"{STORE}/quarantine/") == [f"{STORE}/quarantine/run-{summary.run_id}.jsonl"]
    assert local_files(s3.ws.quarantine_dir) == []
    (row,) = connect(s3.ws.home).quarantine("bad")
    assert (row["run_id"], row["position"], row["raw"]) == (summary.run_id, 3, '{"id": "broken", "text": ')
    shown = run_cli("quarantine", "bad", "--json", home=s3.ws.home, check=True)
    assert [r["reason"] for r in json.loads(shown.stdout)] == [row["reason"]]


def test_an_adapter_saved_by_one_workspace_loads_in_another_with_an_empty_home(
        s3, tmp_path, tiny_model_dir, postgres_url, monkeypatch):
    monkeypatch.setenv("EMBEDLINE_CATALOG_URL", postgres_url)  # one catalog, two machines' homes
    first = Workspace.from_env(tmp_path / "first").ensure()
    add_model(first, "tiny", str(tiny_model_dir))
    rng = np.random.default_rng(0)
    adapter = Adapter("ridge", rng.normal(size=(16, 32)).astype(np.float32), np.zeros(32, np.float32))
    key, digest = save_adapter(first, adapter, "debian", "small", "tiny")
    catalog.record_adapter(first, "debian", "small", "tiny", "ridge", 0.9, key, {}, 80, digest)
    assert s3.objects(f"{STORE}/adapters/") == [f"{STORE}/{key}"]
    assert not (first.home / "adapters").exists()

    second = Workspace.from_env(tmp_path / "second").ensure()  # nothing on its disk but an empty home
    found = catalog.latest_adapters(second)[("debian", "small", "tiny")]
    assert found == (key, digest)
    loaded = load_adapter(second, *found)
    np.testing.assert_array_equal(loaded.weight, adapter.weight)
    assert cache_path(second, digest).is_file()  # fetched once, by digest

    wrong = "0" * 64
    catalog.record_adapter(first, "debian", "small", "tiny", "ridge", 0.9, key, {}, 80, wrong)
    third = Workspace.from_env(tmp_path / "third").ensure()
    with pytest.raises(BadInput, match="has sha256 .*, the catalog expects 0000000000000000…"):
        load_adapter(third, *catalog.latest_adapters(third)[("debian", "small", "tiny")])
    assert not cache_path(third, wrong).exists()

    old = adapter.save(tmp_path / "old.npz")  # a catalog from before kept an absolute path, no digest
    catalog.record_adapter(first, "debian", "old", "tiny", "ridge", 0.9, str(old), {}, 80)
    legacy = load_adapter(second, *catalog.latest_adapters(second)[("debian", "old", "tiny")])
    np.testing.assert_array_equal(legacy.weight, adapter.weight)


def test_a_host_without_a_models_files_fetches_the_pushed_ones_by_fingerprint(s3, tiny_model_dir, tmp_path):
    specs = {name: add_model(s3.ws, name, str(shutil.copytree(tiny_model_dir, tmp_path / name)))
             for name in ("moved", "unpushed")}  # registered from folders another host had
    spec = specs["moved"]
    pushed = connect(s3.ws.home).push_model("moved")
    assert pushed == f"s3://embeddings/{STORE}/models/moved-{spec.fingerprint}"
    assert f"{STORE}/models/moved-{spec.fingerprint}/config.json" in s3.objects(f"{STORE}/models/")
    for name in ("moved", "unpushed"):
        shutil.rmtree(tmp_path / name)  # this host no longer has them

    with pytest.raises(NotFound, match=r"no files on this host nor in the file store .*models push unpushed"):
        resolve_model(s3.ws, "unpushed")
    found = resolve_model(s3.ws, "moved")
    assert found.path == str(s3.ws.home / "cache" / "models" / spec.fingerprint)  # fetched, checked
    assert found.key() == spec.key()


def test_golden_queries_and_the_residual_ranking_live_in_the_bucket_for_every_host(s3, tmp_path):
    from embedline.tasks.adapters import fit_procrustes
    from embedline.tasks.evaluation import read_golden, save_golden
    from embedline.tasks.refresh import residual_key, save_residual_model

    pairs = [{"query": "tiling window manager", "doc_id": "i3"}, {"query": "text editor", "doc_id": "vim"}]
    save_golden(s3.ws, "debian", pairs)
    rng = np.random.default_rng(0)
    old, new = rng.normal(size=(40, 8)).astype(np.float32), rng.normal(size=(40, 8)).astype(np.float32)
    save_residual_model(s3.ws, residual_key("debian", "small"), old, new, fit_procrustes(new, old))
    assert s3.objects(f"{STORE}/golden/") == [f"{STORE}/golden/debian.jsonl"]
    assert s3.objects(f"{STORE}/adapters/") == [f"{STORE}/adapters/debian__small__residual.npz"]
    assert local_files(s3.ws.home / "golden") == local_files(s3.ws.home / "adapters") == []
    other = Workspace.from_env(tmp_path / "another-host")  # an empty home, the same bucket
    assert read_golden(other, "debian") == pairs
    assert read_golden(other, "tickets") == []


def endpoint_of() -> str:
    return json.loads(os.environ["EMBEDLINE_LANCE_STORAGE_OPTIONS"])["aws_endpoint"]


def test_keys_and_endpoint_given_only_as_aws_variables_reach_the_bucket_as_they_reach_lance(s3, monkeypatch):
    endpoint = endpoint_of()
    monkeypatch.delenv("EMBEDLINE_LANCE_STORAGE_OPTIONS")  # compose passes only AWS_* variables
    for name, value in {"AWS_ACCESS_KEY_ID": "embedline", "AWS_SECRET_ACCESS_KEY": "embedline",
                        "AWS_ENDPOINT_URL": endpoint, "AWS_ALLOW_HTTP": "true", "AWS_REGION": "us-east-1",
                        "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(name, value)
    files.open_store(Workspace.from_env(s3.ws.home)).write_text("staging/run-1/x.txt", "from env")
    assert s3.objects(f"{STORE}/staging/") == [f"{STORE}/staging/run-1/x.txt"]

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens: options must win
    options = {"endpoint_url": endpoint, "aws_allow_http": "true", "aws_default_region": "us-east-1"}
    store = files.Store("s3://embeddings/lance/_embedline", options)
    assert store.read_text("staging/run-1/x.txt") == "from env"
    assert files.s3_settings({"token": "t", "region": "eu-west-1"}, {"AWS_REGION": "us-east-1",
                                                                    "AWS_SESSION_TOKEN": "env"}) == {
        "region": "eu-west-1", "session_token": "t"}  # the cache key: env values count, options win


def test_shards_run_here_use_the_runs_home_when_embedline_home_is_unset(s3, debian_case, monkeypatch,
                                                                       tmp_path):
    monkeypatch.delenv("EMBEDLINE_HOME", raising=False)  # a deployment run given home=..., env unset
    monkeypatch.chdir(tmp_path)  # a shard on the default home would look in ./.embedline
    summary = ingest(s3.ws, debian_case, shard_size=50)
    assert (summary.status, summary.docs_new) == ("succeeded", 120)
    assert not (tmp_path / ".embedline").exists()


def test_clearing_staging_warns_about_a_folder_it_cannot_remove_and_clears_the_rest(workspace, capsys):
    store = files.open_store(workspace)
    (workspace.staging_dir / "run-98").mkdir(parents=True)
    (workspace.staging_dir / "run-98" / "documents.arrow").write_bytes(b"x")
    (workspace.staging_dir / "run-97").write_text("a file where a folder belongs: delete_dir fails")

    removed = clear_staging(workspace)

    assert removed == [store.uri_of("staging/run-98")]
    assert f"could not clear {store.uri_of('staging/run-97')}" in capsys.readouterr().out
    assert not (workspace.staging_dir / "run-98").exists()


def test_a_folder_another_run_removes_first_is_not_an_error(workspace):
    """Two runs ending at once both clear an ended run's staging: the one that lost the race failed its
    run with NotFound after recording it succeeded (seen on CI, two hosts over S3)."""
    store = files.open_store(workspace)
    store.write_text("staging/run-9/documents.arrow", "staged")
    real = store.fs

    class OtherRunClearsItFirst:
        def __getattr__(self, name):
            return getattr(real, name)

        def get_file_info(self, path):
            info = real.get_file_info(path)
            real.delete_dir(path)  # right after this store looked
            return info

    store.fs = OtherRunClearsItFirst()
    store.delete("staging/run-9")
    assert not (workspace.staging_dir / "run-9").exists()


def test_an_unreachable_store_never_replaces_the_runs_own_error(workspace, monkeypatch, capsys):
    monkeypatch.setenv("EMBEDLINE_LANCE_URI", "s3://embeddings/lance")
    monkeypatch.setenv("EMBEDLINE_LANCE_STORAGE_OPTIONS", json.dumps(
        {"aws_endpoint": "http://127.0.0.1:9", "aws_region": "us-east-1", "allow_http": "true",
         "aws_access_key_id": "a", "aws_secret_access_key": "b"}))
    ws = Workspace.from_env(workspace.home)
    with pytest.raises(EmbedlineError, match="the run's own error"):
        try:
            raise EmbedlineError("the run's own error")
        finally:
            clear_staging(ws)  # as the ingest flow's `finally` does
    assert "could not list s3://embeddings/lance/_embedline/staging" in capsys.readouterr().out
    with pytest.raises(TransientError, match="file store s3://.*EMBEDLINE_LANCE_STORAGE_OPTIONS or the AWS_"):
        files.open_store(ws).read_text("staging/x")


def test_loaders_fetching_one_adapter_at_once_on_one_host_all_get_it(s3, tmp_path):
    rng = np.random.default_rng(0)
    adapter = Adapter("ridge", rng.normal(size=(64, 64)).astype(np.float32), np.zeros(64, np.float32))
    key, digest = save_adapter(s3.ws, adapter, "debian", "small", "tiny")
    for trial in range(4):
        host = Workspace.from_env(tmp_path / f"host-{trial}").ensure()
        barrier, found, errors = threading.Barrier(3), [], []

        def load():
            barrier.wait()
            try:
                found.append(fetch_adapter(host, key, digest))
            except Exception as err:  # noqa: BLE001 - the assertion below shows it
                errors.append(repr(err))

        threads = [threading.Thread(target=load) for _ in range(3)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        assert errors == [] and found == [cache_path(host, digest)] * 3
        assert sorted(p.name for p in cache_path(host, digest).parent.iterdir()) == [digest]  # no halves

    target = tmp_path / "dl" / "missing.npz"
    with pytest.raises(NotFound, match="does not exist"):
        files.open_store(s3.ws).download("adapters/missing.npz", target)
    assert list(target.parent.iterdir()) == []  # the temporary file went with the failed copy


def test_a_manifest_naming_a_file_outside_the_model_folder_is_refused(s3, tiny_model_dir, tmp_path):
    spec = add_model(s3.ws, "moved", str(shutil.copytree(tiny_model_dir, tmp_path / "moved")))
    connect(s3.ws.home).push_model("moved")
    manifest = f"{STORE}/{manifest_key('moved', spec.fingerprint)}"
    for bad in ("../escaped.txt", "/tmp/escaped.txt", "a//b", "."):
        s3.client.put_object(Bucket="embeddings", Key=manifest, Body=json.dumps({"files": {bad: "0" * 64}}))
        with pytest.raises(BadInput, match="not a plain relative file name"):
            fetch_model(s3.ws, "moved", spec.fingerprint)
    assert not (s3.ws.home / "cache" / "escaped.txt").exists() and not (tmp_path / "escaped.txt").exists()

    s3.client.delete_object(Bucket="embeddings", Key=manifest)  # files there, no manifest: mid-push
    assert f"{STORE}/{model_key('moved', spec.fingerprint)}/config.json" in s3.objects(f"{STORE}/models/")
    assert fetch_model(s3.ws, "moved", spec.fingerprint) is None


def test_the_store_goes_beside_lance_only_on_s3_and_never_takes_its_query(tmp_path, monkeypatch):
    monkeypatch.delenv("EMBEDLINE_STORE_URI", raising=False)
    home = tmp_path / "home"
    for lance, store in {"s3a://bucket/lance?region=x": "s3a://bucket/lance/_embedline",
                         "gs://bucket/lance": str(home), "az://container/lance": str(home),
                         "s3+ddb://bucket/lance?ddbTableName=t": str(home)}.items():
        monkeypatch.setenv("EMBEDLINE_LANCE_URI", lance)
        assert files.store_uri(Workspace.from_env(home)) == store


def test_a_run_s_plots_land_in_the_bucket_and_in_its_plots_artifact(s3, debian_case):
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    from embedline.flows.reports import publish_version_artifacts

    summary = ingest(s3.ws, debian_case)
    written = publish_version_artifacts(s3.ws, "debian__tiny", summary.run_id, summary.version, [])
    assert written == [f"s3://embeddings/{STORE}/reports/plots/debian__tiny-run-{summary.run_id}-pca.png"]
    assert s3.objects(f"{STORE}/reports/plots/") == [w.removeprefix("s3://embeddings/") for w in written]
    with get_client(sync_client=True) as client:  # the session's Prefect: other tests' runs made this key too
        shown = [a.data for a in client.read_artifacts(  # the newest few of that key: this run's is one
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["plots-debian--tiny"])),
            sort=ArtifactSort.CREATED_DESC, limit=5)]
    assert [d for d in shown if written[0] in d and "data:image/png;base64," in d]

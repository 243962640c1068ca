"""Past one machine, for real: hosts that share nothing but PostgreSQL, S3 and the Prefect API.

A sharded ingest embeds its shards on two hosts and commits once; two corpora ingested at the same moment
from two hosts both succeed; a worker killed mid-shard leaves a cleanly failed (or retried) run and no
half-committed version; then the first host's disk is gone and a fresh host with an empty home serves
search, SQL, versions and quarantine, and re-ingests the unchanged source with nothing to embed.
The scenarios run in this order on one cluster (see conftest.py); each states what it builds on.
"""

import json
import time
from pathlib import Path

import numpy as np
import pytest

from embedline.storage import catalog, embeddings
from embedline.storage.locks import space_lock
from embedline.tasks.models import add_model
from embedline.workspace import Workspace
from tests.conftest import DEBIAN_CASE, ingest
from tests.hosts.cluster import ENGINE
from tests.flows.test_shards import table_content

pytestmark = pytest.mark.slow
DOCS = [json.loads(line) for line in DEBIAN_CASE.read_text().splitlines()]
BAD = {"id": "empty-one", "title": "an empty record", "text": ""}  # quarantined: no text


def write_source(cluster, name: str, records: list[dict]) -> Path:
    path = cluster.data / name
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def summary_of(cluster, returncode: int, stdout: str, stderr: str) -> dict:
    assert returncode == 0, f"exit {returncode}: {stderr[-3000:]}\nworker a: {cluster.log_tail('worker-a')}" \
                            f"\nworker b: {cluster.log_tail('worker-b')}"
    (summary,) = json.loads(stdout)
    return summary


def json_rows(process, stdout: str, stderr: str) -> list[dict]:
    assert process.returncode == 0, stderr[-3000:]
    return json.loads(stdout)


def kept_files(host) -> list[str]:
    """What `host` keeps in its home besides caches (fetched model files, the DuckDB extension link)."""
    return sorted(str(p.relative_to(host.home)) for p in host.home.rglob("*")
                  if p.is_file() and p.relative_to(host.home).parts[0] not in ("cache", "extensions"))


def versions_complete(ws, space: str) -> None:
    """Every version the catalog records as passed holds exactly the rows the catalog says it holds."""
    for version in catalog.list_versions(ws, space.split("__")[0]):
        if version["space"] == space and version["validation"] == "passed":
            assert embeddings.dataset_at(ws, space, version["version"]).count_rows() == version["row_count"]


def test_a_sharded_ingest_embeds_its_shards_on_both_hosts(cluster, tiny_model_dir, tmp_path, monkeypatch):
    source = write_source(cluster, "debian.jsonl", DOCS[:40] + [BAD])
    process = cluster.start_embedline(cluster.hosts["a"], "ingest", "debian", str(source), "--model", "tiny",
                                      "--shard-size", "20", "--format", "json")
    for name, value in ENGINE.items():  # meanwhile the same source in one process, local disk, no shards
        monkeypatch.setenv(name, value)
    single_ws = Workspace.from_env(tmp_path / "single").ensure()
    add_model(single_ws, "tiny", str(tiny_model_dir))
    single = ingest(single_ws, source, shard_size=0)
    stdout, stderr = process.communicate(timeout=300)
    summary = summary_of(cluster, process.returncode, stdout, stderr)
    assert (summary["status"], summary["docs_new"], summary["docs_quarantined"]) == ("succeeded", 40, 1)

    shards = cluster.shard_runs(summary["run_id"])
    assert [s["state_type"] for s in shards] == ["COMPLETED", "COMPLETED"]
    assert sorted(s["labels"].get("prefect.worker.name") for s in shards) == ["host-a", "host-b"]
    assert kept_files(cluster.hosts["b"]) == []  # its shard came and went through the store

    ws = cluster.ws
    assert list(embeddings.open_space(ws, "debian__tiny").tags.list()) == [f"run-{summary['run_id']}"]
    sharded, unsharded = table_content(ws, "debian__tiny"), table_content(single_ws, "debian__tiny")
    assert sharded["keys"] == unsharded["keys"] and len(sharded["keys"]) == single.chunks_embedded
    np.testing.assert_allclose(sharded["vectors"], unsharded["vectors"], atol=1e-5)


def test_two_corpora_ingested_at_the_same_moment_from_two_hosts_both_succeed(cluster):
    sources = {"alpha": write_source(cluster, "alpha.jsonl", DOCS[40:60]),
               "beta": write_source(cluster, "beta.jsonl", DOCS[60:80])}
    started = {corpus: cluster.start_embedline(cluster.hosts[host], "ingest", corpus, str(sources[corpus]),
                                               "--model", "tiny", "--format", "json")
               for corpus, host in (("alpha", "a"), ("beta", "b"))}
    summaries = {}
    for corpus, process in started.items():
        stdout, stderr = process.communicate(timeout=300)
        summaries[corpus] = summary_of(cluster, process.returncode, stdout, stderr)

    ws = cluster.ws
    for corpus, records in (("alpha", DOCS[40:60]), ("beta", DOCS[60:80])):
        summary = summaries[corpus]
        assert (summary["status"], summary["docs_new"], summary["promoted"]) == ("succeeded", 20, True)
        prod = catalog.get_alias(ws, corpus)
        assert (prod["space"], prod["version"]) == (f"{corpus}__tiny", summary["version"])
        served = embeddings.dataset_at(ws, prod["space"], prod["version"]).to_table(columns=["doc_id"])
        assert set(served.column("doc_id").to_pylist()) == {r["id"] for r in records}


def kill_when_claimed(cluster, host, process, seen: set[str], timeout: float = 180) -> dict:
    """SIGKILL `host`'s worker as soon as it has claimed a shard that is not finished; that shard."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        runs = cluster.post("/flow_runs/filter", {"flows": {"name": {"any_": ["embed-shard"]}}})
        for run in runs:
            claimed = run["labels"].get("prefect.worker.name") == host.worker_name
            if run["id"] not in seen and claimed and run["state_type"] in ("PENDING", "RUNNING"):
                cluster.kill_worker(host)
                return run
        time.sleep(0.2)
    raise AssertionError(f"host {host.name} claimed no shard in time (ingest exit {process.poll()})")


def test_a_worker_killed_mid_shard_leaves_no_half_committed_version(cluster):
    """Builds on alpha's first version. The killed shard's run fails cleanly at the shard deadline (or
    succeeds, retried): prod never moves to a version without every row, and the space's lock is free."""
    ws, space = cluster.ws, "alpha__tiny"
    before = catalog.get_alias(ws, "alpha")
    revised = [dict(d, text=d["text"] + " Revised.") for d in DOCS[40:60]] + DOCS[80:100]
    source = write_source(cluster, "alpha-2.jsonl", revised)
    shard_filter = {"flows": {"name": {"any_": ["embed-shard"]}}}
    seen = {r["id"] for r in cluster.post("/flow_runs/filter", shard_filter)}
    process = cluster.start_embedline(cluster.hosts["a"], "ingest", "alpha", str(source), "--model", "tiny",
                                      "--shard-size", "20", "--format", "json", EMBEDLINE_SHARD_TIMEOUT="10")
    killed = kill_when_claimed(cluster, cluster.hosts["b"], process, seen)
    stdout, stderr = process.communicate(timeout=300)
    run = catalog.get_run(ws, int(killed["name"].split("-")[1]))

    if process.returncode == 0:  # retried elsewhere and succeeded: prod serves every revised document
        prod = catalog.get_alias(ws, "alpha")
        assert run["status"] == "succeeded" and prod["version"] != before["version"]
        served = embeddings.dataset_at(ws, space, prod["version"]).to_table(columns=["doc_id"])
        assert set(served.column("doc_id").to_pylist()) == {d["id"] for d in revised}
    else:
        assert run["status"] == "failed" and "shard" in run["error"], run
        assert "shard" in stderr.strip().splitlines()[-1]
        assert catalog.get_alias(ws, "alpha") == before  # prod still serves the last passed version
        assert f"run-{run['run_id']}" not in embeddings.open_space(ws, space).tags.list()
        latest = embeddings.dataset_at(ws, space)  # nothing of the killed run reached the table
        assert latest.count_rows() == catalog.get_version(ws, space, before["version"])["row_count"]
    versions_complete(ws, space)
    with space_lock(ws, space):  # free again: a held lock raises SpaceBusy at once
        pass


def test_with_the_first_host_gone_a_fresh_host_serves_and_reingests_nothing(cluster):
    """Builds on debian's sharded run. Host c starts with an empty home."""
    ws = cluster.ws
    cluster.lost(cluster.hosts["a"])
    c = cluster.hosts["c"]
    prod = catalog.get_alias(ws, "debian")
    rows = catalog.get_version(ws, prod["space"], prod["version"])["row_count"]

    reads = {  # at once, as several users of the host would
        "search": ("search", "debian", DOCS[3]["title"], "-k", "3"),
        "sql": ("sql", "SELECT count(*) AS chunks, count(DISTINCT doc_id) AS docs, (SELECT list(doc_id) FROM "
                "quarantine WHERE corpus = 'debian') AS quarantined FROM debian"),
        "quarantine": ("quarantine", "debian"),
        "versions": ("versions", "debian"),
    }
    started = {name: cluster.start_embedline(c, *args, "--format", "json") for name, args in reads.items()}
    out = {name: json_rows(process, *process.communicate(timeout=300)) for name, process in started.items()}

    assert len(out["search"]) == 3 and {h["doc_id"] for h in out["search"]} <= {d["id"] for d in DOCS[:40]}
    assert out["sql"] == [{"chunks": rows, "docs": 40, "quarantined": ["empty-one"]}]
    (rejected,) = out["quarantine"]
    assert rejected["doc_id"] == "empty-one" and json.loads(rejected["raw"]) == BAD  # whole, from the store
    assert [(v["version"], v["validation"], v["aliases"]) for v in out["versions"]] == [
        (prod["version"], "passed", ["prod"])]

    process = cluster.start_embedline(c, "ingest", "debian", str(cluster.data / "debian.jsonl"), "--model",
                                      "tiny", "--format", "json")
    stdout, stderr = process.communicate(timeout=300)
    summary = summary_of(cluster, process.returncode, stdout, stderr)
    assert (summary["status"], summary["docs_unchanged"], summary["chunks_embedded"]) == ("succeeded", 40, 0)
    assert summary["docs_quarantined"] == 1
    assert kept_files(c) == []

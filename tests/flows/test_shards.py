"""Scale-out: a run over the shard size is embedded in shards and committed once, with the same rows
as a run that embeds everything in one place; on the gpu pool only while a worker is online, never
waiting past its deadline, and one failed shard cancels the others."""

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from uuid import uuid4

import numpy as np
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import Worker, WorkerStatus

from embedline.errors import EmbedlineError
from embedline.flows.embed import SHARD_DEPLOYMENT
from embedline.flows.ingest import ingest_corpus
from embedline.flows.shards import is_online, run_shards, unavailable_reason
from embedline.storage import catalog, embeddings
from embedline.storage.locks import space_lock
from embedline.tasks.batch import EmbeddedBatch
from embedline.workspace import Workspace
from embedline.tasks.models import add_model
from tests.conftest import ingest


def table_content(ws, space: str) -> dict:
    table = embeddings.dataset_at(ws, space).to_table(columns=["chunk_id", "doc_id", "text", "vector"])
    rows = sorted(zip(table.column("chunk_id").to_pylist(), table.column("doc_id").to_pylist(),
                      table.column("text").to_pylist(), embeddings.vector_matrix(table.column("vector"))))
    return {"keys": [r[:3] for r in rows], "vectors": np.stack([r[3] for r in rows])}


def test_sharded_run_commits_the_same_table_as_one_unsharded_run(
    workspace, debian_case, tiny_model_dir, tmp_path
):
    sharded = ingest(workspace, debian_case, shard_size=50)  # 120 documents → 3 shards
    single_ws = Workspace.from_env(tmp_path / "single").ensure()
    add_model(single_ws, "tiny", str(tiny_model_dir))
    single = ingest(single_ws, debian_case, shard_size=0)

    assert sharded.status == single.status == "succeeded"
    assert (sharded.docs_new, sharded.chunks_embedded, sharded.tokens_embedded) == (
        single.docs_new, single.chunks_embedded, single.tokens_embedded)
    a, b = table_content(workspace, "debian__tiny"), table_content(single_ws, "debian__tiny")
    assert a["keys"] == b["keys"]
    np.testing.assert_allclose(a["vectors"], b["vectors"], atol=1e-5)
    tags = [t for t in embeddings.open_space(workspace, "debian__tiny").tags.list()]
    assert tags == [f"run-{sharded.run_id}"]  # one version for the whole sharded run
    documents = catalog.known_documents(workspace, "debian__tiny")
    assert len(documents) == sharded.docs_new


# -- the gpu pool: workers online or not, deadlines, cancellation ---------------------------------------
@pytest.fixture
def shard_pool():
    """An `embed-shard` deployment on a work pool of its own, as `make serve` makes it, but with no worker
    process behind it: a test decides which workers look online (heartbeats), and nothing runs shards."""
    from prefect.client.schemas.actions import WorkPoolCreate

    pool = f"gpu-test-{uuid4().hex[:8]}"
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        flow_id = client.create_flow_from_name("embed-shard")
        deployment_id = client.create_deployment(flow_id, "embed-shard", work_pool_name=pool,
                                                 entrypoint="embedline.flows.embed:embed_shard")
    try:
        yield SimpleNamespace(pool=pool, deployment_id=deployment_id)
    finally:
        with get_client(sync_client=True) as client:
            client.delete_deployment(deployment_id)
            client.delete_work_pool(pool)


def shard_runs(deployment_id) -> dict[str, str]:
    """Flow run name → state type of every run of the deployment."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as client:
        only = DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
        runs = client.read_flow_runs(deployment_filter=only)
    return {run.name: run.state.type.value for run in runs}


def test_without_an_online_worker_the_shards_run_here_at_once_and_the_log_says_so(
        workspace, debian_case, shard_pool, caplog):
    reason = f"no worker of work pool {shard_pool.pool!r} is online"
    assert unavailable_reason(SHARD_DEPLOYMENT) == reason
    summary = ingest(workspace, debian_case, shard_size=50)
    assert summary.status == "succeeded" and summary.docs_new == 120
    assert shard_runs(shard_pool.deployment_id) == {}  # nothing was left waiting on the pool
    assert f"{reason}: embedding 3 shards here, in turn" in caplog.text


def test_a_worker_counts_as_online_only_while_its_heartbeats_are_recent():
    now = datetime.now(timezone.utc)
    worker = Worker(name="gpu-0", work_pool_id=uuid4(), status=WorkerStatus.ONLINE,
                    heartbeat_interval_seconds=30, last_heartbeat_time=now - timedelta(seconds=20))
    assert is_online(worker, now)
    assert not is_online(worker.model_copy(update={"last_heartbeat_time": now - timedelta(seconds=200)}), now)
    assert not is_online(worker.model_copy(update={"status": WorkerStatus.OFFLINE}), now)


def test_shards_nobody_runs_are_cancelled_at_the_deadline_and_the_lock_is_released(
        workspace, debian_case, shard_pool, monkeypatch):
    with get_client(sync_client=True) as client:  # a worker that looks alive but never takes a run
        client.send_worker_heartbeat(shard_pool.pool, "gpu-0", heartbeat_interval_seconds=30)
    monkeypatch.setenv("EMBEDLINE_SHARD_TIMEOUT", "2")

    with pytest.raises(EmbedlineError, match="did not finish within 2 s and were cancelled"):
        ingest(workspace, debian_case, shard_size=50)

    runs = shard_runs(shard_pool.deployment_id)
    assert len(runs) == 3 and set(runs.values()) == {"CANCELLED"}
    with space_lock(workspace, "debian__tiny"):  # free again: a held lock raises SpaceBusy at once
        pass
    (run,) = [r for r in catalog_runs(workspace)]
    assert run["status"] == "failed" and "did not finish within 2 s" in run["error"]


def set_state_on_creation(monkeypatch, states: dict) -> None:
    """Shards created through `run_shards` are put in `states[shard]` (a Prefect state factory, or an
    exception to raise instead of creating that shard), as a worker would move them."""
    from embedline.flows import shards

    create = shards.run_deployment

    def creating(deployment, parameters, **kwargs):
        wanted = states.get(parameters["shard"])
        if isinstance(wanted, Exception):
            raise wanted
        run = create(deployment, parameters=parameters, **kwargs)
        with get_client(sync_client=True) as client:
            for state in wanted or ():
                client.set_flow_run_state(run.id, state(), force=True)
        return run

    monkeypatch.setattr(shards, "run_deployment", creating)


def test_a_failed_shard_cancels_its_unfinished_siblings(shard_pool, monkeypatch):
    from prefect.states import Completed, Failed, Running

    set_state_on_creation(monkeypatch, {0: [Running, Completed], 1: [Failed], 2: [Running]})
    with pytest.raises(
        EmbedlineError, match=r"shard 1 \(flow run run-99-shard-1\) ended Failed: its sibling"
    ):
        run_shards(SHARD_DEPLOYMENT, [{"run_id": 99, "shard": i} for i in range(4)], timeout=60, poll=0.1)
    assert shard_runs(shard_pool.deployment_id) == {
        "run-99-shard-0": "COMPLETED", "run-99-shard-1": "FAILED",
        "run-99-shard-2": "CANCELLING",  # a worker would stop its process now
        "run-99-shard-3": "CANCELLED"}  # never picked up: nothing to stop


def test_shards_created_before_a_failed_dispatch_are_cancelled(shard_pool, monkeypatch):
    set_state_on_creation(monkeypatch, {2: RuntimeError("the Prefect API went away")})
    with pytest.raises(RuntimeError, match="went away"):
        run_shards(SHARD_DEPLOYMENT, [{"run_id": 98, "shard": i} for i in range(4)], timeout=60, poll=0.1)
    assert shard_runs(shard_pool.deployment_id) == {
        "run-98-shard-0": "CANCELLED",
        "run-98-shard-1": "CANCELLED",
    }


def test_the_deadline_is_per_running_shard_and_queued_shards_wait_while_others_progress(shard_pool):
    import threading
    import time

    from prefect.states import Completed, Running

    from embedline.flows.shards import wait_for_shards

    with get_client(sync_client=True) as client:
        runs = {i: client.create_flow_run_from_deployment(shard_pool.deployment_id, name=f"run-97-shard-{i}")
                for i in range(3)}

    def worker():  # one shard at a time, each 3 s: 9 s in all, past the 8 s deadline
        with get_client(sync_client=True) as client:
            for run in runs.values():
                client.set_flow_run_state(run.id, Running(), force=True)
                time.sleep(3)
                client.set_flow_run_state(run.id, Completed(), force=True)

    thread = threading.Thread(target=worker)
    thread.start()
    wait_for_shards(runs, timeout=8, poll=0.1)  # returns: every shard finished within its own deadline
    thread.join()

    with get_client(sync_client=True) as client:
        stuck = {i: client.create_flow_run_from_deployment(shard_pool.deployment_id, name=f"run-96-shard-{i}")
                 for i in range(2)}
        client.set_flow_run_state(stuck[0].id, Running(), force=True)
    with pytest.raises(
        EmbedlineError, match=r"^shard 0 \(run-96-shard-0, Running\) did not finish within 1.5 s"
    ):
        wait_for_shards(stuck, timeout=1.5, poll=0.1)


def test_shards_of_a_mixed_pool_combine_and_report_each_precision(tmp_path):
    def part(precision: str) -> EmbeddedBatch:
        return EmbeddedBatch([str(tmp_path / precision)], [], 10, 100, 1.0, 32, {}, "key", [precision])

    combined = EmbeddedBatch.combine([part("fp32"), part("bf16"), part("bf16")], parallel=True)
    assert (combined.precision, combined.chunk_count, combined.model_key) == ("bf16+fp32", 30, "key")
    assert combined.seconds == 1.0  # side by side on the pool: the longest shard's time
    in_turn = EmbeddedBatch.combine([part("fp32"), part("bf16"), part("bf16")], parallel=False)
    assert in_turn.seconds == 3.0  # one after another here: recorded 1.0 before
    with pytest.raises(EmbedlineError, match="different model keys"):
        EmbeddedBatch.combine([part("fp32"), replace(part("fp32"), model_key="other")], parallel=True)


def catalog_runs(ws) -> list[dict]:
    with catalog.reading(ws) as con:
        return catalog._rows(con, "SELECT status, error, precision FROM runs ORDER BY run_id")


def test_the_embed_task_holds_a_gpu_slot_only_where_a_gpu_tag_limit_exists(workspace, debian_case):
    """Without a limit no lease is taken (Prefect takes one for every tag, which can wait on the server);
    with `prefect concurrency-limit create gpu N`, local embedding counts against it like a shard's."""

    def embed_tags() -> list[str]:
        state = ingest_corpus(str(debian_case), "debian", "tiny", home=str(workspace.home), return_state=True)
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
        (embed,) = [run for run in runs if run.name.startswith("embed-documents")]
        return embed.tags

    assert embed_tags() == []
    with get_client(sync_client=True) as client:
        client.create_concurrency_limit(tag="gpu", concurrency_limit=1)
        try:
            assert embed_tags() == ["gpu"]  # nothing new to embed: the task runs all the same
        finally:
            client.delete_concurrency_limit_by_tag("gpu")

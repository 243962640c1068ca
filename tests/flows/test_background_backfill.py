"""Where a refresh starts its background backfill: a flow run of the served `backfill-<corpus>`
deployment (any cpu-pool worker, any machine), else a detached process on this machine."""

from uuid import uuid4

from prefect import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

from embedline.flows.refresh import start_background_backfill


def test_a_served_backfill_deployment_gets_the_backfill_as_a_flow_run(workspace):
    corpus = f"c{uuid4().hex[:8]}"
    pool = f"cpu-test-{uuid4().hex[:8]}"
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        flow_id = client.create_flow_from_name("backfill-corpus")
        deployment_id = client.create_deployment(flow_id, f"backfill-{corpus}", work_pool_name=pool,
                                                 entrypoint="embedline.flows.refresh:backfill_corpus")
    try:
        where = start_background_backfill(workspace, corpus, "tiny", batch_docs=7, order="recent")
        with get_client(sync_client=True) as client:
            (run,) = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))
        assert where == f"flow run {run.name} of deployment backfill-corpus/backfill-{corpus}"
        # this home (its catalog is a file there), not the worker's default: a one-shot refresh reaching
        # `make serve` from another folder backfills its own corpus
        assert run.parameters == {"corpus": corpus, "model": "tiny", "batch_docs": 7, "order": "recent",
                                  "home": str(workspace.home)}
        assert not (workspace.home / "logs").exists()  # no process was started on this machine
    finally:
        with get_client(sync_client=True) as client:
            client.delete_deployment(deployment_id)
            client.delete_work_pool(pool)


def test_without_a_deployment_the_backfill_runs_detached_here_with_its_log(workspace):
    corpus = f"c{uuid4().hex[:8]}"  # no such corpus: the detached backfill fails fast, into its log
    where = start_background_backfill(workspace, corpus, "tiny")
    assert where == str(workspace.home / "logs" / f"backfill-{corpus}-tiny.log")

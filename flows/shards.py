"""Shards on the gpu pool, with a deadline: a run never waits forever (holding its space's lock) for
workers that are not there, and one failed shard stops its siblings instead of leaving them running.

Before dispatching, the pool must have a worker that is online now (status ONLINE and a heartbeat
within three of its intervals); the runs are then created at once and watched together. Every unfinished
one is cancelled when one fails, when creating them fails part-way, or when the deadline
(`$EMBEDLINE_SHARD_TIMEOUT`) passes: a shard running for longer, or no shard starting or finishing
for that long (the pool stalled). Shards queued behind busy workers wait as long as the others progress.
"""

import time
from collections.abc import Callable
from datetime import datetime, timezone
from uuid import UUID

from httpx import HTTPStatusError
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun, WorkerStatus
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.states import Cancelling

from embedline.errors import EmbedlineError

HEARTBEATS_MISSED = 3  # a worker silent for this many heartbeat intervals is gone
DEFAULT_HEARTBEAT_SECONDS = 30  # Prefect workers' default interval


def deployment_exists(name: str) -> bool:
    return _found(lambda client: client.read_deployment_by_name(name))


def gpu_limit_exists(tag: str = "gpu") -> bool:
    """Whether the Prefect API has a concurrency limit on `tag` (a read: no lease is taken). When the API
    will not say (a key without that permission), True: the limit is then honored as before."""
    try:
        return _found(lambda client: client.read_concurrency_limit_by_tag(tag))
    except HTTPStatusError:  # 401, 403, ...: not ours to decide
        return True


def _found(read: Callable) -> bool:
    """Whether `read(client)` finds its object on the Prefect API."""
    with get_client(sync_client=True) as client:
        try:
            read(client)
            return True
        except ObjectNotFound:
            return False


def unavailable_reason(deployment: str) -> str | None:
    """None when `deployment`'s work pool has a worker online now; else why not, as a sentence."""
    with get_client(sync_client=True) as client:
        try:
            pool = client.read_deployment_by_name(deployment).work_pool_name
        except ObjectNotFound:
            return f"no {deployment} deployment on this Prefect API"
        if not pool:
            return f"deployment {deployment} has no work pool"
        try:
            workers = client.read_workers_for_work_pool(pool)
        except ObjectNotFound:
            return f"work pool {pool!r} of deployment {deployment} does not exist"
    if not any(is_online(worker) for worker in workers):
        return f"no worker of work pool {pool!r} is online"
    return None


def is_online(worker, now: datetime | None = None) -> bool:
    """ONLINE with a recent heartbeat: the server marks a dead worker offline only some time later."""
    if worker.status != WorkerStatus.ONLINE or worker.last_heartbeat_time is None:
        return False
    now = now or datetime.now(timezone.utc)
    interval = worker.heartbeat_interval_seconds or DEFAULT_HEARTBEAT_SECONDS
    return (now - worker.last_heartbeat_time).total_seconds() <= HEARTBEATS_MISSED * interval


def run_shards(deployment: str, runs: list[dict], timeout: float, poll: float = 1.0) -> None:
    """Create one flow run of `deployment` per shard's parameters and wait for them all (see the module);
    whatever goes wrong, no shard this call created is left running."""
    flow_runs: dict[int, FlowRun] = {}
    try:
        for parameters in runs:
            flow_runs[parameters["shard"]] = run_deployment(
                deployment, parameters=parameters, timeout=0,
                flow_run_name=f"run-{parameters['run_id']}-shard-{parameters['shard']}")
        wait_for_shards(flow_runs, timeout, poll)
    except BaseException:
        cancel_unfinished([run.id for run in flow_runs.values()])
        raise


def wait_for_shards(flow_runs: dict[int, FlowRun], timeout: float, poll: float = 1.0) -> None:
    """Return when every shard's flow run completed; raise when one ends otherwise, runs longer than
    `timeout` seconds, or no shard starts or ends for that long. The caller cancels what is left."""
    shard_of = {run.id: shard for shard, run in flow_runs.items()}
    seen, last_progress = None, time.monotonic()
    with get_client(sync_client=True) as client:
        while True:
            current = _read_runs(client, list(shard_of))
            for run in current:
                if run.state and run.state.is_final() and not run.state.is_completed():
                    raise EmbedlineError(
                        f"shard {shard_of[run.id]} (flow run {run.name}) ended {run.state.name}: its sibling "
                        "shards were cancelled; see its logs in the Prefect UI, then run the ingest again")
            unfinished = [run for run in current if not (run.state and run.state.is_completed())]
            if not unfinished:
                return
            states = {(run.id, _state_name(run)) for run in current}
            if states != seen:
                seen, last_progress = states, time.monotonic()
            overdue = [run for run in unfinished if _running_for(run) > timeout]
            if overdue or time.monotonic() - last_progress >= timeout:
                late = overdue or unfinished
                names = ", ".join(f"shard {shard_of[r.id]} ({r.name}, {_state_name(r)})" for r in late)
                raise EmbedlineError(f"{names} did not finish within {timeout:g} s and were cancelled: check "
                                     "the gpu pool's workers, or raise EMBEDLINE_SHARD_TIMEOUT")
            time.sleep(poll)


def _running_for(run: FlowRun) -> float:
    """Seconds since the run started running (0 while it waits in the queue)."""
    if run.start_time is None or not (run.state and run.state.is_running()):
        return 0.0
    return (datetime.now(timezone.utc) - run.start_time).total_seconds()


def cancel_unfinished(flow_run_ids: list[UUID]) -> None:
    """Ask for every unfinished run's cancellation: a worker stops a running one; one nobody picked up
    yet goes straight to Cancelled (the server's rule for runs without infrastructure)."""
    with get_client(sync_client=True) as client:
        for run in _read_runs(client, flow_run_ids):
            if run.state is None or not run.state.is_final():
                client.set_flow_run_state(run.id, Cancelling(message="a sibling failed or the run timed out"))


def _state_name(run: FlowRun) -> str:
    return run.state.name if run.state else "no state"


def _read_runs(client, flow_run_ids: list[UUID]) -> list[FlowRun]:
    return client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=flow_run_ids)),
                                 limit=len(flow_run_ids))  # past the API's default page size too

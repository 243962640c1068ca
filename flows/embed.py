"""The embedding step of a run. Where the Prefect API has an `embed-shard` deployment (`make serve`),
the work goes to the `gpu` pool's workers as flow runs of it — split into shards run in parallel when
it is over the shard size. Without one (CLI, ephemeral Prefect) it runs in this process.

Each shard writes its own staged rows; the parent validates and commits them as one version.
"""

import json
import math
from dataclasses import asdict
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.deployments import run_deployment

from embedline.flows.progress import Progress
from embedline.errors import EmbedlineError
from embedline.workspace import Workspace
from embedline.tasks import batch as batches
from embedline.tasks.batch import EmbeddedBatch
from embedline.tasks.changes import ChangePlan, split_plan
from embedline.tasks.chunking import ChunkParams
from embedline.tasks.embedding import get_engine, resolve_runtime
from embedline.tasks.models import ModelSpec, resolve_model

SHARD_DEPLOYMENT = "embed-shard/embed-shard"


def default_shard_size() -> int:
    """Documents to embed above which a run is split into shards (`$EMBEDLINE_SHARD_SIZE`; 0: never)."""
    from embedline.settings import load

    return load().shard_size


@task(name="embed-documents", cache_policy=NO_CACHE, tags=["gpu"])
def embed(plan: ChangePlan, spec: ModelSpec, device: str, params: ChunkParams, run_id: int,
          staging_dir: Path, label: str = "") -> EmbeddedBatch:
    engine = get_engine(spec, device)
    to_embed = plan.counts["docs_new"] + plan.counts["docs_changed"]
    key = f"embed-run-{run_id}" + (f"-{label}" if label else "")
    progress = Progress(to_embed, key=key.replace(" ", "-"), description=f"embedding run {run_id} {label}".strip())
    try:
        return batches.embed_documents(plan, engine, params, run_id, staging_dir, on_progress=progress)
    finally:
        progress.close()


@flow(name="embed-shard", log_prints=True)
def embed_shard(docs_path: str, docs: int, metadata_types: dict, model: str, precision: str, model_key: str,
                max_tokens: int, overlap: int, run_id: int, shard: int, home: str) -> dict:
    """Embed one shard of a run's staged documents; the result is also left next to them as JSON."""
    ws = Workspace.from_env(home)
    spec, device = resolve_runtime(resolve_model(ws, model), precision=precision)
    if spec.key() != model_key:
        raise EmbedlineError(f"shard {shard}: this worker resolves model {model!r} to {spec.key()}, the run "
                             f"expects {model_key}: give every worker the same model files")
    plan = ChangePlan(docs_path, {"docs_new": docs, "docs_changed": 0}, [], [], [], metadata_types)
    folder = Path(docs_path).parent
    result = embed(plan, spec, device, ChunkParams(max_tokens, overlap), run_id, folder, f"shard {shard}")
    (folder / "embedded.json").write_text(json.dumps(asdict(result)))
    return asdict(result)


@task(name="run-shard", cache_policy=NO_CACHE)
def run_shard(deployment: str, parameters: dict) -> EmbeddedBatch:
    """One shard as a flow run of `deployment` on whichever worker takes it; waits for it to finish."""
    run = run_deployment(deployment, parameters=parameters, timeout=None, poll_interval=1)
    if run.state is None or not run.state.is_completed():
        raise EmbedlineError(f"shard {parameters['shard']} (flow run {run.name}) ended "
                             f"{run.state.name if run.state else 'without a state'}: see it in the Prefect UI")
    return EmbeddedBatch(**json.loads((Path(parameters["docs_path"]).parent / "embedded.json").read_text()))


def deployment_exists(name: str) -> bool:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_deployment_by_name(name)
            return True
        except ObjectNotFound:
            return False


def embed_plan(ws: Workspace, plan: ChangePlan, model: str, spec: ModelSpec, device: str, params: ChunkParams,
               run_id: int, staging_dir: Path, shard_size: int | None = None,
               shard_deployment: str = SHARD_DEPLOYMENT) -> EmbeddedBatch:
    """Embed what the plan staged: on the gpu pool when it has workers, in shards over `shard_size`."""
    shard_size = default_shard_size() if shard_size is None else shard_size
    to_embed = plan.counts["docs_new"] + plan.counts["docs_changed"]
    shards = max(1, math.ceil(to_embed / shard_size)) if shard_size > 0 else 1
    on_pool = to_embed > 0 and deployment_exists(shard_deployment)
    if shards == 1 and not on_pool:
        return embed(plan, spec, device, params, run_id, staging_dir)
    runs = [{"docs_path": part.docs_path, "docs": part.counts["docs_new"], "metadata_types": plan.metadata_types,
             "model": model, "precision": spec.precision, "model_key": spec.key(), "max_tokens": params.max_tokens,
             "overlap": params.overlap, "run_id": run_id, "shard": i, "home": str(ws.home)}
            for i, part in enumerate(split_plan(plan, shards))]
    if on_pool:
        print(f"embedding {to_embed} documents in {shards} shard(s) on deployment {shard_deployment}")
        futures = [run_shard.submit(shard_deployment, parameters) for parameters in runs]
        return EmbeddedBatch.combine([future.result() for future in futures])
    print(f"no {shard_deployment} deployment on this Prefect API: embedding {shards} shards here, in turn")
    return EmbeddedBatch.combine([EmbeddedBatch(**embed_shard(**parameters)) for parameters in runs])

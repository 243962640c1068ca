"""The embedding step of a run. Where the Prefect API has an `embed-shard` deployment (`make serve`)
and a worker of its `gpu` pool is online, the work goes to that pool as flow runs of it — split into
shards run in parallel when it is over the shard size — watched with a deadline (see `shards`).
Otherwise (CLI, ephemeral Prefect, no worker online) it runs in this process.

Each shard writes its own staged rows; the parent validates and commits them as one version. Shards
and the parent hand data over through the file store (`storage.files`), never a machine's local path:
a shard gets its documents' store URI and leaves its chunks and its result (`embedded.json`) beside
them; a shard run here uses the run's own workspace; one sent to the pool opens its worker's workspace (its
`EMBEDLINE_HOME`) and gets the parent's home only when the catalog is the home's DuckDB file (workers
must then share that home anyway). Shards
embed under the run's precision when it asked for one, else under their own machine's policy:
precision is not part of the model key, so a mixed pool is one model, and the run records what ran;
the same holds for the runtime (torch or OpenVINO) each worker's engine chose.
"""

import json
import math
from dataclasses import asdict
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from embedline.flows.progress import Progress
from embedline.flows.shards import deployment_exists, gpu_limit_exists, run_shards, unavailable_reason
from embedline.settings import load
from embedline.storage import catalog, files
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
    return load().shard_size


def embed_staged(plan: ChangePlan, spec: ModelSpec, device: str, params: ChunkParams, run_id: int,
                 staging: str, label: str = "", cache_dir: Path | None = None) -> EmbeddedBatch:
    engine = get_engine(spec, device, cache_dir)
    to_embed = plan.counts["docs_new"] + plan.counts["docs_changed"]
    key = f"embed-run-{run_id}" + (f"-{label}" if label else "")
    progress = Progress(
        to_embed, key=key.replace(" ", "-"), description=f"embedding run {run_id} {label}".strip()
    )
    try:
        return batches.embed_documents(plan, engine, params, run_id, staging, on_progress=progress)
    finally:
        progress.close()


# Tagged `gpu` where an operator made a tag limit (`prefect concurrency-limit create gpu N`): it caps
# how many embed at once. Untagged elsewhere: Prefect takes a lease for every tag of a task run, limit
# or not, and on its temporary SQLite server that write waited ~2 s in about a third of runs.
embed_task = task(embed_staged, name="embed-documents", cache_policy=NO_CACHE)


def embed(*args, **kwargs) -> EmbeddedBatch:
    """The embed-documents task run (`embed_staged`'s arguments), under the `gpu` tag limit if any."""
    return (embed_task.with_options(tags=["gpu"]) if gpu_limit_exists() else embed_task)(*args, **kwargs)


@flow(name="embed-shard", log_prints=True)
def embed_shard(
    docs_uri: str,
    docs: int,
    metadata_types: dict,
    model: str,
    precision: str | None,
    model_key: str,
    max_tokens: int,
    overlap: int,
    run_id: int,
    shard: int,
    home: str | None = None,
) -> dict:
    """Embed one shard of a run's staged documents (`docs_uri`, in the file store); the result is also left
    next to them as JSON. `precision`: the run's request, or None for this worker's own policy
    (`$EMBEDLINE_PRECISION`, auto). `home`: the parent's (run here, or a catalog in the home's DuckDB
    file); else this worker's own workspace."""
    ws = Workspace.from_env(home)
    spec, device = resolve_runtime(resolve_model(ws, model), precision=precision)
    if spec.key() != model_key:
        raise EmbedlineError(f"shard {shard}: this worker resolves model {model!r} to {spec.key()}, the run "
                             f"expects {model_key}: give every worker the same model files")
    plan = ChangePlan(docs_uri, {"docs_new": docs, "docs_changed": 0}, [], [], [], metadata_types)
    folder = files.parent(docs_uri)
    result = embed(plan, spec, device, ChunkParams(max_tokens, overlap), run_id, folder, f"shard {shard}",
                   ws.openvino_cache_dir)
    files.write_text(files.join(folder, "embedded.json"), json.dumps(asdict(result)))
    return asdict(result)


def embed_plan(ws: Workspace, plan: ChangePlan, model: str, spec: ModelSpec, device: str, params: ChunkParams,
               run_id: int, staging: str, shard_size: int | None = None,
               shard_deployment: str = SHARD_DEPLOYMENT, precision: str | None = None) -> EmbeddedBatch:
    """Embed what the plan staged: on the gpu pool when a worker of it is online, in shards over
    `shard_size`; else here. `precision`: what the run asked for, forced on every shard (None: each
    machine's own policy). The run's recorded precision becomes the ones its shards used."""
    shard_size = default_shard_size() if shard_size is None else shard_size
    to_embed = plan.counts["docs_new"] + plan.counts["docs_changed"]
    shards = max(1, math.ceil(to_embed / shard_size)) if shard_size > 0 else 1
    on_pool, reason = False, None  # reason: why a deployed gpu pool is not used now
    if to_embed > 0 and deployment_exists(shard_deployment):
        reason = unavailable_reason(shard_deployment)
        on_pool = reason is None
    if shards == 1 and not on_pool:
        if reason:
            print(f"{reason}: embedding {to_embed} documents in this process instead")
        return embed(plan, spec, device, params, run_id, staging, cache_dir=ws.openvino_cache_dir)
    runs = [
        {
            "docs_uri": part.docs_path,
            "docs": part.counts["docs_new"],
            "metadata_types": plan.metadata_types,
            "model": model,
            "precision": precision,
            "model_key": spec.key(),
            "max_tokens": params.max_tokens,
            "overlap": params.overlap,
            "run_id": run_id,
            "shard": i,
        }
        for i, part in enumerate(split_plan(plan, shards))
    ]
    if on_pool:
        print(f"embedding {to_embed} documents in {shards} shard(s) on deployment {shard_deployment}")
        if ws.settings.catalog_url is None:  # the catalog is a file in the home: workers share it
            runs = [{**parameters, "home": str(ws.home)} for parameters in runs]
        run_shards(shard_deployment, runs, load().shard_timeout)
        batch = EmbeddedBatch.combine([read_shard_result(parameters) for parameters in runs], parallel=True)
    else:
        print(f"{reason or f'no {shard_deployment} deployment on this Prefect API'}: "
              f"embedding {shards} shards here, in turn")
        for parameters in runs:
            embed_shard(**parameters, home=str(ws.home))
        batch = EmbeddedBatch.combine([read_shard_result(parameters) for parameters in runs], parallel=False)
    if batch.precision and batch.precision != spec.precision:
        catalog.set_run_precision(ws, run_id, batch.precision)
    return batch


def read_shard_result(parameters: dict) -> EmbeddedBatch:
    """What a finished shard left next to its documents in the file store."""
    return EmbeddedBatch(**json.loads(files.read_text(files.join(files.parent(parameters["docs_uri"]),
                                                                  "embedded.json"))))

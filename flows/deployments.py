"""prefect.yaml, rendered from deploy/corpora.yaml: one ingest (cron), refresh (on the
model-registered event), backfill and maintain (nightly) deployment per corpus, and the shard flow.

Parent flows (read, diff, validate, commit) run on the `cpu` pool; their embedding runs as flow runs
of `embed-shard` on the `gpu` pool (one worker per GPU, its tasks tagged `gpu`, limited per GPU).
"""

from pathlib import Path

import yaml

from flows.embed import SHARD_DEPLOYMENT
from flows.events import MODEL_REGISTERED
from storage.errors import BadInput
from storage.names import check_name

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "deploy" / "corpora.yaml"
PREFECT_YAML = ROOT / "prefect.yaml"
HEADER = """\
# Rendered from deploy/corpora.yaml by `embedline deployments`: edit that file, not this one.
# `make serve` starts a Prefect server, creates the `cpu` and `gpu` work pools and the `gpu` tag
# concurrency limit, runs `prefect deploy --all` on this file and starts the workers.
"""


def render(config: dict) -> dict:
    corpora = config.get("corpora") or {}
    if not corpora:
        raise BadInput(f"{CONFIG}: no corpora configured")
    deployments = []
    for corpus, settings in corpora.items():
        check_name(corpus, "corpus name")
        if "source" not in settings:
            raise BadInput(f"{CONFIG}: corpus {corpus!r} needs a `source`")
        timezone = settings.get("timezone", "UTC")
        ingest_params = {"source": settings["source"], "corpus": corpus, "model": settings.get("model", "minilm"),
                         **{f"{k}_field": v for k, v in (settings.get("fields") or {}).items()}}
        if settings.get("precision"):
            ingest_params["precision"] = settings["precision"]
        deployments.append(_deployment(f"ingest-{corpus}", "flows/ingest.py:ingest_corpus", "cpu", ingest_params,
                                       settings.get("schedule"), timezone))
        refresh = _deployment(f"refresh-{corpus}", "flows/refresh.py:refresh_model", "cpu",
                              {"corpus": corpus, "wait": True})
        refresh["triggers"] = [{
            "type": "event", "enabled": True,
            "match": {"prefect.resource.id": "embedline.model.*"},
            "expect": [MODEL_REGISTERED],
            "parameters": {"model": "{{ event.resource['embedline.model'] }}"},
        }]
        deployments.append(refresh)
        deployments.append(_deployment(f"backfill-{corpus}", "flows/refresh.py:backfill_corpus", "cpu",
                                       {"corpus": corpus}))
        deployments.append(_deployment(f"maintain-{corpus}", "flows/maintain.py:maintain_corpus", "cpu",
                                       {"corpus": corpus}, settings.get("maintain", "17 3 * * *"), timezone))
    deployments.append(_deployment(SHARD_DEPLOYMENT.split("/")[1], "flows/embed.py:embed_shard", "gpu", {}))
    return {"name": "embedline", "prefect-version": _prefect_version(), "deployments": deployments}


def _deployment(name: str, entrypoint: str, pool: str, parameters: dict, cron: str | None = None,
                timezone: str = "UTC") -> dict:
    deployment = {"name": name, "entrypoint": entrypoint, "parameters": parameters, "work_pool": {"name": pool}}
    if cron:
        deployment["schedules"] = [{"cron": cron, "timezone": timezone}]
    return deployment


def _prefect_version() -> str:
    import prefect

    return prefect.__version__


def rendered_text(config_path: Path = CONFIG) -> str:
    config = yaml.safe_load(config_path.read_text())
    return HEADER + yaml.safe_dump(render(config), sort_keys=False, width=110)


def write(config_path: Path = CONFIG, target: Path = PREFECT_YAML) -> bool:
    """Rewrite `target`; True when it changed."""
    text = rendered_text(config_path)
    changed = not target.exists() or target.read_text() != text
    if changed:
        target.write_text(text)
    return changed


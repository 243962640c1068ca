"""prefect.yaml, rendered from deploy/corpora.yaml: one ingest (cron), refresh, backfill and maintain
(nightly) deployment per corpus, and the shard flow.

Operators win: a corpus's `model` only starts a new corpus (`initial_model`), so a scheduled ingest
writes whichever space prod serves and never undoes a swap; a refresh runs on a model-registered event
only for a corpus that opts in (`refresh: {on_model: NAME}`), and only for that exact model.

Parent flows (read, diff, validate, commit) run on the `cpu` pool; their embedding runs as flow runs
of `embed-shard` on the `gpu` pool (one worker per GPU, its tasks tagged `gpu`, limited per GPU).
"""

from importlib.resources import files
from pathlib import Path

import yaml

from embedline.flows.embed import SHARD_DEPLOYMENT
from embedline.flows.events import MODEL_REGISTERED
from embedline.errors import BadInput, NotFound
from embedline.names import check_name
from embedline.redaction import has_secret, redact
from embedline.validation.suite import check_gates

CONFIG = Path("deploy/corpora.yaml")  # relative to the working directory, like prefect.yaml itself
PREFECT_YAML = Path("prefect.yaml")
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
        ingest_params = {"source": redact(str(settings["source"])), "corpus": corpus,
                         "initial_model": check_name(settings.get("model", "minilm"), "model name"),
                         **{f"{k}_field": v for k, v in (settings.get("fields") or {}).items()}}
        if settings.get("precision"):
            ingest_params["precision"] = settings["precision"]
        ingest_params["default_gates"] = check_gates(
            settings.get("gates") or {}
        )  # `gates --set` outlasts these
        ingest = _deployment(f"ingest-{corpus}", "embedline.flows.ingest:ingest_corpus", "cpu", ingest_params,
                             settings.get("schedule"), timezone)
        if settings.get("env"):  # `prefect deploy` reads job variables under work_pool only
            ingest["work_pool"]["job_variables"] = {"env": _worker_env(corpus, settings["env"])}
        deployments.append(ingest)
        refresh = _deployment(f"refresh-{corpus}", "embedline.flows.refresh:refresh_model", "cpu",
                              {"corpus": corpus, "wait": True})
        on_model = _refresh_model(corpus, settings.get("refresh"))
        if on_model:
            refresh["triggers"] = [_model_trigger(on_model)]
        deployments.append(refresh)
        deployments.append(_deployment(f"backfill-{corpus}", "embedline.flows.refresh:backfill_corpus", "cpu",
                                       {"corpus": corpus}))
        deployments.append(
            _deployment(
                f"maintain-{corpus}",
                "embedline.flows.maintain:maintain_corpus",
                "cpu",
                {"corpus": corpus},
                settings.get("maintain", "17 3 * * *"),
                timezone,
            )
        )
    deployments.append(
        _deployment(SHARD_DEPLOYMENT.split("/")[1], "embedline.flows.embed:embed_shard", "gpu", {})
    )
    return {"name": "embedline", "prefect-version": _prefect_version(), "deployments": deployments}


def _worker_env(corpus: str, env: dict) -> dict:
    """Variables the ingest's flow run gets (e.g. PGPASSWORD for a postgres `query:` source). A secret
    comes from a Prefect Secret block (`"{{ prefect.blocks.secret.pg-password }}"`, which `prefect deploy`
    resolves into the deployment on the server); a literal one is left out of prefect.yaml (a `***` would
    replace the worker's own value of it), with a note at the top of the file."""
    if not isinstance(env, dict):
        raise BadInput(f"{CONFIG}: corpus {corpus!r}: write `env: {{NAME: value}}`")
    return {str(k): str(v) for k, v in env.items()  # a redacted one is left out: the worker's own value stays
            if str(v).startswith("{{") or not has_secret(f"{k}={v}")}


def redacted_corpora(config: dict) -> dict[str, list[str]]:
    """Corpora whose config carries a credential: what was redacted (`source`) or left out (env names)."""
    found = {}
    for corpus, settings in (config.get("corpora") or {}).items():
        what = ["source"] if has_secret(str(settings.get("source", ""))) else []
        what += [f"env {k}" for k, v in (settings.get("env") or {}).items()
                 if not str(v).startswith("{{") and has_secret(f"{k}={v}")]
        if what:
            found[corpus] = what
    return found


def _refresh_model(corpus: str, refresh: dict | None) -> str | None:
    """The model whose registration refreshes `corpus` (`refresh: {on_model: NAME}`); None: manual only."""
    if refresh is None:
        return None
    if not isinstance(refresh, dict) or set(refresh) != {"on_model"}:
        raise BadInput(f"{CONFIG}: corpus {corpus!r}: write `refresh: {{on_model: MODEL}}`")
    return check_name(refresh["on_model"], "model name")


def _model_trigger(model: str) -> dict:
    """Run on `embedline.model.registered` for exactly this model (no wildcard: one corpus, one model), in
    the home the event names (a file catalog's; null, or none named by an older embedline: the worker's
    own, which reaches a shared catalog), for the catalog it names (a run on another one refuses)."""
    return {"type": "event", "enabled": True, "match": {"prefect.resource.id": f"embedline.model.{model}"},
            "expect": [MODEL_REGISTERED],
            "parameters": {"model": model, "home": "{{ event.payload.home | default(none) }}",
                           "catalog_id": "{{ event.payload.catalog | default(none) }}"}}


def _deployment(name: str, entrypoint: str, pool: str, parameters: dict, cron: str | None = None,
                timezone: str = "UTC") -> dict:
    deployment = {
        "name": name,
        "entrypoint": entrypoint,
        "parameters": parameters,
        "work_pool": {"name": pool},
    }
    if cron:
        deployment["schedules"] = [{"cron": cron, "timezone": timezone}]
    return deployment


def _prefect_version() -> str:
    import prefect

    return prefect.__version__


def rendered_text(config_path: Path = CONFIG) -> str:
    if not config_path.is_file():
        raise NotFound(
            f"no {config_path} here: run `embedline deployments --init` for a starter, or pass --config"
        )
    config = yaml.safe_load(config_path.read_text())
    notes = "".join(
        f"# corpus {corpus}: credentials in {config_path} were redacted (***) or left out here"
        f" ({', '.join(what)}); the deployment\n#   runs once they come from the worker's environment or a"
        " Prefect Secret block (README: Credentials).\n"
        for corpus, what in redacted_corpora(config).items()
    )
    return HEADER + notes + yaml.safe_dump(render(config), sort_keys=False, width=110)


def write_starter(config_path: Path = CONFIG) -> bool:
    """Write the packaged starter config (one corpus: the bundled Debian slice) unless one exists."""
    if config_path.exists():
        return False
    demo = files("embedline") / "data" / "debian-2k.jsonl.gz"
    text = (files("embedline") / "templates" / "corpora.yaml").read_text().replace("{demo_source}", str(demo))
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(text)
    return True


def write(config_path: Path = CONFIG, target: Path = PREFECT_YAML) -> bool:
    """Rewrite `target`; True when it changed."""
    text = rendered_text(config_path)
    changed = not target.exists() or target.read_text() != text
    if changed:
        target.write_text(text)
    return changed


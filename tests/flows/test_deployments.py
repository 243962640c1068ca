"""prefect.yaml's deployments point at real flows with parameters those flows accept."""

import importlib
import inspect
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_every_deployment_names_a_flow_and_valid_parameters():
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    names = {d["name"] for d in config["deployments"]}
    assert {"ingest-debian", "refresh-debian", "backfill-debian", "maintain-debian"} <= names
    for deployment in config["deployments"]:
        module_path, flow_name = deployment["entrypoint"].split(":")
        flow = getattr(importlib.import_module(module_path.removesuffix(".py").replace("/", ".")), flow_name)
        accepted = set(inspect.signature(flow.fn).parameters)
        given = set(deployment.get("parameters", {}))
        for trigger in deployment.get("triggers", []):
            given |= set(trigger.get("parameters", {}))
        assert given <= accepted, (deployment["name"], given - accepted)


def test_refresh_runs_on_the_model_registered_event():
    from flows.events import MODEL_REGISTERED

    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    refresh = next(d for d in config["deployments"] if d["name"] == "refresh-debian")
    (trigger,) = refresh["triggers"]
    assert trigger["expect"] == [MODEL_REGISTERED] and "model" in trigger["parameters"]

"""Prefect events embedline emits, so deployments can react (prefect.yaml's refresh trigger)."""

import os

MODEL_REGISTERED = "embedline.model.registered"


def emit_model_registered(name: str, dim: int, fingerprint: str) -> bool:
    """Emit `embedline.model.registered` when a Prefect server is configured; False otherwise.

    Without `PREFECT_API_URL` there is no server to react, and starting an ephemeral one would cost
    seconds for nothing.
    """
    if not os.environ.get("PREFECT_API_URL"):
        return False
    from prefect.events import emit_event

    emit_event(
        event=MODEL_REGISTERED,
        resource={"prefect.resource.id": f"embedline.model.{name}", "embedline.model": name},
        payload={"dim": dim, "fingerprint": fingerprint},
    )
    return True

"""Prefect events embedline emits, so deployments can react (prefect.yaml's refresh trigger)."""

import os

MODEL_REGISTERED = "embedline.model.registered"


def emit_model_registered(name: str, dim: int, fingerprint: str) -> bool:
    """Emit `embedline.model.registered` to the configured Prefect API, else to a running `make serve`
    (`$EMBEDLINE_LOCAL_PREFECT_URL`), whose deployments react to it; False when there is neither.

    Starting a temporary server for it would cost seconds for nothing: no deployment is served there.
    """
    from prefect.events import emit_event
    from prefect.events.worker import EventsWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from embedline.flows.startup import running_local_server

    url = os.environ.get("PREFECT_API_URL") or running_local_server()
    if not url:
        return False
    with temporary_settings({PREFECT_API_URL: url}):
        emit_event(
            event=MODEL_REGISTERED,
            resource={"prefect.resource.id": f"embedline.model.{name}", "embedline.model": name},
            payload={"dim": dim, "fingerprint": fingerprint},
        )
        EventsWorker.drain_all(timeout=10)  # sent with this API's settings, before the block ends
    return True

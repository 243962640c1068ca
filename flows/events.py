"""Prefect events embedline emits, so deployments can react (prefect.yaml's refresh trigger)."""

import asyncio
import logging

MODEL_REGISTERED = "embedline.model.registered"
SEND_SECONDS = 10.0  # a server that takes the connection and never answers must not hold the command
log = logging.getLogger("embedline.events")


def emit_model_registered(name: str, dim: int, fingerprint: str, home: str | None = None,
                          catalog: str | None = None) -> bool:
    """Emit `embedline.model.registered` to the Prefect API this command would run flows on: the
    configured one (`PREFECT_API_URL`), else a server answering on this machine (`make serve`); False
    when there is none (starting a temporary server would cost seconds, and none would react).

    `home`: the workspace of a file catalog, for the triggered run to work on (the trigger passes it
    on); None where the catalog is shared (the worker's own home reaches it). `catalog`: the catalog's id,
    so a worker on another catalog (a dev machine's event on prod's server) refuses the run."""
    from prefect.settings import PREFECT_API_URL

    from embedline.flows.startup import running_local_server

    event = {"event": MODEL_REGISTERED,
             "resource": {"prefect.resource.id": f"embedline.model.{name}", "embedline.model": name},
             "payload": {"dim": dim, "fingerprint": fingerprint, "home": home, "catalog": catalog}}
    if PREFECT_API_URL.value():
        from prefect.events import emit_event

        emit_event(**event)
        return True
    url = running_local_server()
    if url is None:
        return False
    try:  # sent before the command returns (nothing queued for its exit), or given up on with a warning
        asyncio.run(asyncio.wait_for(_send(url, event), SEND_SECONDS))
    except Exception as exc:  # noqa: BLE001 - the model is registered either way: say the event was not sent
        log.warning(f"{MODEL_REGISTERED} not sent to {url} ({type(exc).__name__}: {exc}): opted-in "
                    "refreshes do not start; run `prefect deployment run refresh-model/refresh-CORPUS -p "
                    "model=NAME` there")
        return False
    return True


async def _send(url: str, event: dict) -> None:
    from prefect.events import Event
    from prefect.events.clients import PrefectEventsClient

    async with PrefectEventsClient(api_url=url, reconnection_attempts=0) as client:
        await client.emit(Event(**event))

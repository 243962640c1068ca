"""Prefect events embedline emits, so deployments can react (prefect.yaml's refresh trigger)."""

import asyncio

MODEL_REGISTERED = "embedline.model.registered"


def emit_model_registered(name: str, dim: int, fingerprint: str, home: str | None = None) -> bool:
    """Emit `embedline.model.registered` to the Prefect API this command would run flows on: the
    configured one (`PREFECT_API_URL`), else a server answering on this machine (`make serve`); False
    when there is none (starting a temporary server would cost seconds, and none would react).

    `home`: the workspace of a file catalog, for the triggered run to work on (the trigger passes it
    on); None where the catalog is shared (the worker's own home reaches it)."""
    from prefect.settings import PREFECT_API_URL

    from embedline.flows.startup import running_local_server

    event = {"event": MODEL_REGISTERED,
             "resource": {"prefect.resource.id": f"embedline.model.{name}", "embedline.model": name},
             "payload": {"dim": dim, "fingerprint": fingerprint, "home": home}}
    if PREFECT_API_URL.value():
        from prefect.events import emit_event

        emit_event(**event)
        return True
    url = running_local_server()
    if url is None:
        return False
    asyncio.run(_send(url, event))  # sent before the command returns: nothing is queued for its exit
    return True


async def _send(url: str, event: dict) -> None:
    from prefect.events import Event
    from prefect.events.clients import PrefectEventsClient

    async with PrefectEventsClient(api_url=url) as client:
        await client.emit(Event(**event))

"""An async FastAPI app: endpoints await the broker with `switchyard.aio`,
so a worker serves many requests at once with no thread per request.

    uvicorn examples.fastapi_async:app --workers 4

Against `switchyard demo`, export what it prints (SWITCHYARD_SOCKET,
SWITCHYARD_DB, SWITCHYARD_ADMIN_PASSWORD); for a service of your own set
SWITCHYARD_SERVICE_HOST, SWITCHYARD_SERVICE_USER and
SWITCHYARD_SERVICE_PASSWORD (and SWITCHYARD_SERVICE_PORT) instead. Every
worker opens one client in the lifespan handler; the links live in the
broker, so the workers share one login and one connection.
"""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from switchyard.aio import Client, Service

state: dict[str, Any] = {}


async def connect(client: Client) -> Service:
    """The service the environment names: direct if a host is given, else
    the integrated one over the inventory in $SWITCHYARD_DB."""
    if "SWITCHYARD_SERVICE_HOST" in os.environ:
        return await client.service_direct(
            os.environ["SWITCHYARD_SERVICE_USER"],
            os.environ.get("SWITCHYARD_SERVICE_PASSWORD"),
            host=os.environ["SWITCHYARD_SERVICE_HOST"],
            port=int(os.environ.get("SWITCHYARD_SERVICE_PORT", "8181")),
        )
    return await client.service_integrated(
        admin_password=os.environ["SWITCHYARD_ADMIN_PASSWORD"], db=os.environ["SWITCHYARD_DB"]
    )


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with Client.create(client_name=f"fastapi async worker {os.getpid()}") as client:
        service = await connect(client)
        await service.get_inventory()
        state["service"] = service
        yield
        state.clear()


app = FastAPI(lifespan=lifespan)


@app.get("/devices/{name}/clock")
async def clock(name: str) -> dict[str, Any]:
    service: Service = state["service"]
    request = await service.inventory[name].exec("show clock")
    result = (await request.wait(timeout=60)).result
    return {"device": name, "pid": os.getpid(), "clock": result[name].data.strip()}

"""A FastAPI app whose every worker process shares the broker's links.

    uvicorn examples.fastapi_app:app --workers 4

Each worker opens its own client in the lifespan handler; the logins and
connections live in the broker, so four workers (and auto-reload) cost one
login and one connection to the service. Against `switchyard demo`, export
what it prints (SWITCHYARD_SOCKET, SWITCHYARD_DB,
SWITCHYARD_ADMIN_PASSWORD); for a service of your own set
SWITCHYARD_SERVICE_HOST and SWITCHYARD_SERVICE_USER (and _PORT, _PASSWORD).
Endpoints are sync (FastAPI runs them in its thread pool); see
fastapi_async.py for async endpoints.
"""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from switchyard.sync import Client, Service

state: dict[str, Any] = {}


def connect(client: Client) -> Service:
    """Direct if SWITCHYARD_SERVICE_HOST is set, else integrated."""
    if "SWITCHYARD_SERVICE_HOST" in os.environ:
        return client.service_direct(
            os.environ["SWITCHYARD_SERVICE_USER"],
            os.environ.get("SWITCHYARD_SERVICE_PASSWORD"),
            host=os.environ["SWITCHYARD_SERVICE_HOST"],
            port=int(os.environ.get("SWITCHYARD_SERVICE_PORT", "8181")),
        )
    return client.service_integrated(
        admin_password=os.environ["SWITCHYARD_ADMIN_PASSWORD"], db=os.environ["SWITCHYARD_DB"]
    )


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    with Client.create(client_name=f"fastapi worker {os.getpid()}") as client:
        state["client"] = client
        state["service"] = connect(client)
        yield
        state.clear()


app = FastAPI(lifespan=lifespan)


@app.get("/devices/{name}/clock")
def clock(name: str) -> dict[str, Any]:
    service: Service = state["service"]
    result = service.inventory[name].exec("show clock").wait(timeout=60).result
    return {"device": name, "pid": os.getpid(), "clock": result[name].data.strip()}

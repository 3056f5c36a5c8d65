"""A FastAPI app whose every worker process shares the broker's links.

    uvicorn examples.fastapi_app:app --workers 4

Each worker opens its own client in the lifespan handler; the logins and
connections live in the broker, so four workers (and auto-reload) cost one
login and one connection to the service.
"""

import os
from contextlib import asynccontextmanager

from fastapi import FastAPI

from switchyard.sync import Client

state: dict = {}


@asynccontextmanager
async def lifespan(app: FastAPI):
    with Client.create(client_name=f"fastapi worker {os.getpid()}") as client:
        state["client"] = client
        state["service"] = client.service_direct(
            os.environ["SWITCHYARD_SERVICE_USER"],
            host=os.environ.get("SWITCHYARD_SERVICE_HOST", "localhost"),
            port=int(os.environ.get("SWITCHYARD_SERVICE_PORT", "8181")),
            password=os.environ.get("SWITCHYARD_SERVICE_PASSWORD"),
        )
        yield
        state.clear()


app = FastAPI(lifespan=lifespan)


@app.get("/devices/{name}/clock")
def clock(name: str) -> dict:
    result = state["service"].inventory[name].exec("show clock").wait().result
    return {"device": name, "pid": os.getpid(), "clock": result[name].data.strip()}

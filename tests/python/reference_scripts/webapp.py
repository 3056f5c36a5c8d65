"""A FastAPI app that opens the client in its lifespan handler and keeps it
in a global for the endpoints (sync endpoints, as the guide advises)."""
import os
from contextlib import asynccontextmanager

from fastapi import FastAPI

from switchyard.compat.radkit.sync import Client

client = None
service = None


@asynccontextmanager
async def lifespan(app: FastAPI):
    global client, service
    with Client.create() as client:
        service = client.service_direct(
            os.environ["REF_USER"], os.environ["REF_PASSWORD"],
            host=os.environ["REF_HOST"], port=int(os.environ["REF_PORT"]),
        )
        yield


app = FastAPI(lifespan=lifespan)


@app.get("/clock/{name}")
def clock(name: str) -> dict:
    result = service.inventory[name].exec("show clock").wait().result
    return {"clock": result[name].data}


def main() -> None:
    import uvicorn

    uvicorn.run(app, fd=int(os.environ["REF_FD"]), reload=False, log_level="warning")


if __name__ == "__main__":
    main()

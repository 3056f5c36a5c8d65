"""A stand-alone script in the reference guide's shape: `script(client)`
holds what you would type in a REPL; `main()` owns the client.

Against `switchyard demo`, export what it prints and run it as is:

    export SWITCHYARD_SOCKET=... SWITCHYARD_DB=... SWITCHYARD_ADMIN_PASSWORD=switchyard-demo
    python3 clients/python/examples/standalone.py

Against a service of your own, set SWITCHYARD_SERVICE_HOST,
SWITCHYARD_SERVICE_USER (and SWITCHYARD_SERVICE_PORT,
SWITCHYARD_SERVICE_PASSWORD; without it the password is asked for).
"""

import os

from switchyard.sync import Client, Service


def connect(client: Client) -> Service:
    """A direct service when SWITCHYARD_SERVICE_HOST is set, else the
    integrated one over the demo's inventory."""
    if "SWITCHYARD_SERVICE_HOST" in os.environ:
        return client.service_direct(
            os.environ.get("SWITCHYARD_SERVICE_USER", os.environ.get("USER", "")),
            os.environ.get("SWITCHYARD_SERVICE_PASSWORD"),
            host=os.environ["SWITCHYARD_SERVICE_HOST"],
            port=int(os.environ.get("SWITCHYARD_SERVICE_PORT", "8181")),
        )
    return client.service_integrated(
        admin_password=os.environ.get("SWITCHYARD_ADMIN_PASSWORD"), db=os.environ.get("SWITCHYARD_DB")
    )


def script(client: Client) -> None:
    service = connect(client)
    inventory = service.inventory
    print(f"{len(inventory)} devices: {', '.join(inventory)}")
    request = inventory.exec(["show version", "show ip interface brief"]).wait(timeout=60)
    print(f"request: {request.status}")
    for device, results in sorted(request.result.items()):
        print(f"=== {device} ({results.status})")
        print(results["show version"].data.splitlines()[3])


def main() -> None:
    with Client.create() as client:
        script(client)


if __name__ == "__main__":
    main()

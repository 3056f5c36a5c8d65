"""A stand-alone script in the reference guide's shape: `script(client)`
holds what you would type in a REPL; `main()` owns the client.

    SWITCHYARD_SERVICE_HOST=svc SWITCHYARD_SERVICE_USER=alice python3 standalone.py
"""

import os

from switchyard.sync import Client


def script(client: Client) -> None:
    service = client.service_direct(
        os.environ.get("SWITCHYARD_SERVICE_USER", os.environ.get("USER", "")),
        host=os.environ.get("SWITCHYARD_SERVICE_HOST", "localhost"),
        port=int(os.environ.get("SWITCHYARD_SERVICE_PORT", "8181")),
        password=os.environ.get("SWITCHYARD_SERVICE_PASSWORD"),
    )
    inventory = service.inventory
    print(f"{len(inventory)} devices: {', '.join(inventory)}")
    request = inventory.exec(["show version", "show ip interface brief"]).wait()
    for device, results in sorted(request.result.items()):
        print(f"=== {device} ({results.status})")
        print(results["show version"].data.splitlines()[3])


def main() -> None:
    with Client.create() as client:
        script(client)


if __name__ == "__main__":
    main()

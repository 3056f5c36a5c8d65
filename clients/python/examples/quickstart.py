"""Quick start against `switchyard demo`: an integrated service over the
demo's inventory. Run the demo first and export what it prints:

    export SWITCHYARD_SOCKET=... SWITCHYARD_DB=... SWITCHYARD_ADMIN_PASSWORD=...
    python3 clients/python/examples/quickstart.py
"""

import os

from switchyard.sync import Client


def main() -> None:
    with Client.create() as client:
        service = client.service_integrated(
            admin_password=os.environ["SWITCHYARD_ADMIN_PASSWORD"],
            db=os.environ["SWITCHYARD_DB"],
        )
        print(service.inventory)
        result = service.inventory.exec("show version").wait().result
        for device, outcome in sorted(result.items()):
            print(f"--- {device}: {outcome.status}")
            print(outcome.data.splitlines()[3])


if __name__ == "__main__":
    main()

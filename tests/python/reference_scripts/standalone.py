"""REPL code pasted into script(client); main() owns the client."""
import os

from switchyard.compat.radkit.sync import Client


def script(client: Client) -> None:
    service = client.service_direct(
        os.environ["REF_USER"], os.environ["REF_PASSWORD"],
        host=os.environ["REF_HOST"], port=int(os.environ["REF_PORT"]),
    )
    request = service.inventory.filter("device_type", "IOS").exec("show clock").wait()
    for device, result in sorted(request.result.items()):
        print(device, result.status, result["show clock"].data.strip())


def main() -> None:
    with Client.create() as client:
        script(client)


if __name__ == "__main__":
    main()

"""Asks for an e-mail, a domain and a serial, logs in with SSO, and prints
the service's inventory."""
from switchyard.compat.radkit.sync import Client


def _run_code(client: Client) -> None:
    # Ask for user input.
    email = input("email> ")
    domain = input("domain> ")
    service_serial = input("service serial> ")

    # Connect to the given service, using SSO login.
    client.sso_login(identity=email, domain=domain)
    service = client.service_cloud(service_serial).wait()
    print(service.inventory)


def main() -> None:
    with Client.create() as client:
        _run_code(client)


if __name__ == "__main__":
    main()

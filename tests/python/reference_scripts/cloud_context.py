"""Module-level login functions on the context's client (no `client.`)."""
import os

from switchyard.compat.radkit.sync import create_context, access_token_login, service_cloud

with create_context():
    access_token_login(os.environ["REF_TOKEN"])
    service = service_cloud(os.environ["REF_SERIAL"]).wait()
    print(service.inventory)

"""A direct (cloudless) connection; the password is asked for."""
import os

from switchyard.compat.radkit.sync import Client

with Client.create() as client:
    service = client.service_direct(
        os.environ["REF_USER"], host=os.environ["REF_HOST"], port=int(os.environ["REF_PORT"])
    )
    print(service.inventory)

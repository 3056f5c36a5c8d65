"""An integrated service: the admin password is asked for (the inventory
database comes from $SWITCHYARD_DB)."""
from switchyard.compat.radkit.sync import Client

with Client.create() as client:
    service = client.service_integrated()
    print(service.inventory)

"""Notebook style: an ExitStack keeps one client open across cells, and
`stack.close()` ends it. (Each block below would be a cell.)"""

import os
from contextlib import ExitStack

from switchyard.sync import Client

# Cell 1: open the client for the whole notebook.
stack = ExitStack()
client = stack.enter_context(Client.create())

# Cell 2: connect.
service = client.service_direct(
    os.environ["SWITCHYARD_SERVICE_USER"],
    host=os.environ.get("SWITCHYARD_SERVICE_HOST", "localhost"),
    port=int(os.environ.get("SWITCHYARD_SERVICE_PORT", "8181")),
    password=os.environ.get("SWITCHYARD_SERVICE_PASSWORD"),
)

# Cell 3: work with devices.
core = service.inventory.filter("device_type", "IOS-XE")
print(core["core-1"].exec("show clock").wait().result["core-1"].data)

# Last cell: end the session.
stack.close()

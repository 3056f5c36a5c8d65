"""Notebook cells: an ExitStack keeps the client open until stack.close()."""
import os
from contextlib import ExitStack

from switchyard.compat.radkit.sync import Client

# Create `ExitStack` and `Client`.
stack = ExitStack()
client = stack.enter_context(Client.create())

# Connect (a later cell).
service = client.service_direct(
    os.environ["REF_USER"], os.environ["REF_PASSWORD"],
    host=os.environ["REF_HOST"], port=int(os.environ["REF_PORT"]),
)

# Use it (may span many cells).
device = service.inventory.filter("role", "core").exclude_failed()["core-1"]
print(device.exec("show version").wait().result["core-1"].data.splitlines()[3])

# The last cell ends the client.
stack.close()

"""Notebook style: an ExitStack keeps one client open across cells, and
`stack.close()` ends it. (Each block below would be a cell.)

Runs against `switchyard demo` as printed (export SWITCHYARD_SOCKET,
SWITCHYARD_DB and SWITCHYARD_ADMIN_PASSWORD), or against a service of your
own with SWITCHYARD_SERVICE_HOST and SWITCHYARD_SERVICE_USER set.
"""

import os
from contextlib import ExitStack

from switchyard.sync import Client

# Cell 1: open the client for the whole notebook.
stack = ExitStack()
client = stack.enter_context(Client.create())

# Cell 2: connect.
if "SWITCHYARD_SERVICE_HOST" in os.environ:
    service = client.service_direct(
        os.environ["SWITCHYARD_SERVICE_USER"],
        os.environ.get("SWITCHYARD_SERVICE_PASSWORD"),
        host=os.environ["SWITCHYARD_SERVICE_HOST"],
        port=int(os.environ.get("SWITCHYARD_SERVICE_PORT", "8181")),
    )
else:
    service = client.service_integrated(
        admin_password=os.environ.get("SWITCHYARD_ADMIN_PASSWORD"), db=os.environ.get("SWITCHYARD_DB")
    )

# Cell 3: pick devices by a regular expression, then take the first one.
devices = service.inventory.filter("device_type", "IOS")  # a regex: IOS-XE too
name = sorted(devices)[0]
print(f"{len(devices)} devices; using {name}")
print(devices[name].exec("show clock").wait(timeout=60).result[name].data)

# Last cell: end the session.
stack.close()

"""An interactive shell on a device from Python, against `switchyard demo`
(export what it prints: SWITCHYARD_SOCKET, SWITCHYARD_DB,
SWITCHYARD_ADMIN_PASSWORD):

    python3 clients/python/examples/terminal.py sim-001
"""

import os
import sys

from switchyard.sync import Client


def main() -> None:
    device = sys.argv[1] if len(sys.argv) > 1 else "sim-001"
    with Client.create() as client:
        service = client.service_integrated(
            admin_password=os.environ.get("SWITCHYARD_ADMIN_PASSWORD"), db=os.environ.get("SWITCHYARD_DB")
        )
        with service.inventory[device].terminal() as term:
            term.readuntil_regex(rb"#\s*$", timeout=30)  # the first prompt
            for command in ("show clock", "show version"):
                output = term.exec(command, timeout=30)
                print(f"--- {command}")
                print(output.decode(errors="replace").rstrip())
            term.write("exit\r")


if __name__ == "__main__":
    main()

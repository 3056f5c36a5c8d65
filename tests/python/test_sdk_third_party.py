"""The call sequences public tools built on the reference client make,
written here in our own code against switchyard.compat.radkit.sync: a
Robot Framework keyword library (client on an ExitStack, direct service,
devices by subset, exec with a timeout, full_result read per device and
command with ClientError for failures, logout) and an MCP server (direct
service, inventory names, a device's internal attributes, filter by name,
exec with reset/sudo flags from worker threads of an event loop)."""

import asyncio
from contextlib import ExitStack

import pytest

from conftest import ALICE_PW

from switchyard.compat.radkit import sync as rk


def test_robot_framework_library_sequence(broker, lab):
    stack = ExitStack()
    client = stack.enter_context(rk.Client.create(socket=str(broker)))
    try:
        service = client.service_direct(username="alice", password=ALICE_PW, host=lab["host"],
                                        port=int(lab["port"]),
                                        sha256_fingerprint=lab["fingerprint"]).wait()
        assert service is not None
        devices = service.inventory.subset("core-1;edge-1".split(";"))
        commands = ["show clock", "show nope"]
        result = devices.exec(commands, timeout=300).wait()
        outputs, success, errors = {}, 0, 0
        for device in result.full_result:
            outputs[device] = {}
            for cmd in commands:
                try:
                    outputs[device][cmd] = result.full_result[device][cmd].data
                    success += 1
                except rk.exceptions.ClientError:
                    outputs[device][cmd] = None
                    errors += 1
        assert (success, errors) == (2, 2)
        assert "UTC" in outputs["edge-1"]["show clock"] and outputs["core-1"]["show nope"] is None
        # A single command: the output by device.
        single = service.inventory.subset(["core-2"]).exec("show version", timeout=300).wait()
        assert "core-2 uptime" in single.full_result["core-2"]["show version"].data
        service.logout()
        with pytest.raises(rk.ClientError):
            service.inventory.subset(["core-1"]).exec("show clock")
    finally:
        stack.close()


def test_mcp_server_sequence(broker, lab):
    with rk.Client.create(socket=str(broker)) as client:
        service = client.service_direct(username="alice", host=lab["host"], port=lab["port"],
                                        password=ALICE_PW)
        service.wait()

        async def tools():
            loop = asyncio.get_running_loop()
            names = await loop.run_in_executor(
                None, lambda: {d.name for d in service.inventory.values()})
            attrs = await loop.run_in_executor(
                None, lambda: service.inventory["core-1"].attributes.internal)

            def run(device, commands, timeout=0, sudo=False):
                inventory = service.inventory.filter("name", device)
                if not inventory:
                    raise ValueError(f"Device '{device}' not found")
                kwargs = dict(reset_before=False, reset_after=False, sudo=sudo)
                if timeout:
                    response = inventory.exec(commands, timeout=timeout, **kwargs).wait(timeout)
                else:
                    response = inventory.exec(commands, **kwargs).wait()
                device_result = response.result[device]
                if device_result.status.value != "SUCCESS":
                    raise RuntimeError(device_result.status_message)
                return [(cmd, device_result[cmd].data, device_result[cmd].status.value)
                        for cmd in device_result]

            outputs = await asyncio.gather(
                *(loop.run_in_executor(None, run, d, ["show clock"], 30)
                  for d in ("core-1", "core-2", "edge-1")))
            return names, attrs, outputs, run

        names, attrs, outputs, run = asyncio.run(asyncio.wait_for(tools(), 120))
        assert names == {"core-1", "core-2", "dead-1", "edge-1"}
        assert attrs["device_type"] == "IOS-XE" and attrs["role"] == "core"
        assert attrs["name"] == "core-1"
        for out in outputs:
            [(cmd, data, status)] = out
            assert cmd == "show clock" and "UTC" in data and status == "SUCCESS"
        with pytest.raises(ValueError, match="not found"):
            run("nosuch", "show clock")
        with pytest.raises(rk.NotAvailableError, match="sudo"):
            run("core-1", "show clock", sudo=True)
        with pytest.raises(RuntimeError):
            run("dead-1", "show clock", 30)

"""reset_before / reset_after on a device whose commands run in a warm
shell: `switchyard demo`'s sim-001 (IOS-XE over SSH to the simulator, so a
shell session by default). `disable` leaves that shell in user mode, where
the simulator refuses privileged commands (`show running-config`), so a
refusal shows the state carried over and a success shows a fresh shell.
Through the sync and asyncio SDKs and the CLI's flags."""

import asyncio
import subprocess

from conftest import BIN

from switchyard.aio import Client as AsyncClient
from switchyard.sync import FAILURE, SUCCESS, Client

DEVICE = "sim-001"
PRIVILEGED = "show running-config"


def status_of(device, command, **reset):
    """The one command's result on DEVICE: (status, status_message)."""
    result = device.exec(command, **reset).wait(30).result[DEVICE]
    return result.status, result.status_message


def test_reset_before_and_after_start_and_end_a_fresh_shell(demo):
    with Client.create(socket=demo["SWITCHYARD_SOCKET"]) as client:
        svc = client.service_integrated(admin_password=demo["SWITCHYARD_ADMIN_PASSWORD"],
                                        db=demo["SWITCHYARD_DB"])
        dev = svc.inventory[DEVICE]
        assert status_of(dev, PRIVILEGED)[0] == SUCCESS
        # The warm shell keeps the mode `disable` left...
        assert status_of(dev, "disable")[0] == SUCCESS
        status, message = status_of(dev, PRIVILEGED)
        assert status == FAILURE and "exit status" in message, "user mode carried over"
        # ...reset_before runs in a fresh one (privileged again) and keeps
        # that one warm: the next exec finds it privileged too.
        assert status_of(dev, PRIVILEGED, reset_before=True) == (SUCCESS, "")
        assert status_of(dev, PRIVILEGED) == (SUCCESS, "")
        # reset_after closes the shell `disable` ran in: nothing carries over.
        assert status_of(dev, "disable", reset_after=True)[0] == SUCCESS
        assert status_of(dev, PRIVILEGED) == (SUCCESS, "")
        # Without a reset it would have (the control for the line above).
        assert status_of(dev, "disable")[0] == SUCCESS
        assert status_of(dev, PRIVILEGED)[0] == FAILURE
        assert status_of(dev, PRIVILEGED, reset_before=True)[0] == SUCCESS


def test_reset_before_from_asyncio(demo):
    async def scenario():
        async with AsyncClient.create(socket=demo["SWITCHYARD_SOCKET"]) as client:
            svc = await client.service_integrated(
                admin_password=demo["SWITCHYARD_ADMIN_PASSWORD"], db=demo["SWITCHYARD_DB"])
            dev = (await svc.get_inventory())[DEVICE]
            seen = []
            for command, reset in (("disable", {}), (PRIVILEGED, {}),
                                   (PRIVILEGED, {"reset_before": True})):
                request = await dev.exec(command, **reset)
                await request.wait(30)
                seen.append(request.result[DEVICE].status)
            return seen

    assert asyncio.run(asyncio.wait_for(scenario(), 120)) == [SUCCESS, FAILURE, SUCCESS]


def test_cli_exec_reset_flags(demo, tmp_path):
    password = tmp_path / "admin"
    password.write_text(demo["SWITCHYARD_ADMIN_PASSWORD"] + "\n")

    def cli(*args):
        return subprocess.run([BIN, *args], env=demo, capture_output=True, text=True,
                              timeout=60)

    connect = cli("connect", "integrated", "reset-lab", "--db", demo["SWITCHYARD_DB"],
                  "--admin-password-file", str(password))
    assert connect.returncode == 0, connect.stderr
    assert cli("exec", "reset-lab", DEVICE, "-c", "disable").returncode == 0
    carried = cli("exec", "reset-lab", DEVICE, "-c", PRIVILEGED)
    assert carried.returncode != 0 and "hostname" not in carried.stdout
    fresh = cli("exec", "reset-lab", DEVICE, "-c", PRIVILEGED, "--reset-before")
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    assert f"hostname {DEVICE}" in fresh.stdout
    assert cli("exec", "reset-lab", DEVICE, "-c", "disable", "--reset-after").returncode == 0
    after = cli("exec", "reset-lab", DEVICE, "-c", PRIVILEGED)
    assert after.returncode == 0, after.stdout + after.stderr
    cli("disconnect", "reset-lab")

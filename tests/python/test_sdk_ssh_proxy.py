"""The SSH proxy from the SDK: ``client.start_ssh_proxy`` (sync and
asyncio) against a real broker and service with simulated devices, used by
real SSH clients: paramiko for exec with exit status, netmiko driving a
simulated device as ``cisco_ios`` through the proxy. The proxy ends with
the client that started it."""

import asyncio
import time

import netmiko
import paramiko
import pytest

from conftest import ALICE_PW

from switchyard import aio
from switchyard.sync import Client

PROXY_PW = "proxy-test-password"


def ssh_exec(port, user, command, password=PROXY_PW):
    """Runs ``command`` through the proxy with paramiko: (exit status,
    stdout bytes)."""
    ssh = paramiko.SSHClient()
    ssh.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    try:
        ssh.connect("127.0.0.1", port=port, username=user, password=password,
                    allow_agent=False, look_for_keys=False, timeout=20)
        _, stdout, _ = ssh.exec_command(command, timeout=30)
        out = stdout.read()
        return stdout.channel.recv_exit_status(), out
    finally:
        ssh.close()


def proxy_in_status(socket):
    with Client.create(socket=str(socket)) as other:
        return other.status().HasField("ssh_proxy")


def test_sync_proxy_runs_commands_and_netmiko_and_ends_with_its_client(broker, service):
    with Client.create(socket=str(broker)) as client:
        svc = client.service_direct(username="alice", password=ALICE_PW,
                                    host=service["host"], port=service["port"])
        device = svc.inventory["core-1"]
        proxy = client.start_ssh_proxy(local_port=0, password=PROXY_PW)
        assert proxy.local_port > 0 and proxy.host_key_fingerprint.startswith("SHA256:")
        assert proxy.status == "RUNNING"
        user = proxy.login_name(device)
        assert user.startswith("core-1@")

        status, out = ssh_exec(proxy.local_port, user, "show version")
        assert status == 0 and b"core-1 uptime" in out, out
        status, out = ssh_exec(proxy.local_port, user, "show bogus")
        assert status == 1 and b"% Invalid input" in out, out
        with pytest.raises(paramiko.AuthenticationException):
            ssh_exec(proxy.local_port, user, "show version", password="wrong")

        # netmiko drives the simulated device as cisco_ios through the proxy.
        conn = netmiko.ConnectHandler(device_type="cisco_ios", host="127.0.0.1",
                                      port=proxy.local_port, username=user,
                                      password=PROXY_PW)
        try:
            assert "core-1 uptime" in conn.send_command("show version")
            assert "% Invalid input" in conn.send_command("show bogus")
        finally:
            conn.disconnect()
        # The refused login is counted once its connection has ended.
        deadline = time.monotonic() + 20
        while (info := proxy.info()) is not None and info.connections_failed == 0:
            assert time.monotonic() < deadline, info
            time.sleep(0.05)
        assert info is not None and info.connections_failed == 1, info
    # The client closed: its session's proxy is gone.
    assert not proxy_in_status(broker)


def test_aio_proxy_runs_commands_and_stops(broker, service):
    async def main():
        async with aio.Client.create(socket=str(broker)) as client:
            svc = await client.service_direct(username="alice", password=ALICE_PW,
                                              host=service["host"], port=service["port"])
            inventory = await svc.get_inventory()
            proxy = await client.start_ssh_proxy(local_port=0, password=PROXY_PW)
            assert await proxy.status() == "RUNNING"
            user = proxy.login_name(inventory["edge-1"])
            status, out = await asyncio.to_thread(ssh_exec, proxy.local_port, user,
                                                  "show version")
            assert status == 0 and b"edge-1 uptime" in out, out
            await proxy.stop()
            assert await proxy.status() == "STOPPED"
            await proxy.stop()  # again: nothing to do

    asyncio.run(main())
    assert not proxy_in_status(broker)

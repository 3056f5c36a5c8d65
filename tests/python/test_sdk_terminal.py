"""Interactive terminals from Python against `switchyard demo`'s simulated
devices: the sync and asyncio terminals, and pexpect through
attach_socket()."""

import asyncio
import os
import time

import grpc
import pytest

from switchyard import SwitchyardError, TerminalClosedError
from switchyard.aio import Client as AsyncClient
from switchyard.sync import Client

PROMPT = rb"#\s*$"


def wait_for_buffered(term, marker, timeout=30):
    """Polls (bounded) until the terminal's unread output holds `marker`."""
    deadline = time.monotonic() + timeout
    while marker not in term._buffer:
        assert time.monotonic() < deadline, f"{marker!r} never arrived"
        time.sleep(0.01)


def integrated(client, demo):
    return client.service_integrated(admin_password=demo["SWITCHYARD_ADMIN_PASSWORD"],
                                     db=demo["SWITCHYARD_DB"])


@pytest.mark.parametrize("device", ["sim-001", "inproc-1"])
def test_terminal_reads_writes_and_closes(demo, device):
    with Client.create(socket=demo["SWITCHYARD_SOCKET"]) as client:
        service = integrated(client, demo)
        with service.inventory[device].terminal() as term:
            banner = term.readuntil_regex(PROMPT, timeout=30)
            assert banner.rstrip().endswith(f"{device}#".encode())
            clock = term.exec("show clock", timeout=30)
            assert b"UTC" in clock and b"show clock" not in clock and b"#" not in clock
            version = term.exec("show version", timeout=30)
            term.write("show clock\r")
            wait_for_buffered(term, b"#")
            assert term.read(4, timeout=30) == b"show"
            assert b"UTC" in term.readuntil_regex(PROMPT, timeout=30)
            assert f"{device} uptime".encode() in version
            term.write("show ip interface brief\r")
            assert term.readline(timeout=30).strip() == b"show ip interface brief"
            assert term.readuntil(b"Interface", timeout=30).endswith(b"Interface")
            term.readuntil_regex(PROMPT, timeout=30)
            with pytest.raises(TimeoutError):
                term.readuntil(b"never printed", timeout=0.2)
            term.write(b"exit\r")
            rest = term.readuntil_timeout(30)  # returns early: the shell closes
            assert b"exit" in rest
            assert term.read(timeout=5) == b""
            assert term.closed
            with pytest.raises(TerminalClosedError):
                term.readuntil(b"#", timeout=5)
            with pytest.raises(TerminalClosedError):
                term.write(b"show clock\r")


@pytest.mark.parametrize("device", ["sim-001", "inproc-1"])
def test_terminal_answers_a_confirmation_prompt(demo, device):
    """Log in, wait for the prompt, run two commands, answer `[confirm]`,
    close (issue 19's terminal scenario)."""
    prompt_line = f"{device}#".encode()
    with Client.create(socket=demo["SWITCHYARD_SOCKET"]) as client:
        with integrated(client, demo).inventory[device].terminal() as term:
            assert term.readuntil_regex(PROMPT, timeout=30).rstrip().endswith(prompt_line)
            assert b"UTC" in term.exec("show clock", timeout=30)
            assert f"{device} uptime".encode() in term.exec("show version", timeout=30)
            term.write("clear counters\r")
            question = term.readuntil(b"[confirm]", timeout=30)
            assert b"Clear" in question and b"counters" in question
            # The device waits for the answer: no prompt comes back first.
            with pytest.raises(TimeoutError):
                term.readuntil_regex(PROMPT, timeout=0.5)
            term.write("\r")
            assert term.readuntil_regex(PROMPT, timeout=30).rstrip().endswith(prompt_line)
            # The shell goes on after the answer.
            assert b"UTC" in term.exec("show clock", timeout=30)
        assert term.closed


def test_async_terminal_answers_a_confirmation_prompt(demo):
    async def main():
        async with AsyncClient.create(socket=demo["SWITCHYARD_SOCKET"]) as client:
            async with await async_terminal(client, demo, "sim-001") as term:
                await term.readuntil_regex(PROMPT, timeout=30)
                assert b"sim-001 uptime" in await term.exec("show version")
                await term.write("clear counters\r")
                assert b"Clear" in await term.readuntil(b"[confirm]", timeout=30)
                await term.write("\r")
                assert (await term.readuntil_regex(PROMPT, timeout=30)).rstrip().endswith(
                    b"sim-001#")
                assert b"UTC" in await term.exec("show clock")
            assert term.closed

    asyncio.run(asyncio.wait_for(main(), 120))


def test_terminal_closed_by_the_caller(demo):
    with Client.create(socket=demo["SWITCHYARD_SOCKET"]) as client:
        device = integrated(client, demo).inventory["sim-001"]
        term = device.interactive()
        term.readuntil_regex(PROMPT, timeout=30)
        term.close()
        assert term.closed
        # A second terminal on the same device still works.
        with device.terminal() as again:
            again.readuntil_regex(PROMPT, timeout=30)
            assert b"UTC" in again.exec("show clock")


def test_pexpect_through_attach_socket(demo):
    pexpect = pytest.importorskip("pexpect")
    from pexpect import fdpexpect
    with Client.create(socket=demo["SWITCHYARD_SOCKET"]) as client:
        with integrated(client, demo).inventory["sim-001"].terminal() as term:
            # Output that arrived before attaching is handed over too.
            term.readuntil_regex(PROMPT, timeout=30)
            term.write("show clock\r")
            term.readuntil(b"show clock", timeout=30)
            wait_for_buffered(term, b"#")
            conn = term.attach_socket()
            child = fdpexpect.fdspawn(conn.fileno(), timeout=30)
            child.expect("UTC")
            child.expect(r"sim-001#")
            child.send("show version\r")
            child.expect(r"sim-001 uptime")
            child.send("exit\r")
            child.expect(pexpect.EOF)
            conn.close()


async def async_terminal(client, demo, device):
    """An asyncio terminal on `device` of the demo's integrated service."""
    service = await client.service_integrated(
        admin_password=demo["SWITCHYARD_ADMIN_PASSWORD"], db=demo["SWITCHYARD_DB"])
    inv = await service.get_inventory()
    return await inv[device].terminal()


def test_async_terminal(demo):
    async def main():
        async with AsyncClient.create(socket=demo["SWITCHYARD_SOCKET"]) as client:
            async with await async_terminal(client, demo, "inproc-1") as term:
                await term.readuntil_regex(PROMPT, timeout=30)
                assert b"UTC" in await term.exec("show clock")
                assert b"inproc-1 uptime" in await term.exec("show version")
                await term.write("exit\r")
                await term.readuntil_timeout(30)
                assert term.closed and await term.read() == b""

    asyncio.run(asyncio.wait_for(main(), 120))


def test_async_pexpect_through_attach_socket(demo):
    """The asyncio terminal handed to pexpect: output buffered before
    attaching comes first, pexpect's own asyncio expect drives the shell,
    the socket reads end of file when the shell exits, and no thread was
    started for it."""
    pexpect = pytest.importorskip("pexpect")
    from pexpect import fdpexpect
    import threading

    async def main():
        async with AsyncClient.create(socket=demo["SWITCHYARD_SOCKET"]) as client:
            async with await async_terminal(client, demo, "sim-001") as term:
                await term.readuntil_regex(PROMPT, timeout=30)
                await term.write("show clock\r")
                await term.readuntil(b"show clock", timeout=30)
                deadline = time.monotonic() + 30
                while b"#" not in term._buffer:
                    assert time.monotonic() < deadline, "the prompt never arrived"
                    await asyncio.sleep(0.01)
                threads = threading.active_count()
                conn = await term.attach_socket()
                assert threading.active_count() == threads, "attach_socket started a thread"
                # pexpect's asyncio transport owns (and closes) the
                # descriptor it reads: give it a duplicate.
                child = fdpexpect.fdspawn(os.dup(conn.fileno()), timeout=30)
                await child.expect("UTC", async_=True)
                await child.expect(r"sim-001#", async_=True)
                child.send("show version\r")
                await child.expect(r"sim-001 uptime", async_=True)
                await child.expect(r"sim-001#", async_=True)
                child.send("exit\r")
                await child.expect(pexpect.EOF, async_=True)
                conn.close()
                deadline = time.monotonic() + 10
                while not term.closed:
                    assert time.monotonic() < deadline, "the shell outlived its socket"
                    await asyncio.sleep(0.01)

    asyncio.run(asyncio.wait_for(main(), 120))


def test_terminal_on_unknown_device_is_a_clear_error(demo):
    with Client.create(socket=demo["SWITCHYARD_SOCKET"]) as client:
        service = integrated(client, demo)
        device = service.inventory["sim-001"]
        device.name = "nosuch"
        with pytest.raises(SwitchyardError) as err:
            device.terminal(timeout=30)
        assert "nosuch" in str(err.value)
        assert err.value.code == grpc.StatusCode.NOT_FOUND


def test_closing_the_client_ends_its_open_terminal(demo):
    """A client closed while its terminal is open ends the terminal (the
    broker cancels the session's calls), and the read says so."""
    with Client.create(socket=demo["SWITCHYARD_SOCKET"]) as client:
        term = integrated(client, demo).inventory["sim-001"].terminal()
        term.readuntil_regex(PROMPT, timeout=30)
    deadline = time.monotonic() + 10
    while not term.closed:
        assert time.monotonic() < deadline, "the terminal outlived its client"
        time.sleep(0.01)
    assert term.read(timeout=5) == b""
    with pytest.raises(TerminalClosedError):
        term.write("show clock\r")

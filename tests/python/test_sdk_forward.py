"""Port forwarding from the SDK: ``device.forward_tcp_port`` against a real
broker and service, to a TCP echo server playing the device (its port is
the device's SSH port, which the service allows by default)."""

import json
import socket
import socketserver
import subprocess
import threading
import time

import pytest

from conftest import ADMIN_PW, ALICE_PW, BIN, read_line, run

from switchyard.sync import Client


class Echo(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class EchoHandler(socketserver.BaseRequestHandler):
    def handle(self):
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.fixture(scope="module")
def echo_service(tmp_path_factory):
    echo = Echo(("127.0.0.1", 0), EchoHandler)
    threading.Thread(target=echo.serve_forever, daemon=True).start()
    port = echo.server_address[1]
    d = tmp_path_factory.mktemp("fwd-service")
    (d / "admin").write_text(ADMIN_PW + "\n")
    (d / "alice").write_text(ALICE_PW + "\n")
    admin = ["--db", str(d / "inv.db"), "--admin-password-file", str(d / "admin")]
    run("service", *admin, "init")
    run("service", *admin, "device", "add", "echo-1", "--host", "127.0.0.1",
        "--port", str(port), "--username", "nobody")
    run("service", *admin, "user", "add", "alice", "--password-file", str(d / "alice"))
    proc = subprocess.Popen(
        [BIN, "service", *admin, "run", "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        ready = json.loads(read_line(proc, proc.stdout, "rpc_addr"))
        host, rpc_port = ready["rpc_addr"].rsplit(":", 1)
        yield {"host": host, "port": int(rpc_port), "echo_port": port}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        echo.shutdown()


def echo_through(port, payload):
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        def send():
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send)
        sender.start()
        back = b""
        while chunk := s.recv(65536):
            back += chunk
        sender.join()
    return back


def test_forward_tcp_port_echoes_and_stops(broker, echo_service):
    with Client.create(socket=str(broker)) as client:
        service = client.service_direct(
            username="alice", password=ALICE_PW, host=echo_service["host"],
            port=echo_service["port"])
        device = service.inventory["echo-1"]
        fwd = device.forward_tcp_port(destination_port=echo_service["echo_port"])
        assert fwd.local_port > 0
        assert fwd.status == "RUNNING"
        payload = bytes(range(256)) * 4096
        try:
            back = echo_through(fwd.local_port, payload)
        except OSError:
            raise AssertionError(f"forward: {fwd.info()}")
        assert back == payload
        info = fwd.info()
        assert info.connections_total == 1 and info.bytes_from_device == len(payload)
        fwd.stop()
        assert fwd.status == "STOPPED"
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", fwd.local_port), timeout=5)
        fwd.stop()  # stopping twice is harmless
        # A forward ends with the client that made it.
        other = device.forward_tcp_port(destination_port=echo_service["echo_port"])
        port = other.local_port
    with Client.create(socket=str(broker)) as client:
        deadline = time.monotonic() + 10
        while list(client.status().forwards) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list(client.status().forwards) == []
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=5)


def socks_echo(proxy_port, device, port, payload, login=None):
    """A raw SOCKS5 client: CONNECT to ``device:port`` by name (optionally
    logging in, RFC 1929), then ``echo_through``'s exchange."""
    with socket.create_connection(("127.0.0.1", proxy_port), timeout=20) as s:
        s.sendall(bytes([5, 1, 2 if login else 0]))
        assert s.recv(2) == bytes([5, 2 if login else 0])
        if login:
            user, pw = (x.encode() for x in login)
            s.sendall(bytes([1, len(user)]) + user + bytes([len(pw)]) + pw)
            if s.recv(2) != b"\x01\x00":
                return None
        name = device.encode()
        s.sendall(bytes([5, 1, 0, 3, len(name)]) + name + port.to_bytes(2, "big"))
        reply = s.recv(10)
        if reply[1] != 0:
            return reply[1]
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        back = b""
        while chunk := s.recv(65536):
            back += chunk
    return back


def test_socks_proxy_from_the_sync_client(broker, echo_service):
    with Client.create(socket=str(broker)) as client:
        service = client.service_direct(
            username="alice", password=ALICE_PW, host=echo_service["host"],
            port=echo_service["port"])
        with pytest.raises(ValueError):
            client.start_socks_proxy(service, username="alice")
        proxy = client.start_socks_proxy(service, username="alice", password="pw-1")
        assert proxy.forward_id.startswith("socks-") and proxy.status == "RUNNING"
        port = echo_service["echo_port"]
        assert socks_echo(proxy.local_port, "echo-1", port, b"hi", ("alice", "pw-1")) == b"hi"
        assert socks_echo(proxy.local_port, "echo-1", port, b"hi", ("alice", "no")) is None
        # Not the device's SSH port: 02, not allowed.
        assert socks_echo(proxy.local_port, "echo-1", 9, b"hi", ("alice", "pw-1")) == 2
        info = proxy.info()
        assert info.kind == "socks5" and info.username == "alice"
        assert (info.connections_total, info.connections_failed) == (3, 2)
        proxy.stop()
        assert proxy.status == "STOPPED"


def test_aio_forward_tcp_port_and_socks_proxy(broker, echo_service):
    import asyncio

    from switchyard import aio

    async def main():
        async with aio.Client.create(socket=str(broker)) as client:
            service = await client.service_direct(
                username="alice", password=ALICE_PW, host=echo_service["host"],
                port=echo_service["port"])
            device = (await service.get_inventory())["echo-1"]
            port = echo_service["echo_port"]
            async with await device.forward_tcp_port(destination_port=port) as fwd:
                assert await fwd.get_status() == "RUNNING"
                payload = bytes(range(256)) * 64
                back = await asyncio.to_thread(echo_through, fwd.local_port, payload)
                assert back == payload
                assert (await fwd.info()).bytes_from_device == len(payload)
            assert await fwd.get_status() == "STOPPED"
            proxy = await client.start_socks_proxy(service)
            back = await asyncio.to_thread(socks_echo, proxy.local_port, "echo-1", port, b"x")
            assert back == b"x"
            await proxy.stop()
            await proxy.stop()  # harmless
            assert await proxy.get_status() == "STOPPED"

    asyncio.run(main())

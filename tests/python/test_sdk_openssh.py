"""The SDK against a stock OpenSSH device: a private `sshd -D` on loopback
(key authentication, the test account `switchyard-test` that
scripts/setup-test-host.sh creates), a real `switchyard service` whose
device it is, and a real broker. Output bytes come back exactly through
``raw`` / ``output_bytes`` and through ``stream=True`` chunks."""

import json
import os
import shutil
import socket as sock
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import ADMIN_PW, ALICE_PW, BIN, read_line, run

from switchyard.sync import Client

USER = "switchyard-test"
EVERY_BYTE = bytes(range(256))
# `printf` with every byte value as an octal escape (`\000` .. `\377`):
# the device's shell makes the bytes, so nothing on this side sends them.
PRINTF_ALL = "printf '" + "".join(f"\\{i:03o}" for i in range(256)) + "'"
# Enough repeats that output goes in streamed chunks, not only inline.
REPEATS = 4096


def free_port():
    s = sock.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def keygen(path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


@pytest.fixture(scope="module")
def openssh_lab():
    """A stock sshd and a service whose device `linux-1` is that sshd."""
    if os.geteuid() != 0 or not os.path.exists("/usr/sbin/sshd"):
        pytest.skip("needs root and OpenSSH's sshd (scripts/setup-test-host.sh)")
    # Not under pytest's 0700 tree: sshd reads authorized_keys as the
    # device account, which must be able to reach it.
    d = Path(tempfile.mkdtemp(prefix="sdk-openssh-"))
    keygen(d / "host_key")
    keygen(d / "client_key")
    shutil.copy(d / "client_key.pub", d / "authorized_keys")
    os.chmod(d, 0o755)
    port = free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile none\n"
        f"UsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        f"PubkeyAuthentication yes\nAuthorizedKeysFile {d}/authorized_keys\n"
        f"StrictModes no\nLogLevel ERROR\n")
    os.makedirs("/run/sshd", exist_ok=True)
    sshd = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(d / "sshd_config")])
    procs = [sshd]
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                sock.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "sshd did not start"
                time.sleep(0.05)
        (d / "admin").write_text(ADMIN_PW + "\n")
        (d / "alice").write_text(ALICE_PW + "\n")
        admin = ["--db", str(d / "inv.db"), "--admin-password-file", str(d / "admin")]
        run("service", *admin, "init")
        run("service", *admin, "device", "add", "linux-1", "--host", "127.0.0.1",
            "--port", str(port), "--username", USER, "--key-file", str(d / "client_key"))
        run("service", *admin, "user", "add", "alice", "--password-file", str(d / "alice"))
        service = subprocess.Popen(
            [BIN, "service", *admin, "run",
             "--listen", "127.0.0.1:0", "--name", "py-openssh"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        procs.append(service)
        ready = json.loads(read_line(service, service.stdout, "rpc_addr"))
        host, rpc_port = ready["rpc_addr"].rsplit(":", 1)
        yield {"host": host, "port": int(rpc_port)}
    finally:
        for p in reversed(procs):
            p.terminate()
            p.wait(timeout=30)
        shutil.rmtree(d, ignore_errors=True)


def test_every_byte_value_from_openssh_round_trips_through_the_sdk(broker, openssh_lab):
    """All 256 byte values, made by the device's shell, come back exactly:
    small (inline in the device's result) and large (streamed chunks),
    through ``wait()``'s ``raw`` / ``output_bytes`` and ``chunks()``."""
    big = f"i=0; while [ $i -lt {REPEATS} ]; do {PRINTF_ALL}; i=$((i+1)); done"
    with Client.create(socket=str(broker)) as client:
        svc = client.service_direct("alice", host=openssh_lab["host"], port=openssh_lab["port"],
                                    password=ALICE_PW)
        device = svc.inventory["linux-1"]
        results = device.exec([PRINTF_ALL, big]).wait(timeout=60).result["linux-1"]
        assert results.status == "SUCCESS", results.error
        small = results[PRINTF_ALL]
        assert small.status == "SUCCESS", small.status_message
        assert small.raw == EVERY_BYTE
        assert small.output_bytes == EVERY_BYTE
        assert small.stderr == b""
        large = results[big]
        assert large.status == "SUCCESS", large.status_message
        assert len(large.raw) == 256 * REPEATS
        assert large.raw == EVERY_BYTE * REPEATS

        streamed = device.exec(big, stream=True)
        got = bytearray()
        for chunk in streamed.chunks():
            assert not chunk.stderr
            got.extend(chunk.data)
        streamed.wait(timeout=60)
        assert streamed.status == "SUCCESS"
        assert bytes(got) == EVERY_BYTE * REPEATS

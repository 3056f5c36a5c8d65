"""File transfer from the SDK: ``device.sftp_download_to_file`` and the
other three against a real broker and service, the device a stock OpenSSH
``sshd -D`` (with its sftp-server) as the test account
``switchyard-test`` of scripts/setup-test-host.sh (needs root)."""

import asyncio
import hashlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import ADMIN_PW, ALICE_PW, BIN, read_line, run

from switchyard.errors import SwitchyardError
from switchyard.sync import Client

USER = "switchyard-test"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def device():
    if os.geteuid() != 0:
        pytest.skip("needs root (a private sshd as the test account)")
    # Not under pytest's 0700 base: sshd reads authorized_keys as the
    # test account, which must traverse the path.
    d = Path(tempfile.mkdtemp(prefix="switchyard-cp-device-"))
    os.chmod(d, 0o755)
    for key in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)],
                       check=True)
    shutil.copy(d / "client_key.pub", d / "authorized_keys")
    scratch = d / "scratch"
    scratch.mkdir()
    os.chmod(scratch, 0o777)
    port = free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile none\n"
        f"UsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        f"PubkeyAuthentication yes\nAuthorizedKeysFile {d}/authorized_keys\n"
        f"StrictModes no\nLogLevel ERROR\nSubsystem sftp /usr/lib/openssh/sftp-server\n")
    os.makedirs("/run/sshd", exist_ok=True)
    sshd = subprocess.Popen(["/usr/sbin/sshd", "-D", "-f", str(d / "sshd_config")])
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "sshd did not listen"
            time.sleep(0.05)
    (d / "admin").write_text(ADMIN_PW + "\n")
    (d / "alice").write_text(ALICE_PW + "\n")
    admin = ["--db", str(d / "inv.db"), "--admin-password-file", str(d / "admin")]
    run("service", *admin, "init")
    run("service", *admin, "device", "add", "linux-1", "--host", "127.0.0.1", "--port",
        str(port), "--username", USER, "--key-file", str(d / "client_key"))
    run("service", *admin, "user", "add", "alice", "--password-file", str(d / "alice"))
    proc = subprocess.Popen([BIN, "service", *admin, "run", "--listen", "127.0.0.1:0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        ready = json.loads(read_line(proc, proc.stdout, "rpc_addr"))
        host, rpc_port = ready["rpc_addr"].rsplit(":", 1)
        yield {"host": host, "port": int(rpc_port), "scratch": scratch}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        sshd.terminate()
        sshd.wait(timeout=30)
        shutil.rmtree(d, ignore_errors=True)


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("kind", ["sftp", "scp"])
def test_a_file_goes_both_ways_with_its_sha256_intact(broker, device, tmp_path, kind):
    data = os.urandom(3 << 20)
    original = tmp_path / "original.bin"
    original.write_bytes(data)
    remote = device["scratch"] / f"sdk-{kind}.bin"
    with Client.create(socket=str(broker)) as client:
        service = client.service_direct(username="alice", password=ALICE_PW,
                                        host=device["host"], port=device["port"])
        dev = service.inventory["linux-1"]
        up = getattr(dev, f"{kind}_upload_from_file")(str(original), str(remote)).wait(120)
        assert up.bytes_transferred == len(data)
        assert up.protocol == kind
        assert digest(remote) == digest(original)
        back = tmp_path / "back.bin"
        down = getattr(dev, f"{kind}_download_to_file")(str(remote), str(back)).wait(120)
        assert down.bytes_transferred == len(data)
        assert down.protocol == kind
        assert digest(back) == digest(original)
        # A missing file: the error names the device and path, nothing is left.
        missing = getattr(dev, f"{kind}_download_to_file")("/nope/x", str(tmp_path / "x"))
        with pytest.raises(SwitchyardError, match="linux-1:/nope/x: no such file"):
            missing.wait(60)
        assert not (tmp_path / "x").exists()
        assert not [p for p in os.listdir(tmp_path) if p.endswith(".part")]


@pytest.mark.parametrize("kind", ["sftp", "scp"])
def test_the_asyncio_client_copies_both_ways_and_a_failed_copy_leaves_nothing(
        broker, device, tmp_path, kind):
    from switchyard.aio import Client as AsyncClient

    data = os.urandom(3 << 20)
    original = tmp_path / "original.bin"
    original.write_bytes(data)
    remote = device["scratch"] / f"sdk-aio-{kind}.bin"
    back = tmp_path / "back.bin"

    async def main():
        async with AsyncClient.create(socket=str(broker)) as client:
            service = await client.service_direct(username="alice", password=ALICE_PW,
                                                  host=device["host"], port=device["port"])
            dev = (await service.get_inventory())["linux-1"]
            up = await getattr(dev, f"{kind}_upload_from_file")(str(original), str(remote))
            assert (up.bytes_transferred, up.protocol) == (len(data), kind)
            assert digest(remote) == digest(original)
            # Two downloads at once on one client, each waited on.
            downs = [getattr(dev, f"{kind}_download_to_file")(str(remote), str(p))
                     for p in (back, tmp_path / "back2.bin")]
            for down in downs:
                await down.wait(120)
                assert (down.bytes_transferred, down.protocol) == (len(data), kind)
            missing = getattr(dev, f"{kind}_download_to_file")("/nope/x", str(tmp_path / "x"))
            with pytest.raises(SwitchyardError, match="linux-1:/nope/x: no such file"):
                await missing.wait(60)

    asyncio.run(asyncio.wait_for(main(), 300))
    assert digest(back) == digest(original)
    assert digest(tmp_path / "back2.bin") == digest(original)
    assert not (tmp_path / "x").exists()
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".part")]

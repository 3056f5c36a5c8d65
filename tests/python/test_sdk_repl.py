"""`python -m switchyard`: the client's methods as globals, tab
completion, and the session released when the prompt ends."""

import sys
import time

import pytest

from switchyard.sync import Client


def sessions(socket):
    with Client.create(socket=socket) as c:
        return [s.client_name for s in c.status().sessions]


def test_repl_globals_completion_and_close(demo):
    pexpect = pytest.importorskip("pexpect")
    socket = demo["SWITCHYARD_SOCKET"]
    child = pexpect.spawn(sys.executable, ["-m", "switchyard", "--socket", socket],
                          env=demo, timeout=60, encoding="utf-8")
    try:
        child.expect("Switchyard client")
        child.expect(">>> ")
        assert "python -m switchyard" in sessions(socket)
        child.send("service_integ\t")
        child.expect("service_integrated\\(")
        child.send(f"{demo['SWITCHYARD_ADMIN_PASSWORD']!r}, {demo['SWITCHYARD_DB']!r})"
                   ".inventory.filter('name', 'inproc').singleton()\r")
        child.expect("<Device inproc-1 ")
        child.expect(">>> ")
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    deadline = time.monotonic() + 10
    while "python -m switchyard" in sessions(socket):
        assert time.monotonic() < deadline, "the prompt's session outlived it"
        time.sleep(0.02)


def test_repl_without_a_broker_says_so(tmp_path):
    import subprocess

    out = subprocess.run([sys.executable, "-m", "switchyard", "--socket", str(tmp_path / "no.sock")],
                         capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode == 1
    assert "broker is not running" in out.stderr

"""The reference guide's scripts (tests/python/reference_scripts, in our
words) run against Switchyard with only their import line changed:
direct and integrated services here, cloud ones in test_cloud.py. Scripts
that ask for a password on a terminal are driven through a pty."""

import json
import os
import socket as sock
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import ALICE_PW, run_script
from test_sdk import broker_status

SCRIPTS = Path(__file__).resolve().parent / "reference_scripts"


def ref_env(broker, service):
    return dict(os.environ, SWITCHYARD_SOCKET=str(broker), REF_HOST=service["host"],
                REF_PORT=str(service["port"]), REF_USER="alice", REF_PASSWORD=ALICE_PW)


def test_scripts_import_only_the_compat_module():
    for script in SCRIPTS.glob("*.py"):
        imports = [line for line in script.read_text().splitlines()
                   if "import" in line and "switchyard" in line]
        assert imports and all(
            line.startswith("from switchyard.compat.radkit.sync import ") for line in imports
        ), script


def spawn(script, env):
    pexpect = pytest.importorskip("pexpect")
    return pexpect, pexpect.spawn(sys.executable, [str(SCRIPTS / script)], env=env,
                                  timeout=60, encoding="utf-8")


def test_direct_asks_for_the_password(broker, service):
    pexpect, child = spawn("direct.py", ref_env(broker, service))
    child.expect("Password for alice@")
    child.sendline(ALICE_PW)
    child.expect("Inventory of 3 devices")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before


def test_integrated_asks_for_the_admin_password(demo):
    pexpect, child = spawn("integrated.py", demo)
    child.expect("Admin password:")
    child.sendline(demo["SWITCHYARD_ADMIN_PASSWORD"])
    child.expect("inproc-1")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before


def test_standalone_and_notebook(broker, service):
    env = ref_env(broker, service)
    out = run_script([sys.executable, SCRIPTS / "standalone.py"], env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [f"{d} SUCCESS *12:00:00.000 UTC Mon Jan 1 2024"
                                       for d in ("core-1", "core-2", "edge-1")]
    out = run_script([sys.executable, SCRIPTS / "notebook.py"], env)
    assert out.returncode == 0, out.stderr
    assert "core-1 uptime" in out.stdout


def test_fastapi_lifespan_script(broker, service):
    pytest.importorskip("fastapi")
    listener = sock.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    env = dict(ref_env(broker, service), REF_FD=str(listener.fileno()))
    app = subprocess.Popen([sys.executable, str(SCRIPTS / "webapp.py")], env=env,
                           pass_fds=[listener.fileno()], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not broker_status(broker).links:
            assert app.poll() is None, app.stderr.read()
            assert time.monotonic() < deadline, "the app did not connect"
            time.sleep(0.05)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/clock/edge-1", timeout=30) as r:
            assert "UTC" in json.load(r)["clock"]
    finally:
        app.terminate()
        app.wait(timeout=30)
        listener.close()


def test_module_functions_use_the_context_client(demo):
    from switchyard.compat.radkit.sync import SwitchyardError, create_context, service_integrated

    with pytest.raises(SwitchyardError, match="create_context"):
        service_integrated()
    with create_context(demo["SWITCHYARD_SOCKET"]) as client:
        service = service_integrated(demo["SWITCHYARD_ADMIN_PASSWORD"], demo["SWITCHYARD_DB"])
        assert "inproc-1" in service.inventory
        assert client.status().sessions

"""The Python SDK (clients/python) end to end against a real broker and
service: the reference guide's API shape, its examples, and the cases the
guide warns about (unclosed clients, multi-worker web apps)."""

import json
import os
import socket as sock
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import pytest

from conftest import ALICE_PW, ROOT, run_script

from switchyard import ExecError, SwitchyardError
from switchyard._core import ExecArgs
from switchyard.sync import Client

EXAMPLES = ROOT / "clients" / "python" / "examples"


def env_for(broker, service):
    return dict(
        os.environ,
        SWITCHYARD_SOCKET=str(broker),
        SWITCHYARD_SERVICE_HOST=service["host"],
        SWITCHYARD_SERVICE_PORT=str(service["port"]),
        SWITCHYARD_SERVICE_USER="alice",
        SWITCHYARD_SERVICE_PASSWORD=ALICE_PW,
    )


def broker_status(broker):
    with Client.create(socket=str(broker)) as c:
        return c.status()


def test_api_shape(broker, service):
    with Client.create(socket=str(broker)) as client:
        svc = client.service_direct("alice", host=service["host"], port=service["port"], password=ALICE_PW)
        inventory = svc.inventory
        assert sorted(inventory) == ["core-1", "core-2", "edge-1"]
        assert inventory["core-1"].device_type == "IOS-XE"
        assert list(inventory.subset(["edge-1"])) == ["edge-1"]
        with pytest.raises(KeyError, match="nope"):
            inventory.subset(["edge-1", "nope"])
        assert len(inventory.filter("device_type", "IOS-XE")) == 3
        assert sorted(inventory.filter("role", "core")) == ["core-1", "core-2"]

        one = inventory["core-1"].exec("show version").wait(timeout=30)
        assert "core-1 uptime" in one.result["core-1"].data

        many = inventory.exec(["show clock", "show nope"]).wait(timeout=30)
        res = many.result["edge-1"]
        assert "UTC" in res["show clock"].data
        assert res["show nope"].status == "FAILURE"
        with pytest.raises(ExecError):
            res["show nope"].data
        assert res.status == "FAILURE"

        # An unknown device fails on its own; the others run.
        mixed = inventory["core-1"]._service._exec(["core-1", "ghost", "core-1"], ExecArgs("show version"))
        res = mixed.wait(30).result
        assert sorted(res) == ["core-1", "ghost"]
        assert "core-1 uptime" in res["core-1"].data
        assert res["ghost"].status == "FAILURE"
        assert 'no device "ghost" that you may use' in res["ghost"].error
        with pytest.raises(ExecError):
            res["ghost"].data

        with pytest.raises(SwitchyardError) as err:
            client.service_cloud("SERIAL")
        assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
        assert "not logged in" in str(err.value)


def test_wrong_password_is_a_clear_error(broker, service):
    with Client.create(socket=str(broker)) as client:
        with pytest.raises(SwitchyardError) as err:
            client.service_direct("alice", host=service["host"], port=service["port"], password="nope")
        assert err.value.code == grpc.StatusCode.UNAUTHENTICATED


def test_one_client_many_threads(broker, service):
    with Client.create(socket=str(broker)) as client:
        svc = client.service_direct("alice", host=service["host"], port=service["port"], password=ALICE_PW)
        errors = []

        def work(i):
            try:
                name = ["core-1", "core-2", "edge-1"][i % 3]
                out = svc.inventory[name].exec("show clock").wait(30).result[name].data
                assert "UTC" in out
            except Exception as e:  # noqa: BLE001 - collected for the assertion
                errors.append(e)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors
        status = client.status()
        assert len(status.links) == 1 and status.links[0].connects == 1


def test_broker_not_running_is_a_clear_error(tmp_path):
    with pytest.raises(SwitchyardError) as err:
        Client.create(socket=str(tmp_path / "none.sock")).open()
    assert "broker is not running" in str(err.value)


def test_examples_run(broker, service):
    env = env_for(broker, service)
    out = run_script([sys.executable, EXAMPLES / "standalone.py"], env)
    assert out.returncode == 0, out.stderr
    assert "3 devices" in out.stdout and "=== core-1 (SUCCESS)" in out.stdout
    out = run_script([sys.executable, EXAMPLES / "notebook_exitstack.py"], env)
    assert out.returncode == 0, out.stderr
    assert "UTC" in out.stdout


def test_unclosed_client_exits_promptly_and_is_reaped(broker, service):
    code = (
        "from switchyard.sync import Client\n"
        "c = Client.create()\n"
        "c.open()\n"
        f"s = c.service_direct('alice', host={service['host']!r}, port={service['port']}, password={ALICE_PW!r})\n"
        "print(c.session_id, flush=True)\n"
        "# no close: the interpreter must still exit\n"
    )
    started = time.monotonic()
    out = run_script([sys.executable, "-c", code], env_for(broker, service), timeout=60)
    assert out.returncode == 0, out.stderr
    assert time.monotonic() - started < 30
    session = out.stdout.strip()
    deadline = time.monotonic() + 5
    while True:
        live = [s.session_id for s in broker_status(broker).sessions]
        if session not in live:
            break
        assert time.monotonic() < deadline, "session of an exited process was not reaped"
        time.sleep(0.02)


def test_quickstart_against_the_demo(tmp_path):
    from conftest import BIN, read_line

    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path), XDG_STATE_HOME=str(tmp_path))
    demo = subprocess.Popen([BIN, "demo", "--devices", "2"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        sock_line = read_line(demo, demo.stdout, "broker socket:")
        socket_path = sock_line.split(":", 1)[1].strip()
        db = str(Path(socket_path).parent / "inventory.db")
        qenv = dict(env, SWITCHYARD_SOCKET=socket_path, SWITCHYARD_DB=db,
                    SWITCHYARD_ADMIN_PASSWORD="switchyard-demo")
        out = run_script([sys.executable, EXAMPLES / "quickstart.py"], qenv)
        assert out.returncode == 0, out.stderr
        assert "--- sim-001: SUCCESS" in out.stdout and "--- inproc-1: SUCCESS" in out.stdout
    finally:
        demo.terminate()
        demo.wait(timeout=30)


def test_uvicorn_workers_share_one_link(broker, service):
    pytest.importorskip("fastapi")
    listener = sock.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    env = env_for(broker, service)
    env["PYTHONPATH"] = str(ROOT / "clients" / "python")
    app = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "examples.fastapi_app:app", "--workers", "4",
         "--fd", str(listener.fileno()), "--log-level", "warning"],
        env=env, pass_fds=[listener.fileno()], cwd=ROOT / "clients" / "python",
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while len(broker_status(broker).sessions) < 4:
            assert app.poll() is None, app.stderr.read()
            assert time.monotonic() < deadline, "workers did not all start"
            time.sleep(0.05)
        for _ in range(40):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/devices/core-1/clock", timeout=30) as r:
                body = json.load(r)
            assert "UTC" in body["clock"] and body["pid"] > 0
        status = broker_status(broker)
        assert len(status.links) == 1, status
        assert status.links[0].connects == 1, "four workers, one login"
        assert status.links[0].holders == 4
    finally:
        app.terminate()
        app.wait(timeout=30)
        listener.close()


def test_uvicorn_auto_reload_keeps_working(broker, service, tmp_path):
    """Auto-reload restarts the app in a new process; its new client shares
    the broker's still-open link instead of logging in again."""
    pytest.importorskip("fastapi")
    app_dir = tmp_path / "app"
    (app_dir / "examples").mkdir(parents=True)
    source = (EXAMPLES / "fastapi_app.py").read_text()
    (app_dir / "examples" / "fastapi_app.py").write_text(source)
    listener = sock.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    env = env_for(broker, service)
    env["PYTHONPATH"] = str(app_dir)
    app = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "examples.fastapi_app:app", "--reload",
         "--reload-dir", str(app_dir), "--fd", str(listener.fileno()), "--log-level", "warning"],
        env=env, pass_fds=[listener.fileno()], cwd=app_dir,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )

    def get():
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/devices/core-2/clock", timeout=30) as r:
            return json.load(r)

    def wait_for(predicate, what):
        deadline = time.monotonic() + 60
        while not predicate():
            assert app.poll() is None, app.stderr.read()
            assert time.monotonic() < deadline, what
            time.sleep(0.05)

    try:
        wait_for(lambda: len(broker_status(broker).sessions) == 1, "app did not start")
        first = get()
        first_session = broker_status(broker).sessions[0].session_id
        # Edit the app: the reloader restarts it in a new process.
        (app_dir / "examples" / "fastapi_app.py").write_text(source + "\n# edited\n")
        def reloaded():
            sessions = [s.session_id for s in broker_status(broker).sessions]
            return len(sessions) == 1 and sessions[0] != first_session

        wait_for(reloaded, "app did not reload (old session gone, new one open)")
        second = get()
        assert "UTC" in first["clock"] and "UTC" in second["clock"]
        assert second["pid"] != first["pid"], "served by the reloaded process"
        status = broker_status(broker)
        assert status.links[0].connects == 1, "the reloaded app reused the login"
    finally:
        app.terminate()
        app.wait(timeout=30)
        listener.close()


def test_exec_output_is_bytes_stderr_apart_and_streams(broker, service):
    """Every byte value comes back exactly (``raw`` / ``output_bytes``),
    ``data`` decodes leniently, and ``stream=True`` hands output to
    ``chunks()`` as it arrives, bounded, with statuses after."""
    every_byte = bytes(range(256))
    with Client.create(socket=str(broker)) as client:
        svc = client.service_direct("alice", host=service["host"], port=service["port"], password=ALICE_PW)
        device = svc.inventory["core-1"]
        res = device.exec("show bytes").wait(timeout=30).result["core-1"]["show bytes"]
        assert res.raw == every_byte
        assert res.output_bytes == every_byte
        assert res.stderr == b""
        assert res.data == every_byte.decode("utf-8", "replace")

        many = svc.inventory.exec("show bulk 3000000", stream=True)
        got = {}
        for chunk in many.chunks():
            assert not chunk.stderr
            got[chunk.device] = got.get(chunk.device, 0) + len(chunk.data)
        assert got == {"core-1": 3000000, "core-2": 3000000, "edge-1": 3000000}
        many.wait(timeout=30)
        assert many.status == "SUCCESS"
        # Streamed output is not also kept.
        assert many.result["core-1"]["show bulk 3000000"].raw == b""

        with pytest.raises(SwitchyardError, match="stream=True"):
            next(iter(device.exec("show clock").chunks()))

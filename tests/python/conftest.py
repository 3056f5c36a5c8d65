"""Fixtures: a real `switchyard service` and `switchyard broker`, and gRPC
stubs generated from proto/ with grpcio-tools."""

import contextlib
import json
import socket as sock
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ.get("SWITCHYARD_BIN", str(ROOT / "target" / "debug" / "switchyard"))
ADMIN_PW = "py-admin-password"
ALICE_PW = "py-alice-password"


def read_line(proc, stream, want, timeout=30.0):
    """Returns the first line of `stream` containing `want` (bounded). A
    thread keeps draining the stream afterwards so the process never
    blocks on a full pipe."""
    lines = queue.Queue()

    def pump():
        for line in stream:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    seen = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {want!r} within {timeout}s; got {seen}")
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            continue
        if line is None:
            raise AssertionError(f"process exited ({proc.poll()}) before {want!r}: {seen}")
        seen.append(line)
        if want in line:
            return line


def run_script(args, env, timeout=120):
    """Runs a Python script to completion (bounded). If it hangs, it is
    sent SIGABRT with the fault handler on, so the failure shows where
    every thread of it was stuck."""
    proc = subprocess.Popen(args, env=dict(env, PYTHONFAULTHANDLER="1"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        out, err = proc.communicate(timeout=30)
        raise AssertionError(f"{args} hung for {timeout}s; stdout:\n{out}\nstacks:\n{err}")
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def run(*args, **kw):
    return subprocess.run([BIN, *args], check=True, capture_output=True, text=True, **kw)


@pytest.fixture(scope="session")
def stubs(tmp_path_factory):
    out = tmp_path_factory.mktemp("stubs")
    from grpc_tools import protoc

    rc = protoc.main([
        "grpc_tools.protoc",
        f"-I{ROOT / 'proto'}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        "switchyard/v1/broker.proto",
    ])
    assert rc == 0, "protoc failed"
    sys.path.insert(0, str(out))
    from switchyard.v1 import broker_pb2, broker_pb2_grpc

    return broker_pb2, broker_pb2_grpc


@pytest.fixture(scope="session")
def service(tmp_path_factory):
    d = tmp_path_factory.mktemp("service")
    db = d / "inv.db"
    (d / "admin").write_text(ADMIN_PW + "\n")
    (d / "alice").write_text(ALICE_PW + "\n")
    admin = ["--db", str(db), "--admin-password-file", str(d / "admin")]
    run("service", *admin, "init")
    for name in ("core-1", "core-2", "edge-1"):
        role = name.split("-")[0]
        run("service", *admin, "device", "add", name, "--driver", "simulator",
            "--device-type", "IOS-XE", "--attr", f"role={role}")
    run("service", *admin, "user", "add", "alice", "--password-file", str(d / "alice"))
    proc = subprocess.Popen(
        [BIN, "service", *admin, "run", "--listen", "127.0.0.1:0", "--name", "py-service"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        ready = json.loads(read_line(proc, proc.stdout, "rpc_addr"))
        host, port = ready["rpc_addr"].rsplit(":", 1)
        yield {"host": host, "port": int(port), "fingerprint": ready["fingerprint"],
               "tcp_addr": ready["tcp_addr"]}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@contextlib.contextmanager
def running_broker(tmp_path, extra_env=None):
    """A `switchyard broker` on `tmp_path/broker.sock` (state and config
    under `tmp_path`; `extra_env` adds variables, e.g. config overrides
    such as SWITCHYARD_BROKER__TRANSPORT); yields the socket's path."""
    sock = tmp_path / "broker.sock"
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"), XDG_CONFIG_HOME=str(tmp_path),
               **(extra_env or {}))
    env.pop("SWITCHYARD_SOCKET", None)
    proc = subprocess.Popen(
        [BIN, "broker", "--socket", str(sock)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        read_line(proc, proc.stderr, "switchyard broker listening on")
        yield sock
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture()
def broker(tmp_path):
    with running_broker(tmp_path) as sock:
        yield sock


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """`switchyard demo --devices 1`: a broker with an integrated service
    over simulated devices (sim-001 over SSH, inproc-1 in process). Yields
    the environment its printed instructions set (socket, db, password)."""
    d = tmp_path_factory.mktemp("demo")
    env = dict(os.environ, XDG_CONFIG_HOME=str(d), XDG_STATE_HOME=str(d))
    env.pop("SWITCHYARD_SOCKET", None)
    proc = subprocess.Popen([BIN, "demo", "--devices", "1"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        line = read_line(proc, proc.stdout, "broker socket:")
        socket_path = line.split(":", 1)[1].strip()
        db = str(Path(socket_path).parent / "inventory.db")
        yield dict(env, SWITCHYARD_SOCKET=socket_path, SWITCHYARD_DB=db,
                   SWITCHYARD_ADMIN_PASSWORD="switchyard-demo")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


class Tinyproxy:
    """A real HTTP CONNECT proxy (Debian's tinyproxy) on a free loopback
    port, optionally with Basic authentication; ``log()`` is what it logged."""

    def __init__(self, directory, auth=None):
        self.log_path = directory / "tinyproxy.log"
        for _ in range(5):
            with sock.socket() as s:
                s.bind(("127.0.0.1", 0))
                self.port = s.getsockname()[1]
            conf = (f"Port {self.port}\nListen 127.0.0.1\nTimeout 60\n"
                    f"LogFile \"{self.log_path}\"\nLogLevel Connect\nAllow 127.0.0.1\n")
            if auth:
                conf += f"BasicAuth {auth[0]} {auth[1]}\n"
            (directory / "tinyproxy.conf").write_text(conf)
            self.proc = subprocess.Popen(["tinyproxy", "-d", "-c", str(directory / "tinyproxy.conf")],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    sock.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    return
                except OSError:
                    time.sleep(0.02)
            self.close()
        raise RuntimeError("tinyproxy did not start")

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def log(self):
        return self.log_path.read_text() if self.log_path.exists() else ""

    def close(self):
        self.proc.kill()
        self.proc.wait(timeout=10)


def closed_port():
    """A loopback port nothing listens on."""
    s = sock.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A service with three simulated devices and one (dead-1) whose SSH
    port refuses connections, so it fails as a whole."""
    d = tmp_path_factory.mktemp("lab")
    (d / "admin").write_text(ADMIN_PW + "\n")
    (d / "alice").write_text(ALICE_PW + "\n")
    admin = ["--db", str(d / "inv.db"), "--admin-password-file", str(d / "admin")]
    run("service", *admin, "init")
    for name, kind in (("core-1", "IOS-XE"), ("core-2", "IOS-XE"), ("edge-1", "IOS")):
        run("service", *admin, "device", "add", name, "--driver", "simulator",
            "--device-type", kind, "--attr", f"role={name.split('-')[0]}")
    run("service", *admin, "device", "add", "dead-1", "--host", "127.0.0.1",
        "--port", str(closed_port()), "--username", "nobody", "--password-file", str(d / "alice"),
        "--device-type", "LINUX", "--attr", "role=edge")
    run("service", *admin, "user", "add", "alice", "--password-file", str(d / "alice"))
    proc = subprocess.Popen(
        [BIN, "service", *admin, "run", "--listen", "127.0.0.1:0", "--name", "py-lab"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        ready = json.loads(read_line(proc, proc.stdout, "rpc_addr"))
        host, port = ready["rpc_addr"].rsplit(":", 1)
        yield {"host": host, "port": int(port), "fingerprint": ready["fingerprint"],
               "tcp_addr": ready["tcp_addr"]}
    finally:
        proc.terminate()
        proc.wait(timeout=30)

"""What the benchmarks against OpenSSH share: a private `sshd -D` on
loopback, a real `switchyard service run` + `switchyard broker` with the
named service `lab` connected to it, an OpenSSH ControlMaster to the same
sshd, the interleaved rounds' medians and ratios, and the clean-up.

Needs root (the sshd runs as the test account `switchyard-test` that
scripts/setup-test-host.sh creates). `SWITCHYARD_BIN` overrides the binary
(default: target/release/switchyard).
"""

import json
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = os.environ.get("SWITCHYARD_BIN", str(ROOT / "target" / "release" / "switchyard"))
USER = "switchyard-test"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def keygen(path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


def wait_for_port(port, what, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{what} did not start")


def start_sshd(d, sftp=False):
    """A private `sshd -D` on a free loopback port with a fresh host key and
    client key (`d/client_key`); with `sftp`, its sftp-server as the `sftp`
    subsystem. Returns (process, port)."""
    keygen(d / "host_key")
    keygen(d / "client_key")
    shutil.copy(d / "client_key.pub", d / "authorized_keys")
    os.chmod(d, 0o755)
    port = free_port()
    subsystem = f"Subsystem sftp {SFTP_SERVER}\n" if sftp else ""
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile none\n"
        f"UsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        f"PubkeyAuthentication yes\nAuthorizedKeysFile {d}/authorized_keys\n"
        f"StrictModes no\nMaxSessions 20\nLogLevel ERROR\n{subsystem}")
    os.makedirs("/run/sshd", exist_ok=True)
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-f", str(d / "sshd_config")])
    wait_for_port(port, "sshd")
    return proc, port


def run(*args, bin=None, **kw):
    """`switchyard ARGS` (`bin`, default `BIN`), checked, output captured."""
    return subprocess.run([bin or BIN, *args], check=True, capture_output=True, text=True, **kw)


def read_line(stream, want, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        if want in line:
            return line
    raise SystemExit(f"no {want!r}")


def peak_mib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid):
    """User + system CPU seconds a live process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def bench_dir(prefix):
    """A scratch directory and a list of processes; on exit the processes
    are stopped (last started first) and the directory removed."""
    d = Path(tempfile.mkdtemp(prefix=prefix))
    procs = []
    try:
        yield d, procs
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(d, ignore_errors=True)


class Switchyard:
    """A service whose device `dev` is the sshd on `port` (key login as the
    test account, its key `d/client_key`; `device_args` add options such as
    `--forward-ports`), a broker, and the named service `lab` connected.
    `bin` is the binary (default `BIN`; another build's, e.g. a base build
    for an interleaved before/after run); `state` the directory of its
    config, state and sockets (default `d`). `env` runs the CLI against
    that broker; `service`/`broker` are the processes (added to `procs`)."""

    def __init__(self, d, port, procs, device_args=(), bin=None, state=None):
        self.bin = bin or BIN
        state = Path(state or d)
        state.mkdir(parents=True, exist_ok=True)
        self.env = dict(os.environ, XDG_CONFIG_HOME=str(state), XDG_STATE_HOME=str(state),
                        SWITCHYARD_SOCKET=str(state / "broker.sock"), RUST_LOG="warn")
        env, sy = self.env, self.bin
        (state / "admin").write_text("bench-admin-password\n")
        (state / "alice").write_text("bench-alice-password\n")
        admin = ["service", "--db", str(state / "inv.db"), "--admin-password-file",
                 str(state / "admin")]
        run(*admin, "init", env=env, bin=sy)
        run(*admin, "device", "add", "dev", "--host", "127.0.0.1", "--port", str(port),
            "--username", USER, "--key-file", str(d / "client_key"), *device_args, env=env,
            bin=sy)
        run(*admin, "user", "add", "alice", "--password-file", str(state / "alice"), env=env,
            bin=sy)
        self.service = subprocess.Popen([sy, *admin, "run", "--listen", "127.0.0.1:0"], env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                        text=True)
        procs.append(self.service)
        rpc = json.loads(read_line(self.service.stdout, "rpc_addr"))["rpc_addr"]
        self.broker = subprocess.Popen([sy, "broker"], env=env, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.PIPE, text=True)
        procs.append(self.broker)
        read_line(self.broker.stderr, "listening on")
        host, rport = rpc.rsplit(":", 1)
        run("connect", "direct", "lab", "--host", host, "--port", rport, "--user", "alice",
            "--password-file", str(state / "alice"), env=env, bin=sy)

    def ssh_proxy(self, authorized_keys):
        """Starts this broker's SSH proxy on a free loopback port (logins
        with the keys in `authorized_keys`); returns its port."""
        out = run("ssh-proxy", "start", "--listen", "127.0.0.1:0", "--authorized-keys",
                  str(authorized_keys), env=self.env, bin=self.bin).stdout
        return out.split()[0].rsplit(":", 1)[1]


def start_master(d, port, procs):
    """`ssh -M -N` to the sshd on `port` with a ControlMaster socket;
    returns the options (`-o ControlPath=...`, key, host-key handling) that
    make `ssh`/`scp` ride it, once its socket exists."""
    ctl = d / "ctl"
    opts = ["-o", f"ControlPath={ctl}", "-o", "StrictHostKeyChecking=no",
            "-o", f"UserKnownHostsFile={d}/known", "-o", "BatchMode=yes",
            "-i", str(d / "client_key")]
    master = subprocess.Popen(["ssh", "-M", "-N", "-p", str(port), *opts,
                               f"{USER}@127.0.0.1"], stdin=subprocess.DEVNULL)
    procs.append(master)
    deadline = time.monotonic() + 10
    while not ctl.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    if not ctl.exists():
        raise SystemExit("the ControlMaster did not start")
    return opts, master


def medians(rows):
    """{measurement: {tool: [per-round values]}} -> the median per tool."""
    return {k: {t: statistics.median(v) for t, v in rows[k].items()} for k in rows}


def ratio(rows, a, b, invert=False):
    """The median of per-round ratios a/b of one measurement's rows (b/a
    with `invert`, for times where lower is better)."""
    pairs = zip(rows[a], rows[b])
    return statistics.median((y / x) if invert else (x / y) for x, y in pairs)

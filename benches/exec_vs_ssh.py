#!/usr/bin/env python3
"""`switchyard exec --raw` against OpenSSH with a ControlMaster, side by side
in one run, on one stock `sshd` on loopback (key authentication).

    cargo build --release --bins
    python3 benches/exec_vs_ssh.py [--bulk-mb 200] [--rounds 5] [--small 200]

Needs root (a private `sshd -D` on a free port, as the test account
`switchyard-test` that scripts/setup-test-host.sh creates). Starts a real
`switchyard service run` (the SSH device is that sshd) and `switchyard
broker`, connects the named service `lab`, and opens `ssh -M` with a
ControlMaster socket; then, in interleaved rounds (switchyard, ssh,
switchyard, ssh, ...):

* bulk: `head -c N /dev/zero` on the device, stdout read to the end by this
  script (MB/s from spawn to the last byte; median round; ratio per round);
* small: `true`, warm (per-call median over `--small` calls per round);
* time to first byte: `echo x; sleep 0.3` (spawn to the first byte).

For bulk it also reports CPU seconds per GB per stage: the service and
broker (and ssh's ControlMaster) from /proc around each transfer, each
client process from its rusage; the device's sshd is common to both.

Peak RSS (VmHWM) of the service and broker are read at the end. Results go
to stdout as a Markdown table and to target/bench-exec-vs-ssh.json.
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = os.environ.get("SWITCHYARD_BIN", str(ROOT / "target" / "release" / "switchyard"))
USER = "switchyard-test"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def keygen(path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


def start_sshd(d):
    keygen(d / "host_key")
    keygen(d / "client_key")
    shutil.copy(d / "client_key.pub", d / "authorized_keys")
    os.chmod(d, 0o755)
    port = free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile none\n"
        f"UsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        f"PubkeyAuthentication yes\nAuthorizedKeysFile {d}/authorized_keys\n"
        f"StrictModes no\nMaxSessions 20\nLogLevel ERROR\n")
    os.makedirs("/run/sshd", exist_ok=True)
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-f", str(d / "sshd_config")])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    raise SystemExit("sshd did not start")


def run(*args, **kw):
    return subprocess.run([BIN, *args], check=True, capture_output=True, text=True, **kw)


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


class Cpu:
    """CPU seconds per stage over the bulk rounds: the long-lived processes
    (service, broker; ssh's ControlMaster) by /proc deltas around each
    transfer, the per-call client process (`switchyard exec`, `ssh -S`)
    from its rusage."""

    def __init__(self):
        self.seconds = {}

    def add(self, stage, seconds):
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds


def timed_read(argv, env=None, cpu=None, stage=None, watch=()):
    """Spawns argv; returns (seconds to first byte, seconds to EOF, bytes).
    With `cpu`, adds the client's CPU time under `stage` and each watched
    (name, pid)'s CPU time over the call under its name."""
    before = {name: cpu_seconds(pid) for name, pid in watch}
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)
    fd = proc.stdout.fileno()
    first = None
    total = 0
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            break
        if first is None:
            first = time.perf_counter() - start
        total += len(chunk)
    end = time.perf_counter() - start
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = rc = os.waitstatus_to_exitcode(status)
    if cpu is not None:
        cpu.add(stage, usage.ru_utime + usage.ru_stime)
        for name, pid in watch:
            cpu.add(name, cpu_seconds(pid) - before[name])
    if rc != 0:
        raise SystemExit(f"{argv} exited {rc}")
    return first or end, end, total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bulk-mb", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--small", type=int, default=200)
    args = ap.parse_args()
    n = args.bulk_mb * 1_000_000

    d = Path(tempfile.mkdtemp(prefix="bench-exec-"))
    sshd, port = start_sshd(d)
    procs = [sshd]
    try:
        env = dict(os.environ, XDG_CONFIG_HOME=str(d), XDG_STATE_HOME=str(d),
                   SWITCHYARD_SOCKET=str(d / "broker.sock"), RUST_LOG="warn")
        (d / "admin").write_text("bench-admin-password\n")
        (d / "alice").write_text("bench-alice-password\n")
        admin = ["service", "--db", str(d / "inv.db"), "--admin-password-file", str(d / "admin")]
        run(*admin, "init", env=env)
        run(*admin, "device", "add", "dev", "--host", "127.0.0.1", "--port", str(port),
            "--username", USER, "--key-file", str(d / "client_key"), env=env)
        run(*admin, "user", "add", "alice", "--password-file", str(d / "alice"), env=env)
        service = subprocess.Popen([BIN, *admin, "run", "--listen", "127.0.0.1:0"], env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        procs.append(service)
        rpc = json.loads(read_line(service.stdout, "rpc_addr"))["rpc_addr"]
        broker = subprocess.Popen([BIN, "broker"], env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)
        procs.append(broker)
        read_line(broker.stderr, "listening on")
        host, rport = rpc.rsplit(":", 1)
        run("connect", "direct", "lab", "--host", host, "--port", rport, "--user", "alice",
            "--password-file", str(d / "alice"), env=env)

        ctl = d / "ctl"
        ssh_base = ["ssh", "-S", str(ctl), "-p", str(port), "-i", str(d / "client_key"),
                    "-o", "StrictHostKeyChecking=no", "-o", f"UserKnownHostsFile={d}/known",
                    "-o", "BatchMode=yes", f"{USER}@127.0.0.1"]
        master = subprocess.Popen(["ssh", "-M", "-N", *ssh_base[1:]],
                                  stdin=subprocess.DEVNULL)
        procs.append(master)
        deadline = time.monotonic() + 10
        while not ctl.exists() and time.monotonic() < deadline:
            time.sleep(0.05)

        def sy(cmd):
            return [BIN, "exec", "lab", "dev", "-c", cmd, "--raw"]

        def ssh(cmd):
            return [*ssh_base, cmd]

        bulk = f"head -c {n} /dev/zero"
        # Warm both (first connection, first channel).
        for tool in (sy, ssh):
            timed_read(tool("true"), env)
        rows = {"bulk": {"switchyard": [], "ssh": []}, "small": {"switchyard": [], "ssh": []},
                "ttfb": {"switchyard": [], "ssh": []}}
        cpu = Cpu()
        watch = {"switchyard": (("service", service.pid), ("broker", broker.pid)),
                 "ssh": (("ssh master", master.pid),)}
        client = {"switchyard": "switchyard exec (CLI)", "ssh": "ssh -S (client)"}
        for r in range(args.rounds):
            for name, tool in (("switchyard", sy), ("ssh", ssh)):
                _, secs, got = timed_read(tool(bulk), env, cpu, client[name], watch[name])
                assert got == n, (name, got)
                rows["bulk"][name].append(n / secs / 1e6)
            for name, tool in (("switchyard", sy), ("ssh", ssh)):
                calls = []
                for _ in range(args.small):
                    calls.append(timed_read(tool("true"), env)[1])
                rows["small"][name].append(statistics.median(calls) * 1e3)
            for name, tool in (("switchyard", sy), ("ssh", ssh)):
                rows["ttfb"][name].append(timed_read(tool("echo x; sleep 0.3"), env)[0] * 1e3)
            print(f"round {r + 1}: bulk {rows['bulk']['switchyard'][-1]:.0f} vs "
                  f"{rows['bulk']['ssh'][-1]:.0f} MB/s", file=sys.stderr)
        peaks = {"service": peak_mib(service.pid), "broker": peak_mib(broker.pid)}
        med = {k: {t: statistics.median(v) for t, v in rows[k].items()} for k in rows}
        ratio = {
            "bulk": statistics.median(a / b for a, b in zip(rows["bulk"]["switchyard"],
                                                            rows["bulk"]["ssh"])),
            "small": statistics.median(b / a for a, b in zip(rows["small"]["switchyard"],
                                                             rows["small"]["ssh"])),
            "ttfb": statistics.median(b / a for a, b in zip(rows["ttfb"]["switchyard"],
                                                            rows["ttfb"]["ssh"])),
        }
        print(f"| measurement ({args.bulk_mb} MB bulk, {args.rounds} rounds) | switchyard exec --raw"
              f" | ssh -S ctl (ControlMaster) | switchyard vs ssh (median of rounds) |")
        print("| --- | --- | --- | --- |")
        print(f"| bulk `head -c {n} /dev/zero` | {med['bulk']['switchyard']:.0f} MB/s | "
              f"{med['bulk']['ssh']:.0f} MB/s | **{ratio['bulk']:.2f}×** |")
        print(f"| warm `true`, per call | {med['small']['switchyard']:.2f} ms | "
              f"{med['small']['ssh']:.2f} ms | **{ratio['small']:.2f}×** faster |")
        print(f"| time to first byte, `echo x; sleep 0.3` | {med['ttfb']['switchyard']:.2f} ms | "
              f"{med['ttfb']['ssh']:.2f} ms | **{ratio['ttfb']:.2f}×** faster |")
        print(f"| peak RSS after the run | service {peaks['service']:.0f} MiB, broker "
              f"{peaks['broker']:.0f} MiB | — | — |")
        moved_gb = n * args.rounds / 1e9
        per_gb = {stage: secs / moved_gb for stage, secs in cpu.seconds.items()}
        print()
        print("| bulk: CPU seconds per GB moved (all rounds) | stage |")
        print("| --- | --- |")
        for stage, secs in per_gb.items():
            print(f"| {stage} | {secs:.2f} s/GB |")
        out = ROOT / "target" / "bench-exec-vs-ssh.json"
        out.write_text(json.dumps({"rounds": rows, "median": med, "ratio": ratio,
                                   "peak_rss_mib": peaks, "cpu_s_per_gb": per_gb}, indent=1))
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()

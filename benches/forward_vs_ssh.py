#!/usr/bin/env python3
"""A forwarded port (`switchyard forward start`) against `ssh -L` through an
OpenSSH ControlMaster to the same host, side by side in one run.

    cargo build --release --bins
    python3 benches/forward_vs_ssh.py [--bulk-mb 500] [--rounds 5] [--setups 50]

Needs root (a private `sshd -D`, as the test account `switchyard-test` that
scripts/setup-test-host.sh creates; helpers from exec_vs_ssh.py). The
device is 127.0.0.1, reached by the service over SSH for nothing here but
listed with two extra forward ports, served by a separate process:

* bulk port: sends N bytes of zeros on accept, then closes;
* hello port: sends one byte on accept, then closes.

Switchyard: `switchyard service run` + `switchyard broker`, the named
service `lab` connected, one forward per port (one QUIC link). OpenSSH:
`ssh -M` with a ControlMaster socket, then `ssh -O forward -L` per port
(one SSH connection). In interleaved rounds (switchyard, ssh, ...):

* bulk: connect to the local port and read to the end (MB/s, connect to
  the last byte; median round; ratio per round);
* setup: connect to the local hello port and wait for its byte, `--setups`
  times (median per round): a new forwarded connection's set-up time on a
  warm link / master.

Results go to stdout as a Markdown table and to
target/bench-forward-vs-ssh.json.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from exec_vs_ssh import BIN, ROOT, USER, free_port, peak_mib, read_line, run, start_sshd  # noqa: E402

SERVER = r"""
import socket, sys, threading
n = int(sys.argv[1])
chunk = bytes(1 << 20)

def serve(sock, handler):
    while True:
        c, _ = sock.accept()
        threading.Thread(target=handler, args=(c,), daemon=True).start()

def bulk(c):
    with c:
        left = n
        while left:
            k = min(left, len(chunk))
            c.sendall(memoryview(chunk)[:k])
            left -= k

def hello(c):
    with c:
        c.sendall(b"x")

socks = []
for handler in (bulk, hello):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(512)
    socks.append((s, handler))
print(" ".join(str(s.getsockname()[1]) for s, _ in socks), flush=True)
for s, handler in socks[1:]:
    threading.Thread(target=serve, args=(s, handler), daemon=True).start()
serve(*socks[0])
"""


def bulk_read(port, n):
    """MB/s from connect to the last of `n` bytes."""
    buf = bytearray(1 << 20)
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        got = 0
        while True:
            k = s.recv_into(buf)
            if not k:
                break
            got += k
    secs = time.perf_counter() - start
    if got != n:
        raise SystemExit(f"bulk through {port}: {got} of {n} bytes")
    return n / secs / 1e6


def setup_time(port):
    """Seconds from connect to the hello port's byte."""
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        if s.recv(1) != b"x":
            raise SystemExit(f"no hello through {port}")
        return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bulk-mb", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--setups", type=int, default=50)
    args = ap.parse_args()
    n = args.bulk_mb * 1_000_000

    d = Path(tempfile.mkdtemp(prefix="bench-forward-"))
    sshd, port = start_sshd(d)
    procs = [sshd]
    try:
        server = subprocess.Popen([sys.executable, "-c", SERVER, str(n)],
                                  stdout=subprocess.PIPE, text=True)
        procs.append(server)
        bulk_port, hello_port = (int(p) for p in server.stdout.readline().split())

        env = dict(os.environ, XDG_CONFIG_HOME=str(d), XDG_STATE_HOME=str(d),
                   SWITCHYARD_SOCKET=str(d / "broker.sock"), RUST_LOG="warn")
        (d / "admin").write_text("bench-admin-password\n")
        (d / "alice").write_text("bench-alice-password\n")
        admin = ["service", "--db", str(d / "inv.db"), "--admin-password-file", str(d / "admin")]
        run(*admin, "init", env=env)
        run(*admin, "device", "add", "dev", "--host", "127.0.0.1", "--port", str(port),
            "--username", USER, "--key-file", str(d / "client_key"),
            "--forward-ports", f"{bulk_port},{hello_port}", env=env)
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
        sy = {}
        for name, dport in (("bulk", bulk_port), ("hello", hello_port)):
            out = run("forward", "start", "lab", "dev", str(dport), env=env).stdout
            sy[name] = int(out.split()[1].rsplit(":", 1)[1])

        ctl = d / "ctl"
        ssh_base = ["-S", str(ctl), "-p", str(port), "-i", str(d / "client_key"),
                    "-o", "StrictHostKeyChecking=no", "-o", f"UserKnownHostsFile={d}/known",
                    "-o", "BatchMode=yes", f"{USER}@127.0.0.1"]
        master = subprocess.Popen(["ssh", "-M", "-N", *ssh_base], stdin=subprocess.DEVNULL)
        procs.append(master)
        deadline = time.monotonic() + 10
        while not ctl.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        ssh = {}
        for name, dport in (("bulk", bulk_port), ("hello", hello_port)):
            lport = free_port()
            subprocess.run(["ssh", "-O", "forward", "-L", f"127.0.0.1:{lport}:127.0.0.1:{dport}",
                            *ssh_base], check=True, capture_output=True)
            ssh[name] = lport

        tools = (("switchyard", sy), ("ssh", ssh))
        # Warm both (first stream / first channel).
        for _, ports in tools:
            setup_time(ports["hello"])
        rows = {"bulk": {"switchyard": [], "ssh": []}, "setup": {"switchyard": [], "ssh": []}}
        for r in range(args.rounds):
            for name, ports in tools:
                rows["bulk"][name].append(bulk_read(ports["bulk"], n))
            for name, ports in tools:
                times = [setup_time(ports["hello"]) for _ in range(args.setups)]
                rows["setup"][name].append(statistics.median(times) * 1e3)
            print(f"round {r + 1}: bulk {rows['bulk']['switchyard'][-1]:.0f} vs "
                  f"{rows['bulk']['ssh'][-1]:.0f} MB/s, setup "
                  f"{rows['setup']['switchyard'][-1]:.3f} vs {rows['setup']['ssh'][-1]:.3f} ms",
                  file=sys.stderr)
        peaks = {"service": peak_mib(service.pid), "broker": peak_mib(broker.pid)}
        med = {k: {t: statistics.median(v) for t, v in rows[k].items()} for k in rows}
        ratio = {
            # Throughput: switchyard / ssh (higher is better; target >= 0.9).
            "bulk": statistics.median(a / b for a, b in zip(rows["bulk"]["switchyard"],
                                                            rows["bulk"]["ssh"])),
            # Set-up time: switchyard / ssh (lower is better; target <= 1).
            "setup": statistics.median(a / b for a, b in zip(rows["setup"]["switchyard"],
                                                             rows["setup"]["ssh"])),
        }
        print(f"| measurement ({args.bulk_mb} MB bulk, {args.setups} set-ups, {args.rounds} rounds)"
              f" | switchyard forward | ssh -L (ControlMaster) | switchyard vs ssh |")
        print("| --- | --- | --- | --- |")
        print(f"| bulk download | {med['bulk']['switchyard']:.0f} MB/s | "
              f"{med['bulk']['ssh']:.0f} MB/s | **{ratio['bulk']:.2f}×** (target ≥ 0.9×) |")
        print(f"| new connection to first byte | {med['setup']['switchyard']:.3f} ms | "
              f"{med['setup']['ssh']:.3f} ms | **{ratio['setup']:.2f}×** the time (target ≤ 1×) |")
        print(f"| peak RSS (VmHWM) | service {peaks['service']:.0f} MiB, "
              f"broker {peaks['broker']:.0f} MiB | — | — |")
        out = ROOT / "target" / "bench-forward-vs-ssh.json"
        out.write_text(json.dumps({"rounds": rows, "median": med, "ratio": ratio,
                                   "peak_mib": peaks, "load": os.getloadavg()}, indent=2))
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()

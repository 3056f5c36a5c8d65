#!/usr/bin/env python3
"""A forwarded port (`switchyard forward start`) against `ssh -L` through an
OpenSSH ControlMaster to the same host, side by side in one run.

    cargo build --release --bins
    python3 benches/forward_vs_ssh.py [--bulk-mb 500] [--rounds 5] [--setups 50]

Needs root (a private `sshd -D`, as the test account `switchyard-test` that
scripts/setup-test-host.sh creates; helpers from _common.py). The
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
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (ROOT, USER, Switchyard, bench_dir, free_port, medians,  # noqa: E402
                     peak_mib, ratio, run, start_master, start_sshd)

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

    with bench_dir("bench-forward-") as (d, procs):
        sshd, port = start_sshd(d)
        procs.append(sshd)
        server = subprocess.Popen([sys.executable, "-c", SERVER, str(n)],
                                  stdout=subprocess.PIPE, text=True)
        procs.append(server)
        bulk_port, hello_port = (int(p) for p in server.stdout.readline().split())

        lab = Switchyard(d, port, procs, ("--forward-ports", f"{bulk_port},{hello_port}"))
        env = lab.env
        service, broker = lab.service, lab.broker
        sy = {}
        for name, dport in (("bulk", bulk_port), ("hello", hello_port)):
            out = run("forward", "start", "lab", "dev", str(dport), env=env).stdout
            sy[name] = int(out.split()[1].rsplit(":", 1)[1])

        opts, _ = start_master(d, port, procs)
        ssh_base = ["-p", str(port), *opts, f"{USER}@127.0.0.1"]
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
        med = medians(rows)
        ratios = {
            # Throughput: switchyard / ssh (higher is better; target >= 0.9).
            "bulk": ratio(rows["bulk"], "switchyard", "ssh"),
            # Set-up time: switchyard / ssh (lower is better; target <= 1).
            "setup": ratio(rows["setup"], "switchyard", "ssh"),
        }
        print(f"| measurement ({args.bulk_mb} MB bulk, {args.setups} set-ups, {args.rounds} rounds)"
              f" | switchyard forward | ssh -L (ControlMaster) | switchyard vs ssh |")
        print("| --- | --- | --- | --- |")
        print(f"| bulk download | {med['bulk']['switchyard']:.0f} MB/s | "
              f"{med['bulk']['ssh']:.0f} MB/s | **{ratios['bulk']:.2f}×** (target ≥ 0.9×) |")
        print(f"| new connection to first byte | {med['setup']['switchyard']:.3f} ms | "
              f"{med['setup']['ssh']:.3f} ms | **{ratios['setup']:.2f}×** the time (target ≤ 1×) |")
        print(f"| peak RSS (VmHWM) | service {peaks['service']:.0f} MiB, "
              f"broker {peaks['broker']:.0f} MiB | — | — |")
        out = ROOT / "target" / "bench-forward-vs-ssh.json"
        out.write_text(json.dumps({"rounds": rows, "median": med, "ratio": ratios,
                                   "peak_mib": peaks, "load": os.getloadavg()}, indent=2))


if __name__ == "__main__":
    main()

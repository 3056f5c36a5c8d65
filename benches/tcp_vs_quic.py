#!/usr/bin/env python3
"""The TCP transport (TLS 1.3 + HTTP/2, `--rpc-url`) beside QUIC and OpenSSH,
in one run, release build.

    cargo build --release --bins
    python3 benches/tcp_vs_quic.py [--bulk-mb 200] [--rounds 5] [--small 20] [--fallback 5]

Needs root (as benches/exec_vs_ssh.py, whose helpers it uses: a private
`sshd -D` as the test account of scripts/setup-test-host.sh; `ip netns` and
`nft` for the fallback rows).

* Bulk and warm exec: one `switchyard service run` (its device is that
  sshd) and one `switchyard broker` with two named services on it: `lab`
  over QUIC (`--host`) and `lab-tcp` over TCP (`--rpc-url`), checked in
  `status --json`; and `ssh -M` with a ControlMaster. In interleaved rounds
  (QUIC, TCP, ssh, QUIC, ...): bulk `head -c N /dev/zero` read to the end
  by this script (MB/s, spawn to last byte), then `true` `--small` times
  (per-call median). Figures are the median round; ratios are per round,
  then the median.
* Fallback: a network namespace of its own (loopback up) holding a service
  (one simulated device) and, per round, a fresh broker. Rounds alternate
  UDP dropped by nftables / UDP open; each times `switchyard connect direct
  --host ... --tcp-port ...` plus the first `exec` from the first try to
  the exec's end, and checks the link's carrier (`tcp` when blocked).

Results: Markdown tables on stdout, target/bench-tcp-vs-quic.json.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import BIN, ROOT, USER, read_line, run, start_sshd
from exec_vs_ssh import timed_read


def status_links(env):
    out = run("status", "--json", env=env).stdout
    return {link["target"]: link for link in json.loads(out)["links"]}


def start_service(admin, env, prefix=()):
    service = subprocess.Popen([*prefix, BIN, *admin, "run", "--listen", "127.0.0.1:0"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True)
    ready = json.loads(read_line(service.stdout, "rpc_addr"))
    return service, ready["rpc_addr"], ready["tcp_addr"]


def start_broker(env, prefix=()):
    broker = subprocess.Popen([*prefix, BIN, "broker"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    read_line(broker.stderr, "listening on")
    return broker


def stop(procs):
    for p in reversed(procs):
        p.terminate()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()


def bulk_and_small(args, d):
    """Rows: bulk MB/s and warm `true` ms per tool, per round."""
    n = args.bulk_mb * 1_000_000
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
        service, rpc, tcp = start_service(admin, env)
        procs.append(service)
        broker = start_broker(env)
        procs.append(broker)
        host, rport = rpc.rsplit(":", 1)
        run("connect", "direct", "lab", "--host", host, "--port", rport, "--user", "alice",
            "--password-file", str(d / "alice"), env=env)
        run("connect", "direct", "lab-tcp", "--rpc-url", f"https://{tcp}/rpc", "--user",
            "alice", "--password-file", str(d / "alice"), env=env)

        ctl = d / "ctl"
        ssh_base = ["ssh", "-S", str(ctl), "-p", str(port), "-i", str(d / "client_key"),
                    "-o", "StrictHostKeyChecking=no", "-o", f"UserKnownHostsFile={d}/known",
                    "-o", "BatchMode=yes", f"{USER}@127.0.0.1"]
        master = subprocess.Popen(["ssh", "-M", "-N", *ssh_base[1:]], stdin=subprocess.DEVNULL)
        procs.append(master)
        deadline = time.monotonic() + 10
        while not ctl.exists() and time.monotonic() < deadline:
            time.sleep(0.05)

        tools = {
            "quic": lambda cmd: [BIN, "exec", "lab", "dev", "-c", cmd, "--raw"],
            "tcp": lambda cmd: [BIN, "exec", "lab-tcp", "dev", "-c", cmd, "--raw"],
            "ssh": lambda cmd: [*ssh_base, cmd],
        }
        for tool in tools.values():
            timed_read(tool("true"), env)
        links = status_links(env)
        carriers = {links[rpc]["carrier"], links[f"https://{tcp}/rpc"]["carrier"]}
        assert carriers == {"quic", "tcp"}, links
        bulk = f"head -c {n} /dev/zero"
        rows = {"bulk": {t: [] for t in tools}, "small": {t: [] for t in tools}}
        for r in range(args.rounds):
            for name, tool in tools.items():
                _, secs, got = timed_read(tool(bulk), env)
                assert got == n, (name, got)
                rows["bulk"][name].append(n / secs / 1e6)
            for name, tool in tools.items():
                calls = [timed_read(tool("true"), env)[1] for _ in range(args.small)]
                rows["small"][name].append(statistics.median(calls) * 1e3)
            print(f"round {r + 1}: bulk " + ", ".join(
                f"{t} {rows['bulk'][t][-1]:.0f}" for t in tools) + " MB/s", file=sys.stderr)
        # Both links still on their own transport, one connection each.
        links = status_links(env)
        for target in (rpc, f"https://{tcp}/rpc"):
            assert links[target]["connects"] == 1, links[target]
        return rows
    finally:
        stop(procs)


NFT_TABLE = "sy_bench_udp"


def fallback(args, d):
    """Seconds from the first try to the first exec's end, UDP dropped vs
    open, alternating; the carrier each round ended on."""
    ns = f"sy-bench-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    inside = ["ip", "netns", "exec", ns]
    procs = []
    try:
        subprocess.run([*inside, "ip", "link", "set", "lo", "up"], check=True)
        base = dict(os.environ, RUST_LOG="warn")
        (d / "admin").write_text("bench-admin-password\n")
        (d / "alice").write_text("bench-alice-password\n")
        admin = ["service", "--db", str(d / "fb.db"), "--admin-password-file", str(d / "admin")]
        senv = dict(base, XDG_CONFIG_HOME=str(d / "svc"), XDG_STATE_HOME=str(d / "svc"))
        run(*admin, "init", env=senv)
        run(*admin, "device", "add", "dev", "--driver", "simulator", env=senv)
        run(*admin, "user", "add", "alice", "--password-file", str(d / "alice"), env=senv)
        service, rpc, tcp = start_service(admin, senv, inside)
        procs.append(service)
        host, port = rpc.rsplit(":", 1)
        tcp_port = tcp.rsplit(":", 1)[1]
        rows = {"blocked": [], "open": []}
        carriers = {"blocked": set(), "open": set()}
        for r in range(2 * args.fallback):
            kind = "blocked" if r % 2 == 0 else "open"
            if kind == "blocked":
                for rule in (["add", "table", "inet", NFT_TABLE],
                             ["add", "chain", "inet", NFT_TABLE, "out",
                              "{ type filter hook output priority 0 ; }"],
                             ["add", "rule", "inet", NFT_TABLE, "out", "meta", "l4proto", "udp",
                              "drop"]):
                    subprocess.run([*inside, "nft", *rule], check=True)
            bdir = d / f"broker-{r}"
            bdir.mkdir()
            env = dict(base, XDG_CONFIG_HOME=str(bdir), XDG_STATE_HOME=str(bdir),
                       SWITCHYARD_SOCKET=str(bdir / "broker.sock"))
            broker = start_broker(env, inside)
            try:
                start = time.perf_counter()
                run("connect", "direct", "lab", "--host", host, "--port", port, "--tcp-port",
                    tcp_port, "--user", "alice", "--password-file", str(d / "alice"), env=env)
                out = run("exec", "lab", "dev", "-c", "show clock", "--raw", env=env).stdout
                rows[kind].append(time.perf_counter() - start)
                assert out, "no output"
                carriers[kind].add(status_links(env)[rpc]["carrier"])
            finally:
                stop([broker])
                if kind == "blocked":
                    subprocess.run([*inside, "nft", "delete", "table", "inet", NFT_TABLE],
                                   check=True)
            print(f"fallback round {r + 1} ({kind}): {rows[kind][-1] * 1e3:.0f} ms",
                  file=sys.stderr)
        assert carriers == {"blocked": {"tcp"}, "open": {"quic"}}, carriers
        return rows
    finally:
        stop(procs)
        subprocess.run(["ip", "netns", "delete", ns], check=False)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bulk-mb", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--small", type=int, default=20)
    ap.add_argument("--fallback", type=int, default=5, help="rounds each, blocked and open")
    args = ap.parse_args()
    d = Path(tempfile.mkdtemp(prefix="bench-tcp-"))
    os.chmod(d, 0o755)  # sshd reads authorized_keys below it as the test user
    try:
        for sub in ("bulk", "fb"):
            (d / sub).mkdir()
        rows = bulk_and_small(args, d / "bulk")
        fb = fallback(args, d / "fb")
    finally:
        shutil.rmtree(d, ignore_errors=True)
    med = {k: {t: statistics.median(v) for t, v in rows[k].items()} for k in rows}

    def per_round(kind, a, b, faster=False):
        pairs = zip(rows[kind][a], rows[kind][b])
        return statistics.median((y / x) if faster else (x / y) for x, y in pairs)

    ratio = {
        "bulk_tcp_vs_quic": per_round("bulk", "tcp", "quic"),
        "bulk_tcp_vs_ssh": per_round("bulk", "tcp", "ssh"),
        "bulk_quic_vs_ssh": per_round("bulk", "quic", "ssh"),
        "small_tcp_vs_quic": per_round("small", "tcp", "quic"),
    }
    print(f"| measurement ({args.bulk_mb} MB bulk, {args.rounds} rounds) | QUIC link | TCP link "
          f"| ssh -S ctl | TCP vs QUIC | TCP vs ssh |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(f"| bulk `exec --raw`, MB/s | {med['bulk']['quic']:.0f} | {med['bulk']['tcp']:.0f} | "
          f"{med['bulk']['ssh']:.0f} | {ratio['bulk_tcp_vs_quic']:.2f}× | "
          f"**{ratio['bulk_tcp_vs_ssh']:.2f}×** (QUIC {ratio['bulk_quic_vs_ssh']:.2f}×) |")
    print(f"| warm `true`, ms per call | {med['small']['quic']:.2f} | "
          f"{med['small']['tcp']:.2f} | {med['small']['ssh']:.2f} | "
          f"{ratio['small_tcp_vs_quic']:.2f}× the time | — |")
    fbm = {k: statistics.median(v) for k, v in fb.items()}
    print()
    print(f"| first try to first exec's end ({args.fallback} rounds each) | median | max |")
    print("| --- | --- | --- |")
    for kind, label in (("blocked", "UDP dropped (falls back to TCP)"), ("open", "UDP open (QUIC)")):
        print(f"| {label} | {fbm[kind] * 1e3:.0f} ms | {max(fb[kind]) * 1e3:.0f} ms |")
    out = ROOT / "target" / "bench-tcp-vs-quic.json"
    out.write_text(json.dumps({"rounds": rows, "median": med, "ratio": ratio,
                               "fallback_s": fb, "fallback_median_s": fbm}, indent=1))


if __name__ == "__main__":
    main()

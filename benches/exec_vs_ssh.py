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
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (BIN, ROOT, USER, Switchyard, bench_dir, cpu_seconds,  # noqa: E402
                     medians, peak_mib, ratio, start_master, start_sshd)


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

    with bench_dir("bench-exec-") as (d, procs):
        sshd, port = start_sshd(d)
        procs.append(sshd)
        lab = Switchyard(d, port, procs)
        env = lab.env
        service, broker = lab.service, lab.broker
        opts, master = start_master(d, port, procs)
        ssh_base = ["ssh", "-p", str(port), *opts, f"{USER}@127.0.0.1"]

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
        med = medians(rows)
        ratios = {
            "bulk": ratio(rows["bulk"], "switchyard", "ssh"),
            "small": ratio(rows["small"], "switchyard", "ssh", invert=True),
            "ttfb": ratio(rows["ttfb"], "switchyard", "ssh", invert=True),
        }
        print(f"| measurement ({args.bulk_mb} MB bulk, {args.rounds} rounds) | switchyard exec --raw"
              f" | ssh -S ctl (ControlMaster) | switchyard vs ssh (median of rounds) |")
        print("| --- | --- | --- | --- |")
        print(f"| bulk `head -c {n} /dev/zero` | {med['bulk']['switchyard']:.0f} MB/s | "
              f"{med['bulk']['ssh']:.0f} MB/s | **{ratios['bulk']:.2f}×** |")
        print(f"| warm `true`, per call | {med['small']['switchyard']:.2f} ms | "
              f"{med['small']['ssh']:.2f} ms | **{ratios['small']:.2f}×** faster |")
        print(f"| time to first byte, `echo x; sleep 0.3` | {med['ttfb']['switchyard']:.2f} ms | "
              f"{med['ttfb']['ssh']:.2f} ms | **{ratios['ttfb']:.2f}×** faster |")
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
        out.write_text(json.dumps({"rounds": rows, "median": med, "ratio": ratios,
                                   "peak_rss_mib": peaks, "cpu_s_per_gb": per_gb}, indent=1))


if __name__ == "__main__":
    main()

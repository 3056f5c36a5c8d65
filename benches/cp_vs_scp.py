#!/usr/bin/env python3
"""`switchyard cp` against `scp` through an OpenSSH ControlMaster, side by
side in one run, on one stock `sshd` on loopback (key authentication, its
sftp-server as the `sftp` subsystem).

    cargo build --release --bins
    python3 benches/cp_vs_scp.py [--mb 100] [--rounds 5]

Needs root (a private `sshd -D` as the test account `switchyard-test` that
scripts/setup-test-host.sh creates). Starts a real `switchyard service run`
(the device is that sshd) and `switchyard broker`, connects the named
service `lab`, opens `ssh -M` with a ControlMaster socket; then, in
interleaved rounds (switchyard, scp, switchyard, scp, ...), copies a
random file of `--mb` MB down from the device and up to it, each a whole
process from spawn to exit, and checks every copy's SHA-256. `scp` is
OpenSSH 9's default (SFTP protocol) riding the master connection. A third
tool in the same rounds: that `scp` through the broker's SSH proxy
(`switchyard ssh-proxy start`; a new SSH connection to the proxy per copy,
the device's SFTP subsystem relayed over the link). MB/s are
per round; the table shows the median round and the median of the
per-round ratios (second table: the proxy against the ControlMaster).
Results also in target/bench-cp-vs-scp.json.

`--base-bin PATH` adds a fourth tool to the same rounds: `scp` through the
SSH proxy of another build (its own service and broker, e.g. main's
release binary), for an interleaved before/after of the proxy path (third
table).
"""

import argparse
import hashlib
import json
import shutil
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (ROOT, USER, BIN, Switchyard, bench_dir, medians, ratio,  # noqa: E402
                     start_master, start_sshd)


def sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def timed(argv, env):
    start = time.perf_counter()
    subprocess.run(argv, check=True, env=env, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--base-bin", help="another build's switchyard: its SSH proxy in the rounds")
    args = ap.parse_args()
    n = args.mb * 1_000_000

    with bench_dir("bench-cp-") as (d, procs):
        sshd, port = start_sshd(d, sftp=True)
        procs.append(sshd)
        scratch = d / "scratch"
        scratch.mkdir()
        os.chmod(scratch, 0o777)
        local = d / "local"
        local.mkdir()
        source = local / "source.bin"
        with open(source, "wb") as f:
            for _ in range(args.mb):
                f.write(os.urandom(1_000_000))
        want = sha(source)
        remote_src = scratch / "remote.bin"
        shutil.copy(source, remote_src)
        os.chmod(remote_src, 0o644)

        sy = Switchyard(d, port, procs)
        env = sy.env
        opts, _ = start_master(d, port, procs)
        remote = f"{USER}@127.0.0.1"
        # The broker's SSH proxy, logging in with the same client key.
        proxy_port = sy.ssh_proxy(d / "authorized_keys")
        proxy_opts = ["-o", "StrictHostKeyChecking=no", "-o", f"UserKnownHostsFile={d}/known-proxy",
                      "-o", "BatchMode=yes", "-i", str(d / "client_key")]
        proxied = "dev@lab@127.0.0.1"

        def sy_down(dst):
            return [BIN, "cp", "lab", "-q", f"dev:{remote_src}", str(dst)]

        def sy_up(dst):
            return [BIN, "cp", "lab", "-q", str(source), f"dev:{dst}"]

        def scp_down(dst):
            return ["scp", "-q", "-P", str(port), *opts, f"{remote}:{remote_src}", str(dst)]

        def scp_up(dst):
            return ["scp", "-q", "-P", str(port), *opts, str(source), f"{remote}:{dst}"]

        def proxy_tool(port):
            def down(dst):
                return ["scp", "-q", "-P", port, *proxy_opts, f"{proxied}:{remote_src}", str(dst)]

            def up(dst):
                return ["scp", "-q", "-P", port, *proxy_opts, str(source), f"{proxied}:{dst}"]
            return down, up

        tools = {"switchyard": (sy_down, sy_up), "scp": (scp_down, scp_up),
                 "scp via ssh-proxy": proxy_tool(proxy_port)}
        if args.base_bin:
            base = Switchyard(d, port, procs, bin=args.base_bin, state=d / "base")
            tools["scp via base ssh-proxy"] = proxy_tool(base.ssh_proxy(d / "authorized_keys"))
        # Warm each (first connection, first channel).
        for name, (down, _) in tools.items():
            timed(down(local / f"warm-{name}"), env)
        rows = {k: {t: [] for t in tools} for k in ("download", "upload")}
        for r in range(args.rounds):
            for name, (down, up) in tools.items():
                dst = local / f"down-{name}.bin"
                secs = timed(down(dst), env)
                assert sha(dst) == want, (name, "download")
                dst.unlink()
                rows["download"][name].append(n / secs / 1e6)
                rdst = scratch / f"up-{name.replace(' ', '-')}.bin"
                secs = timed(up(rdst), env)
                assert sha(rdst) == want, (name, "upload")
                rdst.unlink()
                rows["upload"][name].append(n / secs / 1e6)
            print(f"round {r + 1}: down {rows['download']['switchyard'][-1]:.0f} vs "
                  f"{rows['download']['scp'][-1]:.0f}, up {rows['upload']['switchyard'][-1]:.0f}"
                  f" vs {rows['upload']['scp'][-1]:.0f} MB/s; through the proxy down "
                  f"{rows['download']['scp via ssh-proxy'][-1]:.0f}, up "
                  f"{rows['upload']['scp via ssh-proxy'][-1]:.0f} MB/s"
                  + (f"; base proxy down {rows['download']['scp via base ssh-proxy'][-1]:.0f}, up "
                     f"{rows['upload']['scp via base ssh-proxy'][-1]:.0f} MB/s"
                     if args.base_bin else ""), file=sys.stderr)
        med = medians(rows)
        ratios = {k: ratio(rows[k], "switchyard", "scp") for k in rows}
        proxy_ratios = {k: ratio(rows[k], "scp via ssh-proxy", "scp") for k in rows}
        print(f"| {args.mb} MB file, {args.rounds} rounds | switchyard cp | scp via ControlMaster "
              f"| switchyard vs scp (median of rounds) |")
        print("| --- | --- | --- | --- |")
        for k in rows:
            print(f"| {k} | {med[k]['switchyard']:.0f} MB/s | {med[k]['scp']:.0f} MB/s | "
                  f"**{ratios[k]:.2f}×** |")
        print()
        print(f"| {args.mb} MB file, {args.rounds} rounds | scp through the SSH proxy | scp via "
              f"ControlMaster | proxy vs ControlMaster (median of rounds) |")
        print("| --- | --- | --- | --- |")
        for k in rows:
            print(f"| {k} | {med[k]['scp via ssh-proxy']:.0f} MB/s | {med[k]['scp']:.0f} MB/s | "
                  f"**{proxy_ratios[k]:.2f}×** |")
        base_ratios = {}
        if args.base_bin:
            base_ratios = {k: ratio(rows[k], "scp via base ssh-proxy", "scp") for k in rows}
            print()
            print(f"| {args.mb} MB file, {args.rounds} rounds | base proxy | this proxy | "
                  f"scp via ControlMaster | base vs ControlMaster | this vs ControlMaster |")
            print("| --- | --- | --- | --- | --- | --- |")
            for k in rows:
                print(f"| {k} | {med[k]['scp via base ssh-proxy']:.0f} MB/s | "
                      f"{med[k]['scp via ssh-proxy']:.0f} MB/s | {med[k]['scp']:.0f} MB/s | "
                      f"{base_ratios[k]:.2f}× | **{proxy_ratios[k]:.2f}×** |")
        out = ROOT / "target" / "bench-cp-vs-scp.json"
        out.write_text(json.dumps({"rounds": rows, "median": med, "ratio": ratios,
                                   "proxy_ratio": proxy_ratios, "base_proxy_ratio": base_ratios,
                                   "load": os.getloadavg()}, indent=1))


if __name__ == "__main__":
    main()

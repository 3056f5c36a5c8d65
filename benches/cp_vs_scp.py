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
OpenSSH 9's default (SFTP protocol) riding the master connection. MB/s are
per round; the table shows the median round and the median of the
per-round ratios. Results also in target/bench-cp-vs-scp.json.
"""

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from exec_vs_ssh import BIN, ROOT, USER, keygen, free_port, read_line, run  # noqa: E402


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
        f"StrictModes no\nMaxSessions 20\nLogLevel ERROR\n"
        f"Subsystem sftp /usr/lib/openssh/sftp-server\n")
    os.makedirs("/run/sshd", exist_ok=True)
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-f", str(d / "sshd_config")])
    import socket
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    raise SystemExit("sshd did not start")


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
    args = ap.parse_args()
    n = args.mb * 1_000_000

    d = Path(tempfile.mkdtemp(prefix="bench-cp-"))
    sshd, port = start_sshd(d)
    procs = [sshd]
    try:
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
        opts = ["-o", f"ControlPath={ctl}", "-o", "StrictHostKeyChecking=no",
                "-o", f"UserKnownHostsFile={d}/known", "-o", "BatchMode=yes",
                "-i", str(d / "client_key")]
        master = subprocess.Popen(["ssh", "-M", "-N", "-p", str(port), *opts,
                                   f"{USER}@127.0.0.1"], stdin=subprocess.DEVNULL)
        procs.append(master)
        deadline = time.monotonic() + 10
        while not ctl.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        remote = f"{USER}@127.0.0.1"

        def sy_down(dst):
            return [BIN, "cp", "lab", "-q", f"dev:{remote_src}", str(dst)]

        def sy_up(dst):
            return [BIN, "cp", "lab", "-q", str(source), f"dev:{dst}"]

        def scp_down(dst):
            return ["scp", "-q", "-P", str(port), *opts, f"{remote}:{remote_src}", str(dst)]

        def scp_up(dst):
            return ["scp", "-q", "-P", str(port), *opts, str(source), f"{remote}:{dst}"]

        tools = {"switchyard": (sy_down, sy_up), "scp": (scp_down, scp_up)}
        # Warm both (first connection, first channel).
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
                rdst = scratch / f"up-{name}.bin"
                secs = timed(up(rdst), env)
                assert sha(rdst) == want, (name, "upload")
                rdst.unlink()
                rows["upload"][name].append(n / secs / 1e6)
            print(f"round {r + 1}: down {rows['download']['switchyard'][-1]:.0f} vs "
                  f"{rows['download']['scp'][-1]:.0f}, up {rows['upload']['switchyard'][-1]:.0f}"
                  f" vs {rows['upload']['scp'][-1]:.0f} MB/s", file=sys.stderr)
        med = {k: {t: statistics.median(v) for t, v in rows[k].items()} for k in rows}
        ratio = {k: statistics.median(a / b for a, b in zip(rows[k]["switchyard"],
                                                            rows[k]["scp"])) for k in rows}
        print(f"| {args.mb} MB file, {args.rounds} rounds | switchyard cp | scp via ControlMaster "
              f"| switchyard vs scp (median of rounds) |")
        print("| --- | --- | --- | --- |")
        for k in rows:
            print(f"| {k} | {med[k]['switchyard']:.0f} MB/s | {med[k]['scp']:.0f} MB/s | "
                  f"**{ratio[k]:.2f}×** |")
        out = ROOT / "target" / "bench-cp-vs-scp.json"
        out.write_text(json.dumps({"rounds": rows, "median": med, "ratio": ratio}, indent=1))
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

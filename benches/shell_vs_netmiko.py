"""Warm exec latency on one simulated device, one run, side by side:

* Switchyard, shell session: `sim-001` (IOS-XE: a warm shell, prompt-delimited),
* Switchyard, exec channel: the same device as `sim-001-exec` (`--session exec`),
  both through `switchyard demo`'s broker and integrated service with the SDK,
* netmiko `send_command` on a connected `cisco_ios` session (the anchor).

Rounds interleave the three so drift hits all alike. Usage (release binaries,
the test venv with the SDK and netmiko):

    cargo build --release --bins
    SWITCHYARD_BIN=target/release/switchyard target/python-venv/bin/python \\
        benches/shell_vs_netmiko.py [--rounds 200]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from netmiko import ConnectHandler
from switchyard.sync import Client

ROOT = Path(__file__).resolve().parents[1]
BIN = os.environ.get("SWITCHYARD_BIN", str(ROOT / "target" / "release" / "switchyard"))
COMMAND = "show clock"


def start_demo(home: Path) -> "tuple[subprocess.Popen[str], dict[str, str]]":
    env = dict(os.environ, XDG_CONFIG_HOME=str(home), XDG_STATE_HOME=str(home))
    env.pop("SWITCHYARD_SOCKET", None)
    proc = subprocess.Popen([BIN, "demo", "--devices", "1"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env)
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    for line in proc.stdout:
        if "broker socket:" in line:
            socket_path = line.split(":", 1)[1].strip()
            db = str(Path(socket_path).parent / "inventory.db")
            return proc, dict(env, SWITCHYARD_SOCKET=socket_path, SWITCHYARD_DB=db,
                              SWITCHYARD_ADMIN_PASSWORD="switchyard-demo")
        if time.monotonic() > deadline:
            break
    raise SystemExit("the demo did not start")


def add_exec_twin(env: "dict[str, str]", home: Path) -> int:
    """Adds sim-001 again as an exec-channel device; returns its port."""
    admin = home / "admin-pw"
    admin.write_text(env["SWITCHYARD_ADMIN_PASSWORD"] + "\n")
    pw = home / "device-pw"
    pw.write_text("admin\n")
    base = [BIN, "service", "--db", env["SWITCHYARD_DB"], "--admin-password-file", str(admin)]
    listing = subprocess.run(base + ["device", "list", "--json"], env=env, check=True,
                             capture_output=True, text=True).stdout
    sim = next(d for d in json.loads(listing) if d["name"] == "sim-001")
    subprocess.run(base + ["device", "add", "sim-001-exec", "--host", sim["host"], "--port",
                           str(sim["port"]), "--device-type", "IOS-XE", "--session", "exec",
                           "--username", "admin", "--password-file", str(pw)],
                   env=env, check=True, capture_output=True)
    return int(sim["port"])


def summary(name: str, samples: "list[float]", anchor: float) -> str:
    ms = sorted(s * 1000 for s in samples)
    p50 = statistics.median(ms)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return f"| {name} | {p50:.2f} | {p99:.2f} | {p50 / anchor:.2f}x |"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        demo, env = start_demo(home)
        try:
            port = add_exec_twin(env, home)
            os.environ.update(env)
            with Client.create() as client:
                service = client.service_integrated(
                    admin_password=env["SWITCHYARD_ADMIN_PASSWORD"], db=env["SWITCHYARD_DB"])
                shell_dev = service.inventory["sim-001"]
                exec_dev = service.inventory["sim-001-exec"]
                nm = ConnectHandler(device_type="cisco_ios", host="127.0.0.1", port=port,
                                    username="admin", password="admin")
                expected = nm.send_command(COMMAND) + "\n"
                runs: "dict[str, list[float]]" = {"shell": [], "exec": [], "netmiko": []}

                def sy(device: object) -> float:
                    t = time.perf_counter()
                    result = device.exec(COMMAND).wait().result  # type: ignore[attr-defined]
                    took = time.perf_counter() - t
                    (outcome,) = result.values()
                    assert outcome.data == expected, outcome.data
                    return took

                def netmiko_once() -> float:
                    t = time.perf_counter()
                    out = nm.send_command(COMMAND)
                    took = time.perf_counter() - t
                    assert out + "\n" == expected
                    return took

                for _ in range(5):  # warm all three
                    sy(shell_dev), sy(exec_dev), netmiko_once()
                for _ in range(args.rounds):
                    runs["shell"].append(sy(shell_dev))
                    runs["exec"].append(sy(exec_dev))
                    runs["netmiko"].append(netmiko_once())
                nm.disconnect()
        finally:
            demo.terminate()
            demo.wait(timeout=30)
    anchor = statistics.median(runs["netmiko"]) * 1000
    print(f"warm `{COMMAND}`, {args.rounds} interleaved rounds, ms")
    print("| path | p50 | p99 | p50 vs netmiko |")
    print("|---|---|---|---|")
    print(summary("Switchyard exec, shell session (SDK → broker → SSH shell)", runs["shell"], anchor))
    print(summary("Switchyard exec, exec channel (SDK → broker → SSH exec)", runs["exec"], anchor))
    print(summary("netmiko send_command, connected session", runs["netmiko"], anchor))


if __name__ == "__main__":
    sys.exit(main())

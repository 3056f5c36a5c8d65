"""netmiko as an oracle (issue 15): for the simulator's kinds of device —
plain (exec requests allowed, privileged at login) and "real gear" (exec
refused, a pager left on, user mode with an enable secret, a banner) —
netmiko's `send_command` on a connected `cisco_ios` session and
Switchyard's exec (shell session and exec channel) give the same bytes.
netmiko drops the line end before the prompt; Switchyard keeps the
device's output whole, so each Switchyard output is netmiko's plus "\\n"."""

import json
import os
import subprocess

import netmiko
import pytest

from conftest import BIN, read_line, run

ADMIN = "oracle-admin-password"
ENABLE = "oracle-enable-secret"
COMMANDS = ["show version", "show running-config", "show ip interface brief",
            "show interfaces", "show clock", "show bogus"]


def start_sim(tmp_path, prefix, *extra):
    proc = subprocess.Popen([BIN, "sim", "--count", "1", "--prefix", prefix, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = json.loads(read_line(proc, proc.stdout, '"port"'))
    return proc, line["port"]


@pytest.fixture(scope="module")
def sims(tmp_path_factory):
    d = tmp_path_factory.mktemp("oracle")
    (d / "enable").write_text(ENABLE + "\n")
    plain, plain_port = start_sim(d, "plain")
    gear, gear_port = start_sim(d, "gear", "--refuse-exec", "--terminal-length", "6",
                                "--enable-password-file", str(d / "enable"),
                                "--banner", "Authorised access only")
    try:
        yield d, plain_port, gear_port
    finally:
        for p in (plain, gear):
            p.terminate()
            p.wait(timeout=30)


def switchyard_outputs(d, plain_port, gear_port):
    (d / "admin").write_text(ADMIN + "\n")
    (d / "pw").write_text("admin\n")
    admin = ["--db", str(d / "inv.db"), "--admin-password-file", str(d / "admin")]
    run("service", *admin, "init")
    common = ["--host", "127.0.0.1", "--username", "admin", "--password-file", str(d / "pw"),
              "--device-type", "IOS"]
    run("service", *admin, "device", "add", "plain-shell", "--port", str(plain_port), *common)
    run("service", *admin, "device", "add", "plain-exec", "--port", str(plain_port), *common,
        "--session", "exec")
    run("service", *admin, "device", "add", "gear", "--port", str(gear_port), *common,
        "--enable-password-file", str(d / "enable"))
    args = [BIN, "service", *admin, "exec", "plain-shell", "plain-exec", "gear", "--json"]
    for c in COMMANDS:
        args += ["-c", c]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, XDG_CONFIG_HOME=str(d)))
    reports = {}
    for line in out.stdout.splitlines():
        r = json.loads(line)
        if "device" not in r:  # the request's summary line
            continue
        reports[r["device"]] = [x["output"] for x in r["results"]]
    assert set(reports) == {"plain-shell", "plain-exec", "gear"}, out.stdout + out.stderr
    return reports


def netmiko_outputs(port, secret=None):
    conn = netmiko.ConnectHandler(device_type="cisco_ios", host="127.0.0.1", port=port,
                                  username="admin", password="admin", secret=secret or "")
    try:
        if secret:
            conn.enable()
        return [conn.send_command(c) for c in COMMANDS]
    finally:
        conn.disconnect()


def test_switchyard_exec_equals_netmiko_send_command(sims):
    d, plain_port, gear_port = sims
    ours = switchyard_outputs(d, plain_port, gear_port)
    theirs = {"plain": netmiko_outputs(plain_port), "gear": netmiko_outputs(gear_port, ENABLE)}
    for device, oracle in (("plain-shell", "plain"), ("plain-exec", "plain"), ("gear", "gear")):
        for command, mine, expected in zip(COMMANDS, ours[device], theirs[oracle]):
            assert mine == expected + "\n", (device, command, mine, expected)
    # The privileged command really ran privileged on the gear.
    assert "hostname gear-001" in ours["gear"][1]

"""`switchyard inventory NAME` in text shows each device's attributes
(issue 20, item 18), against `switchyard demo` (its devices carry
site=demo)."""

import subprocess

from conftest import BIN


def test_inventory_text_shows_attributes(demo, tmp_path):
    password = tmp_path / "admin"
    password.write_text(demo["SWITCHYARD_ADMIN_PASSWORD"] + "\n")

    def cli(*args):
        done = subprocess.run([BIN, *args], env=demo, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    cli("connect", "integrated", "attr-lab", "--db", demo["SWITCHYARD_DB"],
        "--admin-password-file", str(password))
    try:
        lines = cli("inventory", "attr-lab").splitlines()
        header = lines[0].split()
        assert header[-1] == "ATTRIBUTES", lines
        rows = {line.split()[0]: line.split() for line in lines[1:]}
        assert rows["sim-001"][-1] == "site=demo", lines
        assert rows["inproc-1"][-1] == "site=demo", lines
    finally:
        cli("disconnect", "attr-lab")

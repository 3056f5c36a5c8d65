"""Every example in clients/python/examples runs against `switchyard demo`
as its docstring prints it (issue 20 item 15), and the package and the
examples are clean under mypy --strict."""

import subprocess
import sys

import pytest

from conftest import ROOT, run_script

EXAMPLES = ROOT / "clients" / "python" / "examples"


@pytest.mark.parametrize("example, expect", [
    ("quickstart.py", "--- sim-001: SUCCESS"),
    ("standalone.py", "=== inproc-1 (SUCCESS)"),
    ("notebook_exitstack.py", "UTC"),
    ("terminal.py", "sim-001 uptime"),
])
def test_example_runs_against_the_demo(demo, example, expect):
    out = run_script([sys.executable, EXAMPLES / example], demo)
    assert out.returncode == 0, out.stderr
    assert expect in out.stdout, out.stdout


def test_every_example_is_exercised():
    """A new example must be added to a test (here, test_sdk.py or
    test_sdk_aio.py)."""
    covered = {"quickstart.py", "standalone.py", "notebook_exitstack.py", "terminal.py",
               "fastapi_app.py", "fastapi_async.py"}
    assert {p.name for p in EXAMPLES.glob("*.py")} == covered


def test_mypy_strict_on_the_package_and_examples():
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "switchyard", "examples"],
        cwd=ROOT / "clients" / "python", capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Success" in out.stdout


def test_wheel_builds_with_types_and_every_subpackage(tmp_path):
    """pip builds a wheel (in this venv, as on a stock Debian Python) that
    carries py.typed, the stubs' .pyi files and the compat package."""
    import zipfile

    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(ROOT / "clients" / "python")],
        capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stderr
    [wheel] = tmp_path.glob("switchyard-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for want in ("switchyard/py.typed", "switchyard/v1/broker_pb2.pyi",
                 "switchyard/v1/broker_pb2_grpc.pyi", "switchyard/aio.py",
                 "switchyard/compat/radkit/sync.py", "switchyard/__main__.py"):
        assert want in names, f"{want} missing from {wheel.name}"
